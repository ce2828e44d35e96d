package ui_test

import (
	"context"
	"io"
	"net/url"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/placement"
)

const rateCard = `versions:
  - version: v1
    effective_from: 2026-01-01
    currency: EUR
    prices:
      - {meter: events, unit: 1, price: 0.5}
`

// withMetering gives the fixture's UI cost and SLA pages over some usage
// this month: acme 40 events and 100 server spans (2 failing), globex 10
// events.
func withMetering(t *testing.T, f *fixture) string {
	rc, err := metering.ParseRateCard([]byte(rateCard), f.cfg, "card")
	require.NoError(t, err)
	f.ui.Metering = metering.New(f.cfg, placement.New(), map[string]*chstore.Store{"default": f.st}, rc, zerolog.Nop())
	now := time.Now().UTC()
	day := time.Date(now.Year(), now.Month(), 1, 10, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for tenant, n := range map[string]int{"acme": 40, "globex": 10} {
		require.NoError(t, f.st.Exec(ctx, `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
			SELECT ?, 'orders', 'placed', ?, generateUUIDv4(number), 'u', 'e', 1, '', 3650 FROM numbers(?)`, tenant, day, n))
	}
	require.NoError(t, f.st.Exec(ctx, `INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, retention_days)
		SELECT 'acme', 'api', 'GET /', ?, hex(number), hex(number), 'server', 1000000 * (number + 1), if(number < 2, 'error', 'ok'), 3650 FROM numbers(100)`, day))
	return now.Format("2006-01")
}

func TestFinanceAndSLAPages(t *testing.T) {
	f := start(t)
	period := withMetering(t, f)

	c, _, home := signIn(t, f, "frank", "pw-frank")
	require.Equal(t, 1, home.Find(`[data-testid="main-nav"] a[href="/ui/finance"]`).Length())
	code, doc := page(t, c, "GET", f.url+"/ui/finance?period="+period, nil)
	require.Equal(t, 200, code)
	rows := doc.Find(`[data-testid="cost-row"]`)
	require.Equal(t, 2, rows.Length())
	require.Equal(t, "acme", rows.First().Find(`[data-testid="cost-tenant"]`).Text(), "sorted by total, largest first")
	require.Equal(t, "15.00", rows.First().Find(`[data-testid="cost-total"]`).Text(), "40 × 0.5 less a 25% SLA credit (98% < 99%)")
	require.Equal(t, "20.00", doc.Find(`[data-testid="cost-grand-total"]`).Text())
	_, doc = page(t, c, "GET", f.url+"/ui/finance?sort=tenant&period="+period, nil)
	require.Equal(t, "acme", doc.Find(`[data-testid="cost-tenant"]`).First().Text())
	require.Equal(t, 1, doc.Find(`[data-testid="close-form"]`).Length(), "finance may close")

	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/cost?period="+period, nil)
	require.Equal(t, 200, code)
	require.Equal(t, "15.00", doc.Find(`[data-testid="tenant-total"]`).Text())
	bars := doc.Find(`svg[data-testid="chart"] rect[data-testid="bar"]`)
	require.Equal(t, time.Date(time.Now().Year(), time.Now().Month()+1, 0, 0, 0, 0, 0, time.UTC).Day(), bars.Length(), "a bar per day of the month")
	var tall int
	bars.Each(func(_ int, b *goquery.Selection) {
		if h, _ := b.Attr("height"); h != "0.0" {
			tall++
		}
	})
	require.Equal(t, 1, tall, "all of the cost is on the 1st")

	res, err := c.Get(f.url + "/ui/tenants/acme/cost/download/csv?period=" + period)
	require.NoError(t, err)
	csv, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	require.Contains(t, string(csv), ",acme,usage,events,40,1,")
	require.NotContains(t, string(csv), "globex")

	// SLA: frank and sam see all; alice her own; victor his own only.
	cs, _, _ := signIn(t, f, "sam", "pw-sam")
	code, doc = page(t, cs, "GET", f.url+"/ui/sla?period="+period, nil)
	require.Equal(t, 200, code)
	require.Equal(t, 2, doc.Find(`[data-testid="sla-row"]`).Length())
	code, doc = page(t, cs, "GET", f.url+"/ui/tenants/acme/sla?period="+period, nil)
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="sla-summary"]`).Text(), "98.000%")
	require.Contains(t, doc.Find(`[data-testid="sla-summary"]`).Text(), "objective missed")
	require.Equal(t, 1, doc.Find(`svg[data-testid="chart"]`).Length())
	code, _ = page(t, cs, "GET", f.url+"/ui/finance?period="+period, nil)
	require.Equal(t, 403, code, "sre reads no costs")

	ca, _, home := signIn(t, f, "alice", "pw-alice")
	require.Equal(t, 1, home.Find(`[data-testid="main-nav"] a[href="/ui/tenants/acme/cost"]`).Length())
	for path, want := range map[string]int{
		"/ui/finance": 403, "/ui/sla": 403, "/ui/tenants/acme/cost": 200, "/ui/tenants/globex/cost": 403,
		"/ui/tenants/acme/sla": 200, "/ui/tenants/globex/sla": 403, "/ui/tenants/globex/cost/download/csv": 403,
	} {
		code, _ := page(t, ca, "GET", f.url+path+"?period="+period, nil)
		require.Equal(t, want, code, "alice %s", path)
	}
	cv, _, _ := signIn(t, f, "victor", "pw-victor")
	for path, want := range map[string]int{"/ui/tenants/acme/cost": 403, "/ui/tenants/acme/sla": 200, "/ui/tenants/globex/sla": 403, "/ui/finance/download/csv": 403} {
		code, _ := page(t, cv, "GET", f.url+path+"?period="+period, nil)
		require.Equal(t, want, code, "victor %s", path)
	}
	cc, _, _ := signIn(t, f, "carol", "pw-carol")
	code, _ = page(t, cc, "GET", f.url+"/ui/finance?period="+period, nil)
	require.Equal(t, 403, code, "compliance reads no costs")

	// Bad periods.
	for _, p := range []string{"2999-01", "nope"} {
		code, _ := page(t, c, "GET", f.url+"/ui/finance?period="+url.QueryEscape(p), nil)
		require.Equal(t, 400, code, p)
	}
	// Closing needs the session's CSRF token; the month has not ended.
	code, _ = page(t, c, "POST", f.url+"/ui/finance/close", url.Values{"period": {period}})
	require.Equal(t, 403, code)
}
