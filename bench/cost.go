package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/ui"
)

// CostConfig sizes the cost and SLA benchmark.
type CostConfig struct {
	LibPath string
	Dir     string
	Events  int // in one month, across all tenants
	Spans   int // server spans in the same month
	Tenants int
	Runs    int // cost reports timed
	Loads   int // SLA page loads timed
}

// CostResult is what the benchmark measured.
type CostResult struct {
	Events, Spans, Tenants   int
	LoadSeconds              float64
	RollupRows               uint64
	CostP50, CostMax         time.Duration
	UsagePart, SLAPart       time.Duration // of a report: the usage and the SLA queries
	CostUnmerged             time.Duration // the first report, before the rollups merged
	DailyRows                uint64
	Total                    float64
	SLAPageP50, SLAPageP95   time.Duration
	SLAQueryP50, SLAQueryP95 time.Duration
}

const benchCard = `versions:
  - version: bench
    effective_from: 2026-01-01
    currency: EUR
    prices:
      - {meter: events, unit: 1000, price: 0.05}
      - meter: spans
        unit: 1000
        tiers:
          - {up_to: 5, price: 0.02}
          - {price: 0.01}
      - {meter: stored_bytes, unit: 1073741824, price: 0.1}
      - {meter: order_volume, unit: 1, price: 0.001}
      - {meter: customers, unit: 1, price: 0.01}
    shared:
      - {name: platform, amount: 10000, split: usage_share, meter: events}
      - {name: tooling, amount: 1000, split: evenly}
`

