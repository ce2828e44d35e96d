package metering

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/tenantscope/tenantscope/config"
)

// SLA is a tenant's (or one service's) service level over a window, from
// its server spans: a request is valid when it is a server span, bad when
// its status is error or its HTTP status is 5xx.
type SLA struct {
	Tenant       string  `json:"tenant"`
	Service      string  `json:"service,omitempty"`
	Valid        uint64  `json:"valid"`
	Bad          uint64  `json:"bad"`
	Availability float64 `json:"availability_percent"` // 100 with no requests
	ErrorRate    float64 `json:"error_rate_percent"`
	P50          float64 `json:"latency_p50_ms"`
	P95          float64 `json:"latency_p95_ms"`
	P99          float64 `json:"latency_p99_ms"`
	// Objective and attainment.
	Target       float64 `json:"target_percent"`
	LatencyBound float64 `json:"latency_p99_bound_ms"`
	Met          bool    `json:"met"`
	// BudgetRemaining is the share of the period's error budget left (1 =
	// untouched, 0 = spent, negative = overspent).
	BudgetRemaining float64 `json:"error_budget_remaining"`
	CreditPercent   float64 `json:"credit_percent"`
}

type slaRow struct {
	Tenant  string    `ch:"tenant_id"`
	Service string    `ch:"service"`
	Valid   uint64    `ch:"valid"`
	Bad     uint64    `ch:"bad"`
	Q       []float64 `ch:"q"`
}

func (s *Service) finish(tenant string, r slaRow) SLA {
	t, _ := s.tenant(tenant)
	slo := s.cfg.SLOOf(t)
	out := SLA{Tenant: tenant, Service: r.Service, Valid: r.Valid, Bad: r.Bad, Availability: 100, Target: slo.Availability,
		LatencyBound: float64(time.Duration(slo.LatencyP99)) / 1e6}
	if r.Valid > 0 {
		out.Availability = 100 * float64(r.Valid-min(r.Bad, r.Valid)) / float64(r.Valid)
		out.ErrorRate = 100 - out.Availability
	}
	if len(r.Q) == 3 {
		out.P50, out.P95, out.P99 = r.Q[0]/1e6, r.Q[1]/1e6, r.Q[2]/1e6
	}
	out.Met = out.Availability >= out.Target && (out.LatencyBound == 0 || out.P99 <= out.LatencyBound)
	if budget := (1 - out.Target/100) * float64(r.Valid); budget > 0 {
		out.BudgetRemaining = 1 - float64(r.Bad)/budget
	} else {
		out.BudgetRemaining = 1
		if r.Bad > 0 {
			out.BudgetRemaining = 0
		}
	}
	out.CreditPercent, _ = s.credit(out)
	return out
}

func (s *Service) tenant(id string) (config.Tenant, bool) {
	t, ok := s.tenants[id]
	return t, ok
}

// credit is the SLA credit owed for an availability: the largest credit
// whose threshold the availability falls below.
func (s *Service) credit(sl SLA) (float64, string) {
	if sl.Valid == 0 {
		return 0, ""
	}
	best, detail := 0.0, ""
	for _, c := range s.cfg.Metering.Credits {
		if sl.Availability < c.Below && c.CreditPercent > best {
			best, detail = c.CreditPercent, fmt.Sprintf("availability %.3f%% < %g%%: %g%% credit", sl.Availability, c.Below, c.CreditPercent)
		}
	}
	return best, detail
}

// SLAByTenant is every tenant's SLA over [from, to).
func (s *Service) SLAByTenant(ctx context.Context, from, to time.Time) (map[string]SLA, error) {
	return s.slaByTenant(ctx, from, to, true)
}

// slaByTenant reads latency quantiles only when asked (a bill's SLA credit
// needs availability only; merging every tenant's t-digests is the costly
// part).
func (s *Service) slaByTenant(ctx context.Context, from, to time.Time, latency bool) (map[string]SLA, error) {
	out := map[string]SLA{}
	for _, t := range s.cfg.Tenants {
		out[t.ID] = s.finish(t.ID, slaRow{})
	}
	for _, st := range s.regions() {
		var rows []slaRow
		q := "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)"
		if !latency {
			q = "CAST([] AS Array(Float64))"
		}
		if err := st.Select(ctx, &rows, `SELECT tenant_id, '' AS service, sum(valid) AS valid, sum(bad) AS bad, `+q+` AS q
			FROM sla_minutely WHERE minute >= ? AND minute < ? GROUP BY tenant_id`, from, to); err != nil {
			return nil, fmt.Errorf("sla: %w", err)
		}
		for _, r := range rows {
			if _, ok := out[r.Tenant]; ok {
				out[r.Tenant] = s.finish(r.Tenant, r)
			}
		}
	}
	return out, nil
}

