package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
)

const natsUsage = "tenantscope nats setup --dir DIR | nats creds --tenant T [--dir DIR] [--name N] --out FILE"

// runNats writes NATS credentials: 'setup' creates a deployment's operator,
// accounts and the servers' resolver configuration (decentralized auth for a
// cluster); 'creds' writes a tenant service's credentials file: a user JWT
// signed by the tenant's account with --dir, or the tenant's nkey seed on the
// embedded server.
func runNats(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "setup" && args[0] != "creds") {
		return fmt.Errorf("%w: %s", errUsage, natsUsage)
	}
	cf := newConfigFlags("nats "+args[0], stderr)
	dir := cf.fs.String("dir", "", "directory of the deployment's NATS keys (operator mode)")
	tenant := cf.fs.String("tenant", "", "tenant whose service credentials to write (creds)")
	name := cf.fs.String("name", "", "name of the service user (creds; default <tenant>-svc)")
	out := cf.fs.String("out", "", "file to write the credentials to, mode 0600 (creds)")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	switch args[0] {
	case "setup":
		if *dir == "" {
			return fmt.Errorf("%w: nats setup needs --dir", errUsage)
		}
		if _, err := natsbus.SetupAuth(*dir, cfg); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "NATS operator, system, suite and %d tenant accounts in %s\n"+
			"  servers:  include %s in nats-server.conf (public JWTs, MEMORY resolver)\n"+
			"  suite:    nats.creds_file: %s\n"+
			"  tenants:  tenantscope nats creds --dir %s --tenant <id> --out <file>\n"+
			"Keep %s like any secret: its seeds sign every account.\n",
			len(cfg.Tenants), *dir, filepath.Join(*dir, "resolver.conf"), filepath.Join(*dir, "suite.creds"), *dir, *dir)
		return err
	}
	if *tenant == "" || *out == "" {
		return fmt.Errorf("%w: nats creds needs --tenant and --out", errUsage)
	}
	if _, ok := cfg.RegionOf(*tenant); !ok || *tenant == config.PlatformTenant {
		return fmt.Errorf("nats creds: unknown tenant %q", *tenant)
	}
	if *name == "" {
		*name = *tenant + "-svc"
	}
	var creds []byte
	if *dir != "" {
		auth, err := natsbus.LoadAuth(*dir)
		if err != nil {
			return err
		}
		if creds, err = auth.TenantCreds(*tenant, *name); err != nil {
			return err
		}
	} else {
		if !cfg.EmbeddedNATS() {
			return errors.New("nats creds: with --nats-url, pass --dir (the keys 'nats setup' wrote)")
		}
		b, err := config.LoadSecrets(cfg)
		if err != nil {
			return err
		}
		seed, ok := b.NATSNkeySeeds[*tenant]
		if !ok {
			return fmt.Errorf("nats creds: no nkey for %s in %s yet: start 'tenantscope serve' once", *tenant, config.SecretsPath(cfg))
		}
		creds = []byte("-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n")
	}
	if err := config.WriteSecretFile(*out, creds); err != nil {
		return fmt.Errorf("nats creds: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "credentials of %s's service user %s written to %s (0600); pass them to the SDK (--creds)\n", *tenant, *name, *out)
	return err
}
