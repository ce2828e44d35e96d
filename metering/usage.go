// Package metering turns what the collector stores into per-tenant usage
// (rollups filled by materialized views, and user-defined meters), cost
// (a versioned rate card, closed periods, adjustments) and SLAs (from
// server spans, with multi-window burn-rate alerts).
package metering

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/shopspring/decimal"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/placement"
)

// Service reads usage, cost and SLAs from every region's store.
type Service struct {
	cfg     config.Config
	place   *placement.Placement      // where tenants live, which are being moved
	tenants map[string]config.Tenant  // by id (request counting looks tenants up per request)
	stores  map[string]*chstore.Store // by region
	card    *RateCard
	log     zerolog.Logger
	// Now is the clock (tests move it).
	Now func() time.Time
}

// New builds a Service. place (nil: no moves) is where tenants live and
// which are paused while they move; card may be nil (usage without prices).
func New(cfg config.Config, place *placement.Placement, stores map[string]*chstore.Store, card *RateCard, log zerolog.Logger) *Service {
	s := &Service{cfg: cfg, place: place, tenants: map[string]config.Tenant{}, stores: stores, card: card, log: log.With().Str("component", "metering").Logger(), Now: time.Now}
	for _, t := range cfg.Tenants {
		s.tenants[t.ID] = t
	}
	return s
}

// StoreOf is the region store of tenant: the one place metering finds a
// tenant's data.
func (s *Service) StoreOf(tenant string) (*chstore.Store, error) {
	if r, ok := s.place.RegionOf(s.cfg, tenant); ok {
		if st := s.stores[r.Name]; st != nil {
			return st, nil
		}
	}
	return nil, fmt.Errorf("metering: tenant %q has no region store", tenant)
}

// regions lists the region stores in a fixed order.
func (s *Service) regions() []*chstore.Store {
	names := make([]string, 0, len(s.stores))
	for n := range s.stores {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*chstore.Store, len(names))
	for i, n := range names {
		out[i] = s.stores[n]
	}
	return out
}

// Period is a calendar month in UTC, "2006-01".
type Period struct {
	Name     string
	From, To time.Time // [From, To)
}

// ParsePeriod reads "2006-01".
func ParsePeriod(v string) (Period, error) {
	t, err := time.Parse("2006-01", v)
	if err != nil {
		return Period{}, fmt.Errorf("period %q is not a month like 2026-11", v)
	}
	return Period{Name: v, From: t, To: t.AddDate(0, 1, 0)}, nil
}

// Usage is one tenant's metered quantities in a period: exact decimals,
// whole numbers for counts and bytes (JSON strings).
type Usage map[string]decimal.Decimal

// UsageByTenant reads every tenant's built-in and user-defined meters for
// [from, to) from the rollups.
func (s *Service) UsageByTenant(ctx context.Context, from, to time.Time) (map[string]Usage, error) {
	out := map[string]Usage{}
	for _, t := range s.cfg.Tenants {
		out[t.ID] = Usage{}
	}
	add := func(tenant, meter string, v decimal.Decimal) {
		if u, ok := out[tenant]; ok {
			u[meter] = u[meter].Add(v)
		}
	}
	type signalRow struct {
		Tenant   string `ch:"tenant_id"`
		Signal   string `ch:"signal"`
		Count    uint64 `ch:"count"`
		Bytes    uint64 `ch:"bytes"`
		Duration uint64 `ch:"ns"`
	}
	for _, st := range s.regions() {
		var rows []signalRow
		table, col, lo, hi := rollup(from, to, "usage")
		if err := st.Select(ctx, &rows, `SELECT tenant_id, signal, sum(count) AS count, sum(bytes) AS bytes, sum(duration_ns) AS ns
			FROM `+table+` WHERE `+col+` >= ? AND `+col+` < ? GROUP BY tenant_id, signal`, lo, hi); err != nil {
			return nil, fmt.Errorf("usage: %w", err)
		}
		for _, r := range rows {
			for meter, v := range signalMeters(r.Signal, r.Count, r.Bytes, r.Duration) {
				add(r.Tenant, meter, v)
			}
		}
		stored, err := storedBytes(ctx, st)
		if err != nil {
			return nil, err
		}
		for tenant, b := range stored {
			add(tenant, "stored_bytes", decimal.NewFromUint64(b))
		}
		meters, err := s.meterValues(ctx, st, from, to, "")
		if err != nil {
			return nil, err
		}
		for _, m := range meters {
			add(m.Tenant, m.Meter, m.Value)
		}
	}
	return out, nil
}

