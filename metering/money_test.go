package metering_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"regexp"
	"testing"

	"github.com/rs/zerolog"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/metering"
)

// A card with the prices that showed float noise: stored bytes per GiB at
// 0.1, and a sum meter over amounts of 0.1.
const noisyCard = `versions:
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
      - {meter: stored_bytes, unit: 1073741824, price: 0.1}
    shared:
      - {name: platform, amount: 30, split: usage_share, meter: events}
    tenants:
      acme: {discount_percent: 10}
`

// The hash of noisyCard's version as releases with float64 prices stored
// it: a stored version must keep its hash.
const noisyCardHash = "9f7340c66b46b9f8fc599a480c2bf16d8f8de858898cf098e81f62de903d16ad"

// The cost CSV has no float noise: whole quantities for counts and bytes,
// amounts with exactly four decimal places that add up to the total, and
// details without long binary fractions.
func TestCostCSVHasNoFloatNoise(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	require.NoError(t, metering.EnsureMeters(ctx, f.st, f.cfg.Metering.Meters, zerolog.Nop()))
	f.events(t, "acme", 333, oct, 20)
	f.events(t, "globex", 217, oct, 5)
	// Amounts of 0.1 summed as Float64 give 0.30000000000000004 and the like.
	f.exec(t, `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
		SELECT 'globex', 'orders', 'order.placed', ? + toIntervalSecond(number), generateUUIDv4(number + 7777), 'u', 'o', 1,
		replaceAll(replaceAll('<"order":<"amount":0.1>,"customer":"c">', '<', char(123)), '>', char(125)), 3650 FROM numbers(3)`, oct)
	f.spans(t, "acme", 777, 3, oct)
	f.spans(t, "globex", 123, 1, oct)
	rc, err := metering.ParseRateCard([]byte(noisyCard), f.cfg, "card.yaml")
	require.NoError(t, err)
	svc := metering.New(f.cfg, f.place, map[string]*chstore.Store{"default": f.st}, rc, zerolog.Nop())
	svc.Now = f.svc.Now
	p, err := metering.ParsePeriod("2026-10")
	require.NoError(t, err)
	rep, err := svc.Cost(ctx, p)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, metering.WriteCost(&buf, rep, "csv"))
	t.Logf("cost CSV:\n%s", buf.String())
	rows, err := csv.NewReader(&buf).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"period", "tenant", "kind", "meter", "quantity", "unit", "detail", "amount", "currency", "rate_card", "closed"}, rows[0])

	whole := regexp.MustCompile(`^[0-9]+$`)
	exact := regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,9})?$`)
	fixed4 := regexp.MustCompile(`^-?[0-9]+\.[0-9]{4}$`)
	noise := regexp.MustCompile(`[0-9]\.[0-9]{13,}|[eE][-+][0-9]`)
	sums := map[string]decimal.Decimal{}
	seen := map[string]bool{}
	for _, r := range rows[1:] {
		tenant, kind, meter, qty, unit, detail, amt := r[1], r[2], r[3], r[4], r[5], r[6], r[7]
		require.Regexp(t, fixed4, amt, "amount of %v", r)
		require.NotRegexp(t, noise, detail, "detail of %v", r)
		a := decimal.RequireFromString(amt)
		if kind == "total" {
			require.True(t, sums[tenant].Equal(a), "%s: lines add up to %s, total %s", tenant, sums[tenant], a)
			continue
		}
		sums[tenant] = sums[tenant].Add(a)
		if kind != "usage" {
			continue
		}
		seen[meter] = true
		require.Regexp(t, whole, unit, "unit of %v", r)
		switch meter {
		case "events", "spans", "stored_bytes":
			require.Regexp(t, whole, qty, "%s is a whole number: %v", meter, r)
		default:
			require.Regexp(t, exact, qty, "%s is a short exact decimal: %v", meter, r)
		}
	}
	require.True(t, seen["stored_bytes"] && seen["orders_total"], "%v", seen)
	shared := decimal.Zero
	for _, r := range rows[1:] {
		if r[2] == "shared" {
			shared = shared.Add(decimal.RequireFromString(r[7]))
		}
	}
	require.Equal(t, "30.0000", shared.StringFixed(4), "the shared cost is split exactly")

	// JSON keeps the same exact values (as strings).
	buf.Reset()
	require.NoError(t, metering.WriteCost(&buf, rep, "json"))
	require.NotRegexp(t, noise, buf.String())
	require.Regexp(t, `"total": "-?[0-9]+(\.[0-9]+)?"`, buf.String())
}

// Prices are read as exact decimals and the stored version keeps the hash
// that float64 prices gave it, so a closed period's version still matches.
func TestRateCardDecimalsKeepTheStoredHash(t *testing.T) {
	f := start(t)
	rc, err := metering.ParseRateCard([]byte(noisyCard), f.cfg, "card.yaml")
	require.NoError(t, err)
	require.Equal(t, "0.1", rc.Versions[0].Prices[3].Price.String())
	require.Equal(t, "1073741824", rc.Versions[0].Prices[3].Unit.String())
	require.NoError(t, rc.Store(context.Background(), f.st))
	var sha string
	require.NoError(t, f.st.QueryRow(context.Background(), []any{&sha}, "SELECT sha256 FROM rate_cards FINAL WHERE version = '2026-10'"))
	require.Equal(t, noisyCardHash, sha)
	for _, bad := range []string{"price: .nan", "price: .inf", `price: "0.5"`, "price: [1]"} {
		_, err := metering.ParseRateCard([]byte(regexp.MustCompile(`price: 0\.5`).ReplaceAllString(noisyCard, bad)), f.cfg, "card.yaml")
		require.Error(t, err, bad)
	}
}
