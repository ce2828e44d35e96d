package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tenantscope/tenantscope/config"
)

// runSecrets writes the one set of secrets a distributed deployment shares:
// 'secrets init --out FILE' fills FILE (mode 0600) with what the
// configuration lacks (audit signing keys, the session key, the KEK, PII
// salts, generated passwords and API keys, kept hashed) and writes the
// generated credentials, once, to FILE.credentials. Existing secrets are kept.
func runSecrets(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return fmt.Errorf("%w: tenantscope secrets init --config F --out FILE", errUsage)
	}
	cf := newConfigFlags("secrets init", stderr)
	out := cf.fs.String("out", "", "the secrets file to write (mode 0600); point every process's secrets_file at it")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: secrets init needs --out", errUsage)
	}
	cfg.SecretsFile = *out
	fresh, err := config.EnsureSecrets(&cfg)
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		_, err := fmt.Fprintf(stdout, "%s already holds every secret the configuration needs\n", *out)
		return err
	}
	var b strings.Builder
	for _, s := range fresh {
		fmt.Fprintf(&b, "%-10s %-18s %-26s %s %s\n", s.Kind, s.Name, s.Role, s.Tenant, s.Value)
	}
	creds := *out + ".credentials"
	if err := config.WriteSecretFile(creds, []byte(b.String())); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "secrets in %s (set secrets_file to it in every process); %d generated credentials in %s (0600): hand them out, then delete the file\n",
		*out, len(fresh), creds)
	return err
}