// rollup picks the daily table for whole days (monthly reports read 24
// times fewer rows) and the hourly one otherwise, with the bounds its time
// column compares with.
func rollup(from, to time.Time, kind string) (table, col string, lo, hi any) {
	if from.Equal(from.Truncate(24*time.Hour)) && to.Equal(to.Truncate(24*time.Hour)) {
		return kind + "_daily", "day", from.Format(time.DateOnly), to.Format(time.DateOnly)
	}
	return kind + "_hourly", "hour", from, to
}

// signalMeters maps a usage_hourly signal to built-in meters: counts and
// bytes as whole numbers, server time (ns) as exact seconds.
func signalMeters(signal string, count, bytes, ns uint64) map[string]decimal.Decimal {
	n, b := decimal.NewFromUint64(count), decimal.NewFromUint64(bytes)
	switch signal {
	case "events":
		return map[string]decimal.Decimal{"events": n, "event_bytes": b}
	case "logs":
		return map[string]decimal.Decimal{"logs": n, "log_bytes": b}
	case "spans":
		return map[string]decimal.Decimal{"spans": n, "span_bytes": b, "compute_seconds": decimal.NewFromUint64(ns).Shift(-9)}
	case "audit_records":
		return map[string]decimal.Decimal{"audit_records": n}
	case "exports":
		return map[string]decimal.Decimal{"exports": n, "audit_records": n}
	case "api_requests", "ui_requests":
		return map[string]decimal.Decimal{signal: n}
	}
	return nil
}

// storedBytes attributes each table's bytes on disk to tenants by their
// share of the bytes ingested into it (ClickHouse reports storage per
// table, not per tenant). The rounding rule: per table, a tenant's share is
// disk bytes × its ingested bytes ÷ all ingested bytes, rounded down to a
// whole byte (integer arithmetic, once); its stored_bytes is the sum of
// those shares, so the shares never add up to more than the disk use.
func storedBytes(ctx context.Context, st *chstore.Store) (map[string]uint64, error) {
	var rows []struct {
		Tenant string `ch:"tenant_id"`
		Bytes  uint64 `ch:"stored"`
	}
	if err := st.Select(ctx, &rows, `WITH disk AS (
			SELECT multiIf(table = 'events', 'events', table = 'logs', 'logs', table = 'spans', 'spans', 'audit_records') AS signal,
			       toUInt64(sum(bytes_on_disk)) AS bytes
			FROM system.parts WHERE database = currentDatabase() AND active AND table IN ('events', 'logs', 'spans', 'audit_records')
			GROUP BY signal),
		ingested AS (
			SELECT tenant_id, if(signal = 'exports', 'audit_records', signal) AS signal, toUInt64(sum(bytes)) AS b
			FROM usage_daily WHERE signal IN ('events', 'logs', 'spans', 'audit_records', 'exports') GROUP BY tenant_id, signal)
		SELECT tenant_id, toUInt64(sum(toUInt64(intDiv(toUInt128(disk.bytes) * ingested.b, totals.total)))) AS stored
		FROM ingested
		JOIN disk USING (signal)
		JOIN (SELECT signal, sum(b) AS total FROM ingested GROUP BY signal) AS totals USING (signal)
		WHERE totals.total > 0
		GROUP BY tenant_id`); err != nil {
		return nil, fmt.Errorf("stored bytes: %w", err)
	}
	out := map[string]uint64{}
	for _, r := range rows {
		out[r.Tenant] = r.Bytes
	}
	return out, nil
}

// Daily is one day of a tenant's usage.
type Daily struct {
	Day   time.Time
	Usage Usage
}

