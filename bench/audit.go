package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/ui"
)

// AuditConfig sizes the audit page benchmark.
type AuditConfig struct {
	LibPath string
	Dir     string
	Records int // across all tenants
	Tenants int
	Queries int // page loads measured
	Days    int // the records span this many days
	// VerifyRecords (default 1,000,000) are chained by the writer across
	// VerifyTenants (default 10) more tenants, then verified.
	VerifyRecords, VerifyTenants int
}

// AuditResult is what the audit page benchmark measured.
type AuditResult struct {
	Records, Tenants, Queries int
	LoadSeconds               float64
	PageP50, PageP95, PageP99 time.Duration // the UI page over HTTP, signed in
	ListP50, ListP95          time.Duration // auditlog.List alone (the query)
	RowsPerPage               float64
	Verify                    VerifyResult
}

// VerifyResult is what the verification part of the audit benchmark
// measured.
type VerifyResult struct {
	Records, Tenants, Checkpoints int
	ChainSeconds                  float64 // the writer chaining and storing them
	OneSeconds                    float64 // auditlog.Verify of one tenant's chain
	AllSeconds                    float64 // every tenant, as 'tenantscope verify' does
}

// RunAudit fills an engine with cfg.Records audit records across
// cfg.Tenants tenants and times the audit trail page (50 rows of one
// tenant, filtered by a one-day time range) as a signed-in compliance
// officer loads it; then it times the verification of audit chains the
// writer chained (runVerify).
func RunAudit(ctx context.Context, cfg AuditConfig, progress io.Writer) (AuditResult, error) {
	if cfg.Records == 0 {
		cfg.Records = 10_000_000
	}
	if cfg.Tenants == 0 {
		cfg.Tenants = 1000
	}
	if cfg.Queries == 0 {
		cfg.Queries = 300
	}
	if cfg.Days == 0 {
		cfg.Days = 60
	}
	if cfg.VerifyRecords == 0 {
		cfg.VerifyRecords = 1_000_000
	}
	if cfg.VerifyTenants == 0 {
		cfg.VerifyTenants = 10
	}
	res := AuditResult{Records: cfg.Records, Tenants: cfg.Tenants, Queries: cfg.Queries}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench audit: "+format+"\n", a...) }
	st, stop, err := migratedEngine(ctx, cfg.Dir, cfg.LibPath, "audit")
	if err != nil {
		return res, err
	}
	defer stop()

	// Each tenant's records are numbered 1..n and spread evenly over the
	// last cfg.Days days, as a writer would have chained them.
	perTenant := cfg.Records / cfg.Tenants
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.AddDate(0, 0, -cfg.Days)
	stepMs := int64(end.Sub(start)/time.Millisecond) / int64(perTenant)
	t0 := time.Now()
	const chunk = 1_000_000
	for off := 0; off < cfg.Records; off += chunk {
		n := min(chunk, cfg.Records-off)
		q := fmt.Sprintf(`INSERT INTO audit_records (tenant_id, seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent,
			action, target_type, target_id, target_name, outcome, reason, source_service, correlation_id, changes, metadata,
			schema_version, prev_hash, hash, retention_days)
		SELECT concat('t-', toString(n %% %[3]d)) AS tenant_id, intDiv(n, %[3]d) + 1 AS seq, generateUUIDv4(n),
			fromUnixTimestamp64Milli(toInt64(%[4]d + seq * %[5]d), 'UTC'),
			'user', concat('user-', toString(cityHash64(n) %% 500)), 'A User', '10.0.0.1', 'Mozilla/5.0',
			['invoice.updated', 'user.signed_in', 'role.changed', 'export.downloaded'][1 + n %% 4], 'invoice',
			concat('inv-', toString(n %% 10000)), 'Invoice', if(n %% 50 = 0, 'failure', 'success'), '', 'billing',
			hex(cityHash64(n)), '{"before":{"amount":1},"after":{"amount":2}}', map('k', 'v'), 1,
			lower(hex(SHA256(toString(n - %[3]d)))), lower(hex(SHA256(toString(n)))), 2555
		FROM (SELECT number + %[1]d AS n FROM numbers(%[2]d))`, off, n, cfg.Tenants, start.UnixMilli(), stepMs)
		if err := st.Exec(ctx, q); err != nil {
			return res, fmt.Errorf("load: %w", err)
		}
		step("loaded %d/%d records (%.0f%%)", off+n, cfg.Records, float64(off+n)*100/float64(cfg.Records))
	}
	if err := st.Exec(ctx, "OPTIMIZE TABLE audit_records FINAL"); err != nil {
		return res, err
	}
	res.LoadSeconds = time.Since(t0).Seconds()
	step("%d records of %d tenants stored and merged in %.1f s", cfg.Records, cfg.Tenants, res.LoadSeconds)

	// The UI, as serve mounts it, with one compliance officer.
	suite := config.Default()
	for i := range cfg.Tenants {
		suite.Tenants = append(suite.Tenants, config.Tenant{ID: fmt.Sprintf("t-%d", i), Region: "default"})
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("bench"), bcrypt.MinCost)
	if err != nil {
		return res, err
	}
	suite.Users = []config.User{{Name: "carol", Role: config.RoleCompliance, PasswordHash: string(hash)}}
	sess, stopSessions, err := sessionStore(ctx)
	if err != nil {
		return res, err
	}
	defer stopSessions()
	pages := ui.New(suite, sess, func(string) (*chstore.Store, error) { return st, nil }, nil, zerolog.Nop())
	mux := http.NewServeMux()
	pages.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client, err := signIn(srv.URL, "carol", "bench")
	if err != nil {
		return res, err
	}

	rng := rand.New(rand.NewPCG(1, 2))
	rowRe := regexp.MustCompile(`data-testid="audit-row"`)
	var page, list []time.Duration
	rows := 0
	for i := range cfg.Queries + 10 {
		tenant := fmt.Sprintf("t-%d", rng.IntN(cfg.Tenants))
		day := start.AddDate(0, 0, rng.IntN(cfg.Days-1))
		from, to := day.Format(time.DateOnly), day.Format(time.DateOnly) // "to" includes the whole day
		u := srv.URL + "/ui/tenants/" + tenant + "/audit?" + url.Values{"from": {from}, "to": {to}, "limit": {"50"}}.Encode()
		t1 := time.Now()
		res1, err := client.Get(u)
		if err != nil {
			return res, err
		}
		body, err := io.ReadAll(res1.Body)
		res1.Body.Close()
		d := time.Since(t1)
		if err != nil || res1.StatusCode != 200 {
			return res, fmt.Errorf("page %s: %d %v", u, res1.StatusCode, err)
		}
		n := len(rowRe.FindAll(body, -1))
		t2 := time.Now()
		f := auditlog.Filter{From: day, To: day.AddDate(0, 0, 1), Desc: true, Limit: 50}
		if _, _, err := auditlog.List(ctx, st, tenant, f); err != nil {
			return res, err
		}
		dl := time.Since(t2)
		if i < 10 {
			continue // warm-up
		}
		page, list, rows = append(page, d), append(list, dl), rows+n
		if (i-9)%100 == 0 {
			step("%d/%d page loads", i-9, cfg.Queries)
		}
	}
	slices.Sort(page)
	slices.Sort(list)
	pct := func(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*p))] }
	res.PageP50, res.PageP95, res.PageP99 = pct(page, .50), pct(page, .95), pct(page, .99)
	res.ListP50, res.ListP95 = pct(list, .50), pct(list, .95)
	res.RowsPerPage = float64(rows) / float64(len(page))
	res.Verify, err = runVerify(ctx, st, cfg, step)
	return res, err
}

