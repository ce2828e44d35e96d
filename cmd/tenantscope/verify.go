package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// runVerify recomputes audit chains and checkpoints and names the first bad
// record of each tenant that does not verify.
func runVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("verify", stderr)
	tenant := cf.fs.String("tenant", "", "only this tenant (default: every configured tenant)")
	from := cf.fs.Uint64("from", 1, "check the chain from this sequence number")
	key := cf.fs.String("verifier-key", getenv("TENANTSCOPE_AUDIT_VERIFIER_KEY"), "checkpoint verifier key (default: <data>/bootstrap.json)")
	cfg, err := cf.parseAndLoad(args, getenv)
	if err != nil {
		return err
	}
	if *key == "" {
		b, err := config.LoadSecrets(cfg)
		if err != nil {
			return err
		}
		*key = b.AuditVerifierKey
	}
	if *key == "" {
		return errors.New("verify: no checkpoint verifier key: pass --verifier-key or run where <data>/bootstrap.json is")
	}
	stores, place, closeAll, err := openRegions(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	var tenants []config.Tenant
	for _, t := range cfg.ChainTenants() {
		if *tenant == "" || t.ID == *tenant {
			tenants = append(tenants, t)
		}
	}
	// A few chains at a time (auditlog.VerifyEach), reported in order.
	failed := 0
	err = auditlog.VerifyEach(ctx, len(tenants), func(i int) (*chstore.Store, string) {
		r, _ := place.RegionOf(cfg, tenants[i].ID)
		return stores[r.Name], tenants[i].ID
	}, *from, *key, func(i int, rep auditlog.Report) error {
		if rep.OK() {
			fmt.Fprintf(stdout, "%-12s ok: %d records chained, %d signed checkpoints (the last covers records 1..%d)\n", tenants[i].ID, rep.Records, rep.Checkpoints, rep.Signed)
			return nil
		}
		failed++
		fmt.Fprintf(stdout, "%-12s FAILED at %s\n", tenants[i].ID, rep.Problem)
		return nil
	})
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d audit chains do not verify", failed)
	}
	return nil
}