// DailyUsage is one tenant's built-in and user-defined meters per day.
func (s *Service) DailyUsage(ctx context.Context, tenant string, from, to time.Time) ([]Daily, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Day      time.Time `ch:"d"`
		Signal   string    `ch:"signal"`
		Count    uint64    `ch:"count"`
		Bytes    uint64    `ch:"bytes"`
		Duration uint64    `ch:"ns"`
	}
	table, col, lo, hi := rollup(from, to, "usage")
	if err := st.Select(ctx, &rows, `SELECT toDate(`+col+`) AS d, signal, sum(count) AS count, sum(bytes) AS bytes, sum(duration_ns) AS ns
		FROM `+table+` WHERE tenant_id = ? AND `+col+` >= ? AND `+col+` < ? GROUP BY d, signal ORDER BY d`, tenant, lo, hi); err != nil {
		return nil, fmt.Errorf("daily usage: %w", err)
	}
	byDay := map[time.Time]Usage{}
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		byDay[d] = Usage{}
	}
	for _, r := range rows {
		u := byDay[r.Day.UTC()]
		if u == nil {
			continue
		}
		for m, v := range signalMeters(r.Signal, r.Count, r.Bytes, r.Duration) {
			u[m] = u[m].Add(v)
		}
	}
	meters, err := s.meterValues(ctx, st, from, to, tenant)
	if err != nil {
		return nil, err
	}
	for _, m := range meters {
		if u := byDay[m.Day]; u != nil {
			u[m.Meter] = u[m.Meter].Add(m.Value)
		}
	}
	out := make([]Daily, 0, len(byDay))
	for d, u := range byDay {
		out = append(out, Daily{Day: d, Usage: u})
	}
	slices.SortFunc(out, func(a, b Daily) int { return a.Day.Compare(b.Day) })
	return out, nil
}

// meterName is the materialized view of a meter: its name and a hash of its
// definition, so a changed definition is a new view.
func meterView(m config.Meter) string {
	h := sha256.Sum256([]byte(m.Name + "\x00" + m.Action + "\x00" + m.Aggregation + "\x00" + m.Value + "\x00" + strings.Join(m.GroupBy, "\x00")))
	return "meter_mv_" + m.Name + "_" + hex.EncodeToString(h[:4])
}

// jsonArgs turns a validated dot path into JSONExtract arguments.
func jsonArgs(path string) string {
	parts := strings.Split(path, ".")
	for i, p := range parts {
		parts[i] = "'" + p + "'"
	}
	return strings.Join(parts, ", ")
}

// meterSelect is the SELECT that aggregates events into meter_hourly rows
// for m. Every name in it was validated by config (letters, digits, _ and .),
// so it is safe to splice.
func meterSelect(m config.Meter) string {
	group := "''"
	if len(m.GroupBy) > 0 {
		var keys []string
		for _, g := range m.GroupBy {
			keys = append(keys, fmt.Sprintf("concat('%s=', JSONExtractString(payload, %s))", g, jsonArgs(g)))
		}
		group = "arrayStringConcat([" + strings.Join(keys, ", ") + "], ',')"
	}
	num, str := "toFloat64(0)", "''"
	if m.Value != "" {
		num = "JSONExtractFloat(payload, " + jsonArgs(m.Value) + ")"
		str = "JSONExtractRaw(payload, " + jsonArgs(m.Value) + ")"
	}
	action := "action = '" + m.Action + "'"
	if strings.Contains(m.Action, "*") {
		action = "action LIKE '" + strings.NewReplacer("_", "\\_", "%", "\\%", "*", "%").Replace(m.Action) + "'"
	}
	return fmt.Sprintf(`SELECT tenant_id, '%s' AS meter, toStartOfHour(time) AS hour, %s AS group_key,
		toUInt64(count()) AS count, sum(%s) AS sum, max(%s) AS max, uniqState(%s) AS uniq, argMaxState(%s, time) AS latest
	FROM events WHERE %s AND getSetting('log_comment') != 'tenantscope:retention-move'`, m.Name, group, num, num, str, num, action)
}