// runVerify chains cfg.VerifyRecords records of cfg.VerifyTenants tenants
// (v-0, v-1, …) with the writer, as serve does (batches of 5,000, the
// collector's; a signed checkpoint every 1,000 records), then times
// auditlog.Verify on one tenant's chain and on every tenant's as
// 'tenantscope verify' does.
func runVerify(ctx context.Context, st *chstore.Store, cfg AuditConfig, step func(string, ...any)) (VerifyResult, error) {
	res := VerifyResult{Records: cfg.VerifyRecords, Tenants: cfg.VerifyTenants}
	signer, verifier, err := auditlog.GenerateKey()
	if err != nil {
		return res, err
	}
	perTenant := cfg.VerifyRecords / cfg.VerifyTenants
	res.Records = perTenant * cfg.VerifyTenants
	tenants := make([]string, cfg.VerifyTenants)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("v-%d", i)
	}
	// Two writers, each with its half of the tenants, keep the engine busy
	// while the other hashes.
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	var chained atomic.Int64
	for w := range 2 {
		g.Go(func() error {
			wr, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return st, nil }, signer, 1000)
			if err != nil {
				return err
			}
			for i := w; i < len(tenants); i += 2 {
				for off := 0; off < perTenant; off += 5000 {
					batch := make([]auditlog.Record, min(5000, perTenant-off))
					for j := range batch {
						batch[j] = verifyRecord(tenants[i], off+j)
					}
					if _, err := wr.Append(gctx, tenants[i], batch); err != nil {
						return fmt.Errorf("chain %s: %w", tenants[i], err)
					}
					if n := chained.Add(int64(len(batch))); n%100_000 == 0 {
						step("chained %d/%d records", n, res.Records)
					}
				}
				if err := wr.Checkpoint(gctx, tenants[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.ChainSeconds = time.Since(t0).Seconds()
	step("%d records of %d tenants chained in %.1f s", res.Records, res.Tenants, res.ChainSeconds)

	t1 := time.Now()
	rep, err := auditlog.Verify(ctx, st, tenants[0], 1, verifier)
	if err != nil {
		return res, err
	}
	if !rep.OK() || rep.Records != uint64(perTenant) {
		return res, fmt.Errorf("verify %s: %d records, %v", tenants[0], rep.Records, rep.Problem)
	}
	res.OneSeconds = time.Since(t1).Seconds()
	step("one tenant: %d records verified in %.2f s", perTenant, res.OneSeconds)

	t2 := time.Now()
	err = auditlog.VerifyEach(ctx, len(tenants), func(i int) (*chstore.Store, string) { return st, tenants[i] }, 1, verifier,
		func(_ int, rep auditlog.Report) error {
			if !rep.OK() || rep.Records != uint64(perTenant) {
				return fmt.Errorf("verify %s: %d records, %v", rep.Tenant, rep.Records, rep.Problem)
			}
			res.Checkpoints += rep.Checkpoints
			return nil
		})
	if err != nil {
		return res, err
	}
	res.AllSeconds = time.Since(t2).Seconds()
	step("%d tenants: %d records verified in %.2f s", res.Tenants, res.Records, res.AllSeconds)
	return res, nil
}

// verifyRecord is record n of a tenant's chain in the verification part:
// the fields and sizes of the page benchmark's records.
func verifyRecord(tenant string, n int) auditlog.Record {
	actions := []string{"invoice.updated", "user.signed_in", "role.changed", "export.downloaded"}
	outcome := "success"
	if n%50 == 0 {
		outcome = "failure"
	}
	return auditlog.Record{
		TenantID: tenant, RecordID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("%s/%d", tenant, n))),
		Time:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * 5 * time.Second),
		Actor:  auditlog.Actor{Type: "user", ID: fmt.Sprintf("user-%d", n%500), Name: "A User", IP: "10.0.0.1", UserAgent: "Mozilla/5.0"},
		Action: actions[n%4], Target: auditlog.Target{Type: "invoice", ID: fmt.Sprintf("inv-%d", n%10000), Name: "Invoice"},
		Outcome: outcome, SourceService: "billing", CorrelationID: fmt.Sprintf("%016x", uint64(n)*0x9E3779B97F4A7C15),
		Changes:  json.RawMessage(fmt.Sprintf(`{"before":{"amount":%d},"after":{"amount":%d}}`, n, n+1)),
		Metadata: map[string]string{"k": "v"},
	}
}

