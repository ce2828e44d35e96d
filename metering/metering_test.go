package metering_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/chstore/chstoretest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/placement"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

const card = `versions:
  - version: "2026-10"
    effective_from: 2026-10-01
    effective_to: 2026-12-01
    currency: EUR
    prices:
      - {meter: events, unit: 10, price: 0.5}
      - meter: spans
        unit: 100
        tiers:
          - {up_to: 5, price: 1}
          - {price: 0.5}
      - {meter: orders_total, unit: 1, price: 0.01}
    shared:
      - {name: platform, amount: 30, split: usage_share, meter: events}
    tenants:
      acme: {discount_percent: 10}
  - version: "2026-12"
    effective_from: 2026-12-01
    currency: EUR
    prices:
      - {meter: events, unit: 10, price: 1}
`

type fixture struct {
	st    *chstore.Store
	cfg   config.Config
	place *placement.Placement // shared by every Service a test builds
	svc   *metering.Service
}

var oct = time.Date(2026, 10, 5, 12, 0, 0, 0, time.UTC)

func start(t *testing.T) *fixture {
	st := chstoretest.Migrated(t)
	cfg := config.Default()
	cfg.Tenants = []config.Tenant{{ID: "acme", Region: "default"}, {ID: "globex", Region: "default", SLO: config.SLO{Availability: 99}}}
	cfg.Metering.Meters = []config.Meter{
		{Name: "orders_total", Action: "order.placed", Aggregation: "sum", Value: "order.amount"},
		{Name: "customers", Action: "order.*", Aggregation: "unique_count", Value: "customer"},
	}
	rc, err := metering.ParseRateCard([]byte(card), cfg, "card.yaml")
	require.NoError(t, err)
	place := placement.New()
	svc := metering.New(cfg, place, map[string]*chstore.Store{"default": st}, rc, zerolog.Nop())
	svc.Now = func() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }
	return &fixture{st: st, cfg: cfg, place: place, svc: svc}
}

func (f *fixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	require.NoError(t, f.st.Exec(context.Background(), q, args...))
}

// events inserts n order events of tenant at time at, amount each.
func (f *fixture) events(t *testing.T, tenant string, n int, at time.Time, amount int) {
	f.exec(t, fmt.Sprintf(`INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
		SELECT ?, 'orders', if(number %% 5 = 0, 'order.cancelled', 'order.placed'), ? + toIntervalSecond(number), generateUUIDv4(number), 'u', 'o', 1,
		replaceAll(replaceAll(concat('<"order":<"amount":%d>,"customer":"c-', toString(number %% 7), '">'), '<', char(123)), '>', char(125)),
		3650 FROM numbers(?)`, amount), tenant, at, n) // (a literal {"k":…} in the SQL text trips clickhouse-go's parameter binding)
}

// spans inserts n server spans of tenant at at, bad of them errors.
func (f *fixture) spans(t *testing.T, tenant string, n, bad int, at time.Time) {
	f.exec(t, `INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, retention_days)
		SELECT ?, if(number % 2 = 0, 'api', 'web'), 'GET /', ? + toIntervalSecond(number), hex(number), hex(number + 1000000), 'server',
		(number % 100 + 1) * 1000000, if(number < ?, 'error', 'ok'), 3650 FROM numbers(?)`, tenant, at, bad, n)
}

