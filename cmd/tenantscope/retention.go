package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/retention"
	"github.com/tenantscope/tenantscope/suite"
)

// openRetention reaches a running suite's stores and NATS (for audit
// records and dead letters) the way the other admin commands do.
func openRetention(ctx context.Context, cfg config.Config) (*retention.Service, func(), error) {
	stores, place, closeStores, err := openRegions(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	js, nc, err := adminJetStream(cfg)
	if err != nil {
		closeStores()
		return nil, nil, err
	}
	closeAll := func() {
		closeStores()
		nc.Close()
	}
	b, err := config.LoadSecrets(cfg)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	svc := retention.New(cfg, place, stores, auditlog.JetStreamPublisher(js), js, b.AuditSignerKey, zerolog.Nop())
	svc.EngineAddr = cfg.ClickHouse.EngineListen // where a region on another server reads a moving tenant from
	return svc, closeAll, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runErase counts (--dry-run) or erases a data subject of a tenant.
func runErase(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("erase", stderr)
	tenant := cf.fs.String("tenant", "", "the tenant (required)")
	subject := cf.fs.String("subject", "", "the data subject's identifier (required)")
	dry := cf.fs.Bool("dry-run", false, "count what would be erased, erase nothing")
	by := cf.fs.String("by", "", "who asks (recorded in the request and the certificate; required)")
	cfg, err := cf.parseAndLoad(args, getenv)
	if err != nil {
		return err
	}
	if *by == "" {
		return errors.New("--by is required: erasures are audited")
	}
	svc, closeAll, err := openRetention(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	fmt.Fprintf(stderr, "erase: counting the subject's rows in %s (events, logs, spans, audit records, dead letters)…\n", *tenant)
	t0 := time.Now()
	e, err := svc.Erase(ctx, *tenant, *subject, *dry, *by)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "erase: %s in %s\n", e.Status, time.Since(t0).Round(time.Millisecond))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "request\t%s\nstatus\t%s %s\ndeadline\t%s\n", e.ID, e.Status, e.Detail, e.Deadline.Format(time.RFC3339))
	for k, v := range e.Counts {
		fmt.Fprintf(tw, "rows: %s\t%d\n", k, v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if e.Certificate != "" {
		fmt.Fprintf(stdout, "\nerasure certificate (signed; also in the tenant's audit chain):\n%s", e.Certificate)
	}
	if e.Status == "blocked_by_hold" || e.Status == "failed" {
		return fmt.Errorf("erasure %s: %s", e.Status, e.Detail)
	}
	return nil
}

// runPurge runs a purge now for one tenant or every tenant.
func runPurge(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("purge", stderr)
	tenant := cf.fs.String("tenant", "", "one tenant (default: every tenant)")
	by := cf.fs.String("by", "", "who runs it (audited; required)")
	cfg, err := cf.parseAndLoad(args, getenv)
	if err != nil {
		return err
	}
	if *by == "" {
		return errors.New("--by is required: purges are audited")
	}
	svc, closeAll, err := openRetention(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	rs, err := svc.Purge(ctx, *tenant, "on demand (CLI)", auditlog.Actor{Type: "user", ID: *by})
	for _, r := range rs {
		fmt.Fprintf(stdout, "%s: deleted %v, held %v (policies %v), receipt %s\n", r.Tenant, r.Deleted, r.Held, r.Policies, r.RunID)
	}
	return err
}

const retentionUsage = "retention show|set|hold|lift|residency|move|moves --tenant T [flags]"

// runRetention shows or sets a tenant's policies, holds and residency.
func runRetention(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: tenantscope %s", errUsage, retentionUsage)
	}
	verb := args[0]
	cf := newConfigFlags("retention "+verb, stderr)
	tenant := cf.fs.String("tenant", "", "the tenant (required)")
	signal := cf.fs.String("signal", "", "set: events, logs, spans or audit_records")
	days := cf.fs.Int("days", 0, "set: days to keep")
	kind := cf.fs.String("kind", "subject", "hold: tenant, subject or time_range")
	subject := cf.fs.String("subject", "", "hold: the data subject")
	from := cf.fs.String("from", "", "hold: time range start (RFC 3339)")
	to := cf.fs.String("to", "", "hold: time range end (RFC 3339)")
	id := cf.fs.String("id", "", "lift: the hold")
	region := cf.fs.String("region", "", "move: the region to move the tenant to")
	reason := cf.fs.String("reason", "", "set, hold, lift: why (required)")
	by := cf.fs.String("by", "", "who (audited)")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	svc, closeAll, err := openRetention(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	actor := auditlog.Actor{Type: "user", ID: *by}
	if verb != "show" && verb != "residency" && verb != "moves" && *by == "" {
		return errors.New("--by is required: retention changes are audited")
	}
	parse := func(v string) *time.Time {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return &t
		}
		return nil
	}
	switch verb {
	case "show":
		pols, err := svc.Policies(ctx, *tenant)
		if err != nil {
			return err
		}
		holds, err := svc.Holds(ctx, *tenant)
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]any{"policies": pols, "holds": holds})
	case "set":
		p, err := svc.SetPolicy(ctx, *tenant, *signal, *days, actor, *reason)
		if err != nil {
			return err
		}
		return printJSON(stdout, p)
	case "hold":
		h, err := svc.PlaceHold(ctx, *tenant, *kind, *subject, parse(*from), parse(*to), *reason, actor)
		if err != nil {
			return err
		}
		return printJSON(stdout, h)
	case "lift":
		h, err := svc.LiftHold(ctx, *tenant, *id, *reason, actor)
		if err != nil {
			return err
		}
		return printJSON(stdout, h)
	case "residency":
		r, err := svc.Residency(ctx, *tenant)
		if err != nil {
			return err
		}
		return printJSON(stdout, r)
	case "moves":
		ms, err := svc.Moves(ctx, *tenant)
		if err != nil {
			return err
		}
		return printJSON(stdout, ms)
	case "move":
		return runMove(ctx, svc, *tenant, *region, actor, *reason, stdout, stderr)
	}
	return fmt.Errorf("%w: tenantscope retention show|set|hold|lift|residency|move|moves", errUsage)
}

// runMove moves a tenant to another region, showing each step. The running
// suite notices the pause within a reload of its placement, so the move
// waits that long before it copies.
func runMove(ctx context.Context, svc *retention.Service, tenant, region string, by auditlog.Actor, reason string, stdout, stderr io.Writer) error {
	svc.MoveSettle = suite.MoveSettle
	m, err := svc.BeginMove(ctx, tenant, region, by, reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "move %s: tenant %s from region %s to %s; the tenant is paused (its messages wait in its stream)\n", m.ID, tenant, m.From, m.To)
	t0 := time.Now()
	m, err = svc.RunMove(ctx, m, func(step, table string, done, total int) {
		if total > 0 {
			fmt.Fprintf(stderr, "[%2d/%d] %s %s (%s)\n", min(done+1, total), total, step, table, time.Since(t0).Round(time.Millisecond))
			return
		}
		fmt.Fprintf(stderr, "%s (%s)\n", step, time.Since(t0).Round(time.Millisecond))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "moved in %s: %d tables verified, nothing left in %s\n", time.Since(t0).Round(time.Millisecond), len(m.Tables), m.From)
	return printJSON(stdout, m)
}