// signIn returns a client with a session of user.
func signIn(base, user, password string) (*http.Client, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Jar: jar}
	res, err := c.Get(base + "/ui/login")
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("sign-in form has no CSRF token")
	}
	res, err = c.PostForm(base+"/ui/login", url.Values{"csrf": {string(m[1])}, "username": {user}, "password": {password}})
	if err != nil {
		return nil, err
	}
	body, _ = io.ReadAll(res.Body) //nolint:errcheck // checked through the page below
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), user) {
		return nil, fmt.Errorf("sign-in as %s failed: %d", user, res.StatusCode)
	}
	return c, nil
}

// Table prints the result as a Markdown table.
func (r AuditResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| audit trail page (%d records, %d tenants; 50 rows of one tenant, one day) | value |\n|---|---|\n", r.Records, r.Tenants)
	fmt.Fprintf(w, "| load and merge the records | %.1f s |\n", r.LoadSeconds)
	fmt.Fprintf(w, "| UI page p50 (signed in, over HTTP, %d loads) | %.1f ms |\n", r.Queries, ms(r.PageP50))
	fmt.Fprintf(w, "| UI page p95 (goal < 50 ms) | %.1f ms |\n", ms(r.PageP95))
	fmt.Fprintf(w, "| UI page p99 | %.1f ms |\n", ms(r.PageP99))
	fmt.Fprintf(w, "| the query alone (auditlog.List) p50 / p95 | %.1f / %.1f ms |\n", ms(r.ListP50), ms(r.ListP95))
	fmt.Fprintf(w, "| rows per page (mean) | %.1f |\n", r.RowsPerPage)
	v := r.Verify
	fmt.Fprintf(w, "\n| audit chain verification (%d records chained by the writer, %d tenants) | value |\n|---|---|\n", v.Records, v.Tenants)
	fmt.Fprintf(w, "| chain and store them (writer, batches of 5,000, checkpoint every 1,000) | %.1f s |\n", v.ChainSeconds)
	one := v.Records / max(1, v.Tenants)
	fmt.Fprintf(w, "| verify one tenant (%d records) | %.2f s, %.0f records/s |\n", one, v.OneSeconds, float64(one)/v.OneSeconds)
	fmt.Fprintf(w, "| verify every tenant, as tenantscope verify (%d signed checkpoints) | %.2f s, %.0f records/s |\n", v.Checkpoints, v.AllSeconds, float64(v.Records)/v.AllSeconds)
	fmt.Fprintf(w, "| goal (issue 15) | ≥ 200,000 records/s |\n")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