func TestUsageMetersCostAndClosing(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	// Events stored before the meters exist are backfilled.
	f.events(t, "acme", 100, oct, 20)
	require.NoError(t, metering.EnsureMeters(ctx, f.st, f.cfg.Metering.Meters, zerolog.Nop()))
	f.events(t, "acme", 100, oct.Add(24*time.Hour), 20)
	f.events(t, "globex", 300, oct, 5)
	f.events(t, "globex", 50, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), 5) // another period
	f.spans(t, "acme", 1000, 5, oct)
	f.spans(t, "globex", 200, 20, oct)

	p, err := metering.ParsePeriod("2026-10")
	require.NoError(t, err)
	usage, err := f.svc.UsageByTenant(ctx, p.From, p.To)
	require.NoError(t, err)
	require.Equal(t, "200", usage["acme"]["events"].String())
	require.Equal(t, "300", usage["globex"]["events"].String())
	require.Equal(t, "1000", usage["acme"]["spans"].String())
	require.Equal(t, "3200", usage["acme"]["orders_total"].String(), "order.placed is 4 of 5 events, amount 20 each")
	require.Equal(t, "7", usage["acme"]["customers"].String(), "unique customers across the period")
	require.True(t, usage["acme"]["event_bytes"].IsPositive())
	require.True(t, usage["acme"]["stored_bytes"].IsPositive())
	for _, u := range usage {
		for _, m := range []string{"event_bytes", "span_bytes", "stored_bytes", "events", "spans"} {
			require.True(t, u[m].IsInteger(), "%s is a whole number: %s", m, u[m])
		}
	}
	require.Equal(t, "50.5", usage["acme"]["compute_seconds"].String(), "server span time: mean 50.5 ms, exact")

	rep, err := f.svc.Cost(ctx, p)
	require.NoError(t, err)
	require.False(t, rep.Closed)
	require.Equal(t, "2026-10", rep.RateCard)
	byTenant := map[string]metering.TenantCost{}
	for _, tc := range rep.Tenants {
		byTenant[tc.Tenant] = tc
	}
	line := func(tc metering.TenantCost, kind, meter string) string {
		for _, l := range tc.Lines {
			if l.Kind == kind && (meter == "" || l.Meter == meter) {
				return l.Amount.StringFixed(4)
			}
		}
		t.Fatalf("no %s line %s for %s: %+v", kind, meter, tc.Tenant, tc.Lines)
		return ""
	}
	acme, globex := byTenant["acme"], byTenant["globex"]
	require.Equal(t, "10.0000", line(acme, "usage", "events"), "200 events / 10 × 0.5")
	require.Equal(t, "7.5000", line(acme, "usage", "spans"), "10 hundred spans: 5 at 1, 5 at 0.5")
	require.Equal(t, "32.0000", line(acme, "usage", "orders_total"))
	require.Equal(t, "12.0000", line(acme, "shared", ""), "200 of 500 events: 40% of 30")
	require.Equal(t, "18.0000", line(globex, "shared", ""))
	require.Equal(t, "-6.1500", line(acme, "discount", ""), "10% of 61.5")
	// acme: 5 errors in 1,000 (99.5% < 99.9%): 10% credit on the discounted bill.
	require.Equal(t, "-5.5350", line(acme, "sla_credit", ""), "10% of 55.35")
	require.Equal(t, "49.8150", acme.Total.StringFixed(4))
	// globex: 10% errors, availability 90% < 95%: 50% credit.
	require.Equal(t, "-23.5000", line(globex, "sla_credit", ""))
	require.Equal(t, "23.5000", globex.Total.StringFixed(4), "a 50% credit halves the bill")

	// Closing snapshots the report; later data does not change it.
	_, err = f.svc.Close(ctx, metering.Period{Name: "2026-11", From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}, "frank")
	require.ErrorIs(t, err, metering.ErrInvalid, "a period that has not ended cannot be closed")
	// Nothing is closed while a tenant moves to another region (the
	// snapshot would be written in the region it is leaving).
	f.place.Pause("globex", 1)
	_, err = f.svc.Close(ctx, p, "frank")
	require.ErrorIs(t, err, metering.ErrMoving)
	f.place.Set("globex", "", false, 2)
	closed, err := f.svc.Close(ctx, p, "frank")
	require.NoError(t, err)
	require.True(t, closed.Closed)
	_, err = f.svc.Close(ctx, p, "frank")
	require.ErrorIs(t, err, metering.ErrClosed)
	f.events(t, "acme", 1000, oct, 20)
	again, err := f.svc.Cost(ctx, p)
	require.NoError(t, err)
	require.True(t, again.Closed)
	require.True(t, rep.Total.Equal(again.Total), "a closed period's report never changes: %s, then %s", rep.Total, again.Total)

	// Corrections are explicit lines.
	five := decimal.NewFromInt(-5)
	_, err = f.svc.Adjust(ctx, p, "acme", five, "", "frank")
	require.ErrorIs(t, err, metering.ErrInvalid)
	_, err = f.svc.Adjust(ctx, metering.Period{Name: "2026-11"}, "acme", five, "goodwill", "frank")
	require.ErrorIs(t, err, metering.ErrOpen)
	f.place.Pause("acme", 3)
	_, err = f.svc.Adjust(ctx, p, "acme", five, "goodwill after incident 42", "frank")
	require.ErrorIs(t, err, metering.ErrMoving)
	f.place.Set("acme", "", false, 4)
	a, err := f.svc.Adjust(ctx, p, "acme", five, "goodwill after incident 42", "frank")
	require.NoError(t, err)
	again, err = f.svc.Cost(ctx, p)
	require.NoError(t, err)
	require.Equal(t, rep.Total.Sub(decimal.NewFromInt(5)).String(), again.Total.String())
	require.Contains(t, fmt.Sprint(again.Tenants[0].Lines), a.ID)

	// A future period is refused.
	_, err = f.svc.Cost(ctx, metering.Period{Name: "2027-01", From: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)})
	require.ErrorIs(t, err, metering.ErrFuture)

	// The rate card version that priced the closed period may not change.
	rc, err := metering.ParseRateCard([]byte(card), f.cfg, "card.yaml")
	require.NoError(t, err)
	require.NoError(t, rc.Store(ctx, f.st))
	// (the first Store happened after closing here; store, then try a change)
	changed, err := metering.ParseRateCard([]byte(strings.Replace(card, "{meter: events, unit: 10, price: 0.5}", "{meter: events, unit: 10, price: 0.7}", 1)), f.cfg, "card.yaml")
	require.NoError(t, err)
	err = changed.Store(ctx, f.st)
	require.ErrorContains(t, err, "line 2")
	require.ErrorContains(t, err, "closed period 2026-10")
}