// EnsureMeters creates a materialized view per configured meter in st
// (backfilling what is already stored), and drops views of meters no longer
// configured or whose definition changed (their rows go too).
func EnsureMeters(ctx context.Context, st *chstore.Store, meters []config.Meter, log zerolog.Logger) error {
	want := map[string]config.Meter{}
	for _, m := range meters {
		want[meterView(m)] = m
	}
	var existing []struct {
		Name string `ch:"name"`
	}
	if err := st.Select(ctx, &existing, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'meter\\_mv\\_%'"); err != nil {
		return fmt.Errorf("meters: %w", err)
	}
	have := map[string]bool{}
	for _, e := range existing {
		have[e.Name] = true
		if _, ok := want[e.Name]; ok {
			continue
		}
		name := strings.TrimPrefix(e.Name, "meter_mv_")
		name = name[:strings.LastIndex(name, "_")]
		if err := st.Exec(ctx, "DROP VIEW IF EXISTS "+e.Name); err != nil {
			return fmt.Errorf("meters: drop %s: %w", e.Name, err)
		}
		if err := st.Exec(ctx, "ALTER TABLE meter_hourly DELETE WHERE meter = ?", name); err != nil {
			return fmt.Errorf("meters: clear %s: %w", name, err)
		}
		log.Info().Str("meter", name).Msg("meter view dropped (meter removed or redefined)")
	}
	for view, m := range want {
		if have[view] {
			continue
		}
		var cutoff time.Time
		if err := st.QueryRow(ctx, []any{&cutoff}, "SELECT now64(3)"); err != nil {
			return err
		}
		if err := st.Exec(ctx, "CREATE MATERIALIZED VIEW IF NOT EXISTS "+view+" TO meter_hourly AS "+meterSelect(m)+" GROUP BY tenant_id, hour, group_key"); err != nil {
			return fmt.Errorf("meters: create %s: %w", m.Name, err)
		}
		// Rows stored before the view existed.
		// (Milliseconds as a number: a bound time.Time loses them.)
		if err := st.Exec(ctx, "INSERT INTO meter_hourly "+meterSelect(m)+" AND received_at < fromUnixTimestamp64Milli(?, 'UTC') GROUP BY tenant_id, hour, group_key", cutoff.UnixMilli()); err != nil {
			return fmt.Errorf("meters: backfill %s: %w", m.Name, err)
		}
		log.Info().Str("meter", m.Name).Msg("meter view created and backfilled")
	}
	return nil
}

// MeterValue is a user-defined meter's value for a tenant (and a day, when
// read per day).
type MeterValue struct {
	Tenant string
	Meter  string
	Day    time.Time
	Value  decimal.Decimal
}

func (s *Service) meterValues(ctx context.Context, st *chstore.Store, from, to time.Time, tenant string) ([]MeterValue, error) {
	if len(s.cfg.Metering.Meters) == 0 {
		return nil, nil
	}
	agg := map[string]string{}
	for _, m := range s.cfg.Metering.Meters {
		agg[m.Name] = m.Aggregation
	}
	table, col, lo, hi := rollup(from, to, "meter")
	where, args := col+" >= ? AND "+col+" < ?", []any{lo, hi}
	// (The result column is "d": an alias "day" would shadow meter_daily's column in WHERE.)
	day := "toDate('1970-01-01')"
	if tenant != "" {
		where, args, day = "tenant_id = ? AND "+where, append([]any{tenant}, args...), "toDate("+col+")"
	}
	var rows []struct {
		Tenant string    `ch:"tenant_id"`
		Meter  string    `ch:"meter"`
		Day    time.Time `ch:"d"`
		Count  uint64    `ch:"count"`
		Sum    float64   `ch:"sum"`
		Max    float64   `ch:"max"`
		Uniq   uint64    `ch:"uniq"`
		Latest float64   `ch:"latest"`
	}
	if err := st.Select(ctx, &rows, `SELECT tenant_id, meter, `+day+` AS d, sum(count) AS count, sum(sum) AS sum, max(max) AS max,
		uniqMerge(uniq) AS uniq, argMaxMerge(latest) AS latest FROM `+table+` WHERE `+where+` GROUP BY tenant_id, meter, d`, args...); err != nil {
		return nil, fmt.Errorf("meters: %w", err)
	}
	out := make([]MeterValue, 0, len(rows))
	for _, r := range rows {
		// Counts are whole; sum, max and latest are Float64 in ClickHouse,
		// rounded to MeterScale places here (once).
		var v decimal.Decimal
		switch agg[r.Meter] {
		case "count":
			v = decimal.NewFromUint64(r.Count)
		case "unique_count":
			v = decimal.NewFromUint64(r.Uniq)
		case "sum":
			v = decimal.NewFromFloat(r.Sum).Round(MeterScale)
		case "max":
			v = decimal.NewFromFloat(r.Max).Round(MeterScale)
		case "latest":
			v = decimal.NewFromFloat(r.Latest).Round(MeterScale)
		}
		out = append(out, MeterValue{Tenant: r.Tenant, Meter: r.Meter, Day: r.Day.UTC(), Value: v})
	}
	return out, nil
}

// Setup prepares a region's store for metering: the configured meters'
// views and the rate card's versions. The process that migrates runs it.
func Setup(ctx context.Context, st *chstore.Store, cfg config.Config, card *RateCard, log zerolog.Logger) error {
	if err := EnsureMeters(ctx, st, cfg.Metering.Meters, log); err != nil {
		return err
	}
	if card != nil {
		return card.Store(ctx, st)
	}
	return nil
}