// RunCost fills an engine with a month of cfg.Events events and cfg.Spans
// server spans of cfg.Tenants tenants (the rollups and two user-defined
// meters filled by their views as rows arrive), then times the month's cost
// report for every tenant, and one tenant's SLA page signed in over HTTP.
func RunCost(ctx context.Context, cfg CostConfig, progress io.Writer) (CostResult, error) {
	if cfg.Events == 0 {
		cfg.Events = 100_000_000
	}
	if cfg.Spans == 0 {
		cfg.Spans = 10_000_000
	}
	if cfg.Tenants == 0 {
		cfg.Tenants = 1000
	}
	if cfg.Runs == 0 {
		cfg.Runs = 5
	}
	if cfg.Loads == 0 {
		cfg.Loads = 100
	}
	res := CostResult{Events: cfg.Events, Spans: cfg.Spans, Tenants: cfg.Tenants}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench cost: "+format+"\n", a...) }
	st, stop, err := migratedEngine(ctx, cfg.Dir, cfg.LibPath, "cost")
	if err != nil {
		return res, err
	}
	defer stop()
	suite := config.Default()
	for i := range cfg.Tenants {
		suite.Tenants = append(suite.Tenants, config.Tenant{ID: fmt.Sprintf("t-%d", i), Region: "default"})
	}
	suite.Metering.Meters = []config.Meter{
		{Name: "order_volume", Action: "order.placed", Aggregation: "sum", Value: "amount"},
		{Name: "customers", Action: "order.*", Aggregation: "unique_count", Value: "customer"},
	}
	card, err := metering.ParseRateCard([]byte(benchCard), suite, "bench")
	if err != nil {
		return res, err
	}
	if err := metering.Setup(ctx, st, suite, card, zerolog.Nop()); err != nil {
		return res, err
	}

	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0) // last month: complete
	secs := int64(month.AddDate(0, 1, 0).Sub(month) / time.Second)
	t0 := time.Now()
	const chunk = 5_000_000
	for off := 0; off < cfg.Events; off += chunk {
		n := min(chunk, cfg.Events-off)
		// The payload's braces come from char(): a literal {"k":…} in the SQL
		// text trips clickhouse-go's parameter binding.
		q := fmt.Sprintf(`INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
			SELECT concat('t-', toString(n %% %[3]d)), ['orders', 'billing', 'auth', 'search'][1 + intDiv(n, %[3]d) %% 4],
				['order.placed', 'order.placed', 'order.cancelled', 'invoice.paid', 'user.signed_in'][1 + n %% 5],
				fromUnixTimestamp64Milli(toInt64(%[4]d + (cityHash64(n) %% %[5]d) * 1000), 'UTC'), generateUUIDv4(n),
				concat('user-', toString(n %% 997)), concat('order-', toString(n)), 1,
				concat(char(123), '"amount":', toString(n %% 500), ',"customer":"c-', toString(n %% 5000), '"', char(125)), 400
			FROM (SELECT number + %[1]d AS n FROM numbers(%[2]d))`, off, n, cfg.Tenants, month.UnixMilli(), secs)
		if err := st.Exec(ctx, q); err != nil {
			return res, fmt.Errorf("load events: %w", err)
		}
		step("loaded %d/%d events (%.0f%%)", off+n, cfg.Events, float64(off+n)*100/float64(cfg.Events))
	}
	for off := 0; off < cfg.Spans; off += chunk {
		n := min(chunk, cfg.Spans-off)
		q := fmt.Sprintf(`INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, retention_days)
			SELECT concat('t-', toString(n %% %[3]d)), ['api', 'web', 'worker'][1 + intDiv(n, %[3]d) %% 3], 'GET /x',
				fromUnixTimestamp64Milli(toInt64(%[4]d + (cityHash64(n, 1) %% %[5]d) * 1000), 'UTC'), hex(n), hex(n),
				'server', 1000000 + cityHash64(n, 2) %% 300000000, if(cityHash64(n, 3) %% 1000 < 3, 'error', 'ok'), 400
			FROM (SELECT number + %[1]d AS n FROM numbers(%[2]d))`, off, n, cfg.Tenants, month.UnixMilli(), secs)
		if err := st.Exec(ctx, q); err != nil {
			return res, fmt.Errorf("load spans: %w", err)
		}
		step("loaded %d/%d spans (%.0f%%)", off+n, cfg.Spans, float64(off+n)*100/float64(cfg.Spans))
	}
	res.LoadSeconds = time.Since(t0).Seconds()
	if err := st.QueryRow(ctx, []any{&res.RollupRows}, "SELECT count() FROM usage_hourly"); err != nil {
		return res, err
	}
	step("%d events and %d spans of %d tenants stored in %.0f s; usage_hourly holds %d rows", cfg.Events, cfg.Spans, cfg.Tenants, res.LoadSeconds, res.RollupRows)

	svc := metering.New(suite, placement.New(), map[string]*chstore.Store{"default": st}, card, zerolog.Nop())
	p := metering.Period{Name: month.Format("2006-01"), From: month, To: month.AddDate(0, 1, 0)}
	// Right after the load the rollups hold one partial row per insert block
	// and group; background merges fold them over the month. Time one report
	// as loaded, then merge them as a month of background merges would.
	t1 := time.Now()
	if _, err := svc.Cost(ctx, p); err != nil {
		return res, err
	}
	res.CostUnmerged = time.Since(t1)
	for _, table := range []string{"usage_hourly", "usage_daily", "meter_hourly", "meter_daily", "sla_minutely"} {
		if err := st.Exec(ctx, "OPTIMIZE TABLE "+table+" FINAL"); err != nil {
			return res, err
		}
	}
	if err := st.QueryRow(ctx, []any{&res.DailyRows}, "SELECT count() FROM usage_daily"); err != nil {
		return res, err
	}
	var costs []time.Duration
	for i := range cfg.Runs + 1 {
		t1 := time.Now()
		rep, err := svc.Cost(ctx, p)
		if err != nil {
			return res, err
		}
		if len(rep.Tenants) != cfg.Tenants {
			return res, fmt.Errorf("cost report has %d tenants, want %d", len(rep.Tenants), cfg.Tenants)
		}
		if i > 0 { // the first run warms the caches
			costs = append(costs, time.Since(t1))
		}
		res.Total = rep.Total.InexactFloat64()
		step("cost report %d/%d: %d tenants, total %.2f %s in %s", i, cfg.Runs, len(rep.Tenants), rep.Total, rep.Currency, time.Since(t1).Round(time.Millisecond))
	}
	slices.Sort(costs)
	res.CostP50, res.CostMax = costs[len(costs)/2], costs[len(costs)-1]
	t1 = time.Now()
	if _, err := svc.UsageByTenant(ctx, p.From, p.To); err != nil {
		return res, err
	}
	res.UsagePart = time.Since(t1)
	t1 = time.Now()
	if _, err := svc.SLAByTenant(ctx, p.From, p.To); err != nil {
		return res, err
	}
	res.SLAPart = time.Since(t1)

	hash, err := bcrypt.GenerateFromPassword([]byte("bench"), bcrypt.MinCost)
	if err != nil {
		return res, err
	}
	suite.Users = []config.User{{Name: "sam", Role: config.RoleSRE, PasswordHash: string(hash)}}
	sess, stopSessions, err := sessionStore(ctx)
	if err != nil {
		return res, err
	}
	defer stopSessions()
	pages := ui.New(suite, sess, func(string) (*chstore.Store, error) { return st, nil }, nil, zerolog.Nop())
	pages.Metering = svc
	mux := http.NewServeMux()
	pages.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client, err := signIn(srv.URL, "sam", "bench")
	if err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var page, query []time.Duration
	for i := range cfg.Loads + 5 {
		tenant := fmt.Sprintf("t-%d", rng.IntN(cfg.Tenants))
		t1 := time.Now()
		r, err := client.Get(srv.URL + "/ui/tenants/" + tenant + "/sla?period=" + p.Name)
		if err != nil {
			return res, err
		}
		_, _ = io.Copy(io.Discard, r.Body) //nolint:errcheck // timing only
		r.Body.Close()
		d := time.Since(t1)
		if r.StatusCode != 200 {
			return res, fmt.Errorf("SLA page of %s: %d", tenant, r.StatusCode)
		}
		t2 := time.Now()
		if _, err := svc.TenantSLA(ctx, tenant, p.From, p.To); err != nil {
			return res, err
		}
		if i >= 5 {
			page, query = append(page, d), append(query, time.Since(t2))
		}
	}
	slices.Sort(page)
	slices.Sort(query)
	pct := func(s []time.Duration, q float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*q))] }
	res.SLAPageP50, res.SLAPageP95 = pct(page, .5), pct(page, .95)
	res.SLAQueryP50, res.SLAQueryP95 = pct(query, .5), pct(query, .95)
	return res, nil
}