func TestSLAAndBurnRates(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	f.spans(t, "acme", 1000, 2, now.Add(-2*time.Hour))
	f.spans(t, "globex", 600, 60, now.Add(-30*time.Minute))
	p, _ := metering.ParsePeriod("2026-11")
	sla, err := f.svc.TenantSLA(ctx, "acme", p.From, p.To)
	require.NoError(t, err)
	require.EqualValues(t, 1000, sla.Total.Valid)
	require.InDelta(t, 99.8, sla.Total.Availability, 1e-9)
	require.False(t, sla.Total.Met, "99.8% is below the default 99.9%")
	require.InDelta(t, 1-2.0/1.0, sla.Total.BudgetRemaining, 1e-9, "a budget of 1 error, 2 spent")
	require.Len(t, sla.Services, 2)
	require.InDelta(t, 50, sla.Total.P50, 3, "durations 1..100 ms")
	require.InDelta(t, 99, sla.Total.P99, 3)
	require.Len(t, sla.Days, 30)
	require.Equal(t, 10.0, sla.Total.CreditPercent)

	burns, err := f.svc.BurnRates(ctx, now)
	require.NoError(t, err)
	get := func(tenant string, w time.Duration) float64 {
		for _, b := range burns {
			if b.Tenant == tenant && b.Window == w {
				return b.Rate
			}
		}
		t.Fatalf("no burn %s %s", tenant, w)
		return 0
	}
	require.InDelta(t, 10.0, get("globex", time.Hour), 1e-9, "10% errors on a 99% objective burn 10× in the last hour")
	require.Zero(t, get("acme", time.Hour), "acme's errors are 2 hours old")
	require.InDelta(t, 2.0, get("acme", 6*time.Hour), 1e-9)
}

func TestRateCardRefusesBadCardsNamingTheLine(t *testing.T) {
	cfg := config.Default()
	cfg.Tenants = []config.Tenant{{ID: "acme", Region: "default"}}
	for _, c := range []struct{ card, want string }{
		{"versions:\n  - {version: a, effective_from: 2026-01-01, currency: EUR}\n  - {version: b, effective_from: 2026-06-01, currency: EUR}\n", "line 3: version \"b\" (from 2026-06-01) overlaps version \"a\" on line 2"},
		{"versions:\n  - version: a\n    effective_from: 2026-01-01\n    currency: EUR\n    prices:\n      - {meter: events, price: -1}\n", "line 6: price -1 is negative"},
		{"versions:\n  - version: a\n    effective_from: 2026-01-01\n    currency: EUR\n    prices:\n      - {meter: nope, price: 1}\n", "line 6: unknown meter \"nope\""},
		{"versions:\n  - version: a\n    effective_from: 2026-01-01\n    currency: EUR\n    tenants:\n      other: {discount_percent: 5}\n", "line 6: unknown tenant \"other\""},
		{"versions:\n  - {version: a, effective_from: 2026-01-01, currency: euro}\n", "line 2: currency"},
		{"versions:\n  - {version: a, effective_from: 2026-01-01, currency: EUR, colour: red}\n", "field colour not found"},
		{"versions:\n  - version: a\n    effective_from: 2026-01-01\n    currency: EUR\n    prices:\n      - meter: events\n        tiers:\n          - {up_to: 10, price: 1}\n          - {up_to: 5, price: 1}\n          - {price: 1}\n", "line 9: up_to must grow"},
	} {
		_, err := metering.ParseRateCard([]byte(c.card), cfg, "card.yaml")
		require.ErrorContains(t, err, c.want, c.card)
	}
}
