package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/export"
)

// runExport writes a tenant's export bundle and records the export in the
// tenant's audit chain.
func runExport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "audit" {
		return runExportAudit(ctx, args[1:], getenv, stdout, stderr)
	}
	cf := newConfigFlags("export", stderr)
	tenant := cf.fs.String("tenant", "", "the tenant to export (required)")
	out := cf.fs.String("out", "", "bundle file (default <tenant>-<date>.tar.gz)")
	cfg, err := cf.parseAndLoad(args, getenv)
	if err != nil {
		return err
	}
	b, err := config.LoadSecrets(cfg)
	if err != nil {
		return err
	}
	if b.AuditSignerKey == "" {
		return errors.New("export: no audit signer key in <data>/bootstrap.json (run where serve keeps its data)")
	}
	st, err := openTenantRegion(ctx, cfg, *tenant)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer st.Close()
	if *out == "" {
		*out = fmt.Sprintf("%s-%s.tar.gz", *tenant, time.Now().UTC().Format("20060102-150405"))
	}
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	m, err := export.Write(ctx, st, *tenant, b.AuditSignerKey, b.AuditVerifierKey, f, stderr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(*out) //nolint:errcheck // best effort on failure
		return err
	}
	if err := auditExport(cfg, *tenant, *out, m); err != nil {
		fmt.Fprintf(stderr, "warning: the export was written but could not be audited: %v\n", err)
	}
	_, err = fmt.Fprintf(stdout, "wrote %s; verify it with: tenantscope verify-export %s --verifier-key '%s'\n", *out, *out, b.AuditVerifierKey)
	return err
}

// auditExport records the export in the tenant's chain through NATS.
func auditExport(cfg config.Config, tenant, file string, m export.Manifest) error {
	js, nc, err := adminJetStream(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	meta := map[string]string{"file": file}
	for _, f := range m.Files {
		meta[f.Name] = fmt.Sprint(f.Rows)
	}
	body, err := jsonMarshal(auditlog.Record{
		TenantID: tenant, Time: time.Now().UTC(), Actor: auditlog.Actor{Type: "operator", ID: "tenantscope-cli"},
		Action: "export.created", Target: auditlog.Target{Type: "tenant", ID: tenant}, Outcome: "success",
		SourceService: "tenantscope", Metadata: meta,
	})
	if err != nil {
		return err
	}
	msg := nats.NewMsg("tenant." + tenant + ".tenantscope._audit")
	msg.Header.Set("Tenant-Id", tenant)
	msg.Data = body
	_, err = js.PublishMsg(context.Background(), msg)
	return err
}

// runVerifyExport checks a bundle offline.
func runVerifyExport(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("verify-export", stderr)
	key := cf.fs.String("verifier-key", getenv("TENANTSCOPE_AUDIT_VERIFIER_KEY"), "the verifier key published for your tenant")
	pos, err := parseInterleaved(cf.fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *key == "" {
		return fmt.Errorf("%w: tenantscope verify-export BUNDLE --verifier-key KEY", errUsage)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := export.VerifyBundle(f, *key)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "bundle of tenant %s created %s verifies: %d files match the signed manifest; audit chain of %d records and %d signed checkpoints verifies\n",
		sum.Manifest.Tenant, sum.Manifest.CreatedAt.Format(time.RFC3339), len(sum.Manifest.Files), sum.Audit.Records, sum.Audit.Checkpoints)
	return err
}

// runExportAudit streams a tenant's filtered audit trail as CSV or JSON lines.
func runExportAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("export audit", stderr)
	tenant := cf.fs.String("tenant", "", "the tenant (required)")
	format := cf.fs.String("format", "csv", "csv, jsonl or parquet")
	out := cf.fs.String("out", "", "file (default: standard output)")
	var filters []string
	for _, k := range []string{"actor", "action", "target", "outcome", "from", "to", "q", "fields", "sort"} {
		filters = append(filters, k)
	}
	vals := map[string]*string{}
	for _, k := range filters {
		vals[k] = cf.fs.String(k, "", "filter: "+k)
	}
	cfg, err := cf.parseAndLoad(args, getenv)
	if err != nil {
		return err
	}
	q := map[string][]string{}
	for k, v := range vals {
		if *v != "" {
			q[k] = []string{*v}
		}
	}
	f, err := auditlog.ParseFilter(q)
	if err != nil {
		return err
	}
	st, err := openTenantRegion(ctx, cfg, *tenant)
	if err != nil {
		return fmt.Errorf("export audit: %w", err)
	}
	defer st.Close()
	var w io.Writer = stdout
	if *out != "" {
		file, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer file.Close()
		w = file
	}
	n, err := auditlog.WriteTrailProgress(ctx, st, *tenant, f, *format, w, func(n int) {
		fmt.Fprintf(stderr, "\rexported %d audit records", n)
	})
	fmt.Fprintf(stderr, "\rexported %d audit records of %s\n", n, *tenant)
	return err
}
