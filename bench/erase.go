package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// EraseConfig sizes the erasure benchmark.
type EraseConfig struct {
	LibPath string
	Dir     string
	Rows    int // events, logs and spans of the tenant (half, a quarter, a quarter)
	Subject int // rows of the subject among them
}

// EraseResult is what it measured.
type EraseResult struct {
	Rows, SubjectRows int
	LoadSeconds       float64
	DryRun, Erase     time.Duration
	Deleted           map[string]uint64
	Verified          bool
}

// RunErase stores cfg.Rows rows of one tenant, cfg.Subject of them naming
// one data subject spread over the whole time range, and times the erasure
// of that subject: a dry run, then the erasure (deletes, verification that
// nothing is left, the signed certificate).
func RunErase(ctx context.Context, cfg EraseConfig, progress io.Writer) (EraseResult, error) {
	if cfg.Rows == 0 {
		cfg.Rows = 10_000_000
	}
	if cfg.Subject == 0 {
		cfg.Subject = 1000
	}
	res := EraseResult{Rows: cfg.Rows, SubjectRows: cfg.Subject}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench erase: "+format+"\n", a...) }
	st, stop, err := migratedEngine(ctx, cfg.Dir, cfg.LibPath, "erase")
	if err != nil {
		return res, err
	}
	defer stop()
	suite := config.Default()
	suite.Tenants = []config.Tenant{{ID: "acme", Region: "default"}}
	every := cfg.Rows / cfg.Subject // one row in every this many names the subject
	t0 := time.Now()
	for _, q := range []struct{ name, sql string }{
		{"events", `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
			SELECT 'acme', 'crm', 'updated', now64(3) - toIntervalSecond(number %% 5000000), generateUUIDv4(number),
				if(number %% %[1]d = 0, 'subject-42', concat('user-', toString(number %% 100000))), 'e', 1, 'payload', 90 FROM numbers(%[2]d)`},
		{"logs", `INSERT INTO logs (tenant_id, service, time, log_id, severity_text, severity_number, body, attributes, retention_days)
			SELECT 'acme', 'crm', now64(9) - toIntervalSecond(number %% 2000000), generateUUIDv4(number), 'INFO', 9, 'a log line',
				map('user_id', if(number %% %[1]d = 1, 'subject-42', concat('user-', toString(number %% 100000)))), 30 FROM numbers(%[3]d)`},
		{"spans", `INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, attributes, retention_days)
			SELECT 'acme', 'crm', 'GET /', now64(9) - toIntervalSecond(number %% 1000000), hex(number), hex(number + 1), 'server', 1000, 'ok',
				map('user_id', if(number %% %[1]d = 2, 'subject-42', concat('user-', toString(number %% 100000)))), 14 FROM numbers(%[3]d)`},
	} {
		n := cfg.Rows / 4
		if q.name == "events" {
			n = cfg.Rows / 2
		}
		if err := st.Exec(ctx, fmt.Sprintf(q.sql, every, n, n)); err != nil {
			return res, fmt.Errorf("load %s: %w", q.name, err)
		}
		step("loaded %d %s", n, q.name)
	}
	res.LoadSeconds = time.Since(t0).Seconds()
	skey, _, err := auditlog.GenerateKey()
	if err != nil {
		return res, err
	}
	svc := retention.New(suite, placement.New(), map[string]*chstore.Store{"default": st}, nil, nil, skey, zerolog.Nop())
	svc.InsertMargin = 0 // nothing inserts meanwhile: time the erasure, not the wait for inserts in flight
	t1 := time.Now()
	dry, err := svc.Erase(ctx, "acme", "subject-42", true, "bench")
	if err != nil {
		return res, err
	}
	res.DryRun = time.Since(t1)
	step("dry run: %v in %s", dry.Counts, res.DryRun.Round(time.Millisecond))
	t2 := time.Now()
	e, err := svc.Erase(ctx, "acme", "subject-42", false, "bench")
	if err != nil {
		return res, err
	}
	res.Erase = time.Since(t2)
	res.Deleted = e.Counts
	res.Verified = e.Status == "completed"
	step("erased: %s %v in %s", e.Status, e.Counts, res.Erase.Round(time.Millisecond))
	return res, nil
}

// Table prints the result as a Markdown table.
func (r EraseResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| erasure of one subject (%d rows of one tenant, %d of them the subject's) | value |\n|---|---|\n", r.Rows, r.SubjectRows)
	fmt.Fprintf(w, "| load | %.0f s |\n", r.LoadSeconds)
	fmt.Fprintf(w, "| dry run (counts per table, holds, dead letters) | %.0f ms |\n", ms(r.DryRun))
	fmt.Fprintf(w, "| erasure: deletes, verification, certificate (goal < 30 s) | %.1f s |\n", r.Erase.Seconds())
	fmt.Fprintf(w, "| rows erased: events / logs / spans | %d / %d / %d |\n", r.Deleted["events"], r.Deleted["logs"], r.Deleted["spans"])
	fmt.Fprintf(w, "| zero rows remain (verified) | %v |\n", r.Verified)
}