// TenantSLA is one tenant's SLA in total and per service, and the daily
// burn-down of its error budget.
type TenantSLA struct {
	Total    SLA         `json:"total"`
	Services []SLA       `json:"services"`
	Days     []BudgetDay `json:"days"`
}

// BudgetDay is the error budget left at the end of a day of the period.
type BudgetDay struct {
	Day       time.Time `json:"day"`
	Valid     uint64    `json:"valid"`
	Bad       uint64    `json:"bad"`
	Remaining float64   `json:"error_budget_remaining"`
}

// TenantSLA reads one tenant's SLA over [from, to).
func (s *Service) TenantSLA(ctx context.Context, tenant string, from, to time.Time) (TenantSLA, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return TenantSLA{}, err
	}
	var rows []slaRow
	if err := st.Select(ctx, &rows, `SELECT tenant_id, service, sum(valid) AS valid, sum(bad) AS bad,
		quantilesTDigestMerge(0.5, 0.95, 0.99)(latency) AS q
		FROM sla_minutely WHERE tenant_id = ? AND minute >= ? AND minute < ? GROUP BY tenant_id, service ORDER BY service`, tenant, from, to); err != nil {
		return TenantSLA{}, fmt.Errorf("sla: %w", err)
	}
	out := TenantSLA{Total: s.finish(tenant, slaRow{})}
	var tot slaRow
	for _, r := range rows {
		out.Services = append(out.Services, s.finish(tenant, r))
		tot.Valid += r.Valid
		tot.Bad += r.Bad
	}
	// Total latency quantiles across services.
	var q []float64
	if err := st.QueryRow(ctx, []any{&q}, `SELECT quantilesTDigestMerge(0.5, 0.95, 0.99)(latency) FROM sla_minutely
		WHERE tenant_id = ? AND minute >= ? AND minute < ?`, tenant, from, to); err != nil {
		return out, fmt.Errorf("sla: %w", err)
	}
	tot.Q = q
	out.Total = s.finish(tenant, tot)
	var days []struct {
		Day   time.Time `ch:"day"`
		Valid uint64    `ch:"valid"`
		Bad   uint64    `ch:"bad"`
	}
	if err := st.Select(ctx, &days, `SELECT toDate(minute) AS day, sum(valid) AS valid, sum(bad) AS bad FROM sla_minutely
		WHERE tenant_id = ? AND minute >= ? AND minute < ? GROUP BY day ORDER BY day`, tenant, from, to); err != nil {
		return out, fmt.Errorf("sla: %w", err)
	}
	target := out.Total.Target
	var cv, cb uint64
	byDay := map[time.Time][2]uint64{}
	for _, d := range days {
		byDay[d.Day.UTC()] = [2]uint64{d.Valid, d.Bad}
	}
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		v := byDay[d]
		cv, cb = cv+v[0], cb+v[1]
		rem := 1.0
		if budget := (1 - target/100) * float64(cv); budget > 0 {
			rem = 1 - float64(cb)/budget
		}
		out.Days = append(out.Days, BudgetDay{Day: d, Valid: v[0], Bad: v[1], Remaining: rem})
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
	return out, nil
}

// BurnWindows are the SRE workbook's multi-window, multi-burn-rate alert
// pairs: the alert fires when both the long and the short window burn the
// error budget faster than Factor.
var BurnWindows = []struct {
	Long, Short time.Duration
	Factor      float64
	Severity    string
}{
	{time.Hour, 5 * time.Minute, 14.4, "page"},
	{6 * time.Hour, 30 * time.Minute, 6, "page"},
	{24 * time.Hour, 2 * time.Hour, 3, "ticket"},
	{72 * time.Hour, 6 * time.Hour, 1, "ticket"},
}

// Burn is a tenant's error budget burn rate over a window.
type Burn struct {
	Tenant string
	Window time.Duration
	Rate   float64 // error ratio / (1 - target)
}

// BurnRates computes every tenant's burn rate over each alert window,
// ending at now.
func (s *Service) BurnRates(ctx context.Context, now time.Time) ([]Burn, error) {
	windows := map[time.Duration]bool{}
	for _, w := range BurnWindows {
		windows[w.Long], windows[w.Short] = true, true
	}
	var out []Burn
	for w := range windows {
		sl, err := s.slaByTenant(ctx, now.Add(-w), now.Add(time.Minute), false)
		if err != nil {
			return nil, err
		}
		for id, x := range sl {
			rate := 0.0
			if x.Valid > 0 && x.Target < 100 {
				rate = (float64(x.Bad) / float64(x.Valid)) / (1 - x.Target/100)
			}
			out = append(out, Burn{Tenant: id, Window: w, Rate: rate})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].Window < out[j].Window
	})
	return out, nil
}
