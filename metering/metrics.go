package metering

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Exporter keeps per-tenant usage, cost and SLA gauges fresh for /metrics.
// The tenant label takes only configured tenants, so its cardinality is
// the configuration's; the meter label takes the built-in meters and the
// configured ones.
type Exporter struct {
	svc                               *Service
	objective, burn, alert            *prometheus.GaugeVec
	availability, budget, usage, cost *prometheus.GaugeVec
	updated                           prometheus.Gauge
}

// NewExporter registers the gauges.
func NewExporter(svc *Service, reg prometheus.Registerer) (*Exporter, error) {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	e := &Exporter{svc: svc,
		objective:    g("tenantscope_slo_objective_ratio", "A tenant's availability objective as a ratio (0.999).", "tenant"),
		burn:         g("tenantscope_slo_burn_rate", "Error budget burn rate over a window: error ratio / (1 - objective).", "tenant", "window"),
		alert:        g("tenantscope_slo_burn_alert", "1 when a multi-window burn-rate alert condition holds (SRE workbook factors).", "tenant", "severity", "long_window"),
		availability: g("tenantscope_sla_availability_ratio", "Good / valid server requests in the current month.", "tenant"),
		budget:       g("tenantscope_error_budget_remaining_ratio", "Share of the month's error budget left (negative: overspent).", "tenant"),
		usage:        g("tenantscope_usage_period_to_date", "A meter's value in the current month.", "tenant", "meter"),
		cost:         g("tenantscope_cost_period_to_date", "The current month's bill so far, by the rate card.", "tenant", "currency"),
		updated:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantscope_metering_updated_timestamp_seconds", Help: "When the metering gauges were last computed."}),
	}
	for _, c := range []prometheus.Collector{e.objective, e.burn, e.alert, e.availability, e.budget, e.usage, e.cost, e.updated} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metering metrics: %w", err)
		}
	}
	return e, nil
}

// window names a duration as Prometheus does (5m, 1h, 1d).
func window(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	default:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
}

// Update computes every gauge once.
func (e *Exporter) Update(ctx context.Context) error {
	s := e.svc
	now := s.Now().UTC()
	for _, t := range s.cfg.Tenants {
		e.objective.WithLabelValues(t.ID).Set(s.cfg.SLOOf(t).Availability / 100)
	}
	burns, err := s.BurnRates(ctx, now)
	if err != nil {
		return err
	}
	rate := map[string]map[time.Duration]float64{}
	for _, b := range burns {
		if rate[b.Tenant] == nil {
			rate[b.Tenant] = map[time.Duration]float64{}
		}
		rate[b.Tenant][b.Window] = b.Rate
		e.burn.WithLabelValues(b.Tenant, window(b.Window)).Set(b.Rate)
	}
	for tenant, r := range rate {
		for _, w := range BurnWindows {
			v := 0.0
			if r[w.Long] > w.Factor && r[w.Short] > w.Factor {
				v = 1
			}
			e.alert.WithLabelValues(tenant, w.Severity, window(w.Long)).Set(v)
		}
	}
	p, _ := ParsePeriod(now.Format("2006-01")) //nolint:errcheck // formatted above
	sla, err := s.SLAByTenant(ctx, p.From, p.To)
	if err != nil {
		return err
	}
	for id, x := range sla {
		e.availability.WithLabelValues(id).Set(x.Availability / 100)
		e.budget.WithLabelValues(id).Set(x.BudgetRemaining)
	}
	usage, err := s.UsageByTenant(ctx, p.From, p.To)
	if err != nil {
		return err
	}
	for id, u := range usage {
		for m, v := range u {
			e.usage.WithLabelValues(id, m).Set(v.InexactFloat64()) // a gauge is a float
		}
	}
	if rep, err := s.Cost(ctx, p); err == nil {
		for _, t := range rep.Tenants {
			e.cost.WithLabelValues(t.Tenant, rep.Currency).Set(t.Total.InexactFloat64())
		}
	}
	e.updated.SetToCurrentTime()
	return nil
}

// Run updates the gauges every interval until ctx ends.
func (e *Exporter) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := e.Update(ctx); err != nil && ctx.Err() == nil {
			e.svc.log.Warn().Err(err).Msg("metering gauges not updated")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RulesWindows are the windows the recording rules compute error ratios over.
var RulesWindows = []time.Duration{5 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour, 72 * time.Hour}

// Rules is a Prometheus rules file: recording rules for each tenant's
// error ratio over every window (from the collector's SLA counters) and the
// SRE workbook's multi-window, multi-burn-rate alerts against each
// tenant's objective (tenantscope_slo_objective_ratio).
func Rules() string {
	var b strings.Builder
	b.WriteString("# Generated by 'tenantscope slo rules'. Do not edit: regenerate.\ngroups:\n  - name: tenantscope-slo-recording\n    rules:\n")
	for _, w := range RulesWindows {
		fmt.Fprintf(&b, "      - record: tenantscope:sla_error_ratio:rate%s\n        expr: sum by (tenant) (rate(tenantscope_sla_errors_total[%s])) / sum by (tenant) (rate(tenantscope_sla_requests_total[%s]))\n", window(w), window(w), window(w))
	}
	b.WriteString("  - name: tenantscope-slo-alerts\n    rules:\n")
	for _, w := range BurnWindows {
		l, s := window(w.Long), window(w.Short)
		fmt.Fprintf(&b, `      - alert: TenantErrorBudgetBurn
        expr: |
          (tenantscope:sla_error_ratio:rate%[1]s > on (tenant) group_left () (%[3]g * (1 - tenantscope_slo_objective_ratio)))
          and on (tenant)
          (tenantscope:sla_error_ratio:rate%[2]s > on (tenant) group_left () (%[3]g * (1 - tenantscope_slo_objective_ratio)))
        for: 1m
        labels:
          severity: %[4]s
          long_window: %[1]s
          short_window: %[2]s
        annotations:
          summary: "Tenant {{ $labels.tenant }} burns its error budget %[3]gx too fast (%[1]s and %[2]s windows)"
`, l, s, w.Factor, w.Severity)
	}
	return b.String()
}