// Table prints the result as a Markdown table.
func (r CostResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| cost and SLA (%d events, %d server spans, %d tenants, one month) | value |\n|---|---|\n", r.Events, r.Spans, r.Tenants)
	fmt.Fprintf(w, "| load (views fill the rollups and meters as rows arrive) | %.0f s |\n", r.LoadSeconds)
	fmt.Fprintf(w, "| usage_hourly rows as loaded; usage_daily rows merged | %d; %d |\n", r.RollupRows, r.DailyRows)
	fmt.Fprintf(w, "| monthly cost report right after the load (rollups not merged yet) | %.0f ms |\n", ms(r.CostUnmerged))
	fmt.Fprintf(w, "| monthly cost report, all tenants, rollups merged, p50 (goal < 1 s) | %.0f ms |\n", ms(r.CostP50))
	fmt.Fprintf(w, "| monthly cost report, slowest run | %.0f ms |\n", ms(r.CostMax))
	fmt.Fprintf(w, "| of which: usage and meters / SLA for credits | %.0f / %.0f ms |\n", ms(r.UsagePart), ms(r.SLAPart))
	fmt.Fprintf(w, "| one tenant's SLA page, signed in over HTTP, p50 / p95 (goal < 200 ms) | %.1f / %.1f ms |\n", ms(r.SLAPageP50), ms(r.SLAPageP95))
	fmt.Fprintf(w, "| the SLA queries alone, p50 / p95 | %.1f / %.1f ms |\n", ms(r.SLAQueryP50), ms(r.SLAQueryP95))
}
