package metering

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// WriteCost writes the report as "csv" (one row per line item and a total
// row per tenant) or "json".
func WriteCost(w io.Writer, rep CostReport, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"period", "tenant", "kind", "meter", "quantity", "unit", "detail", "amount", "currency", "rate_card", "closed"}) //nolint:errcheck // Flush reports
		f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
		for _, t := range rep.Tenants {
			for _, l := range t.Lines {
				_ = cw.Write([]string{rep.Period, t.Tenant, l.Kind, l.Meter, f(l.Quantity), f(l.Unit), l.Detail, f(l.Amount), rep.Currency, rep.RateCard, strconv.FormatBool(rep.Closed)}) //nolint:errcheck // Flush reports
			}
			_ = cw.Write([]string{rep.Period, t.Tenant, "total", "", "", "", "", f(t.Total), rep.Currency, rep.RateCard, strconv.FormatBool(rep.Closed)}) //nolint:errcheck // Flush reports
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("%w: format %q is not csv or json", ErrInvalid, format)
}

// Margin is a tenant's revenue against the compute its requests used.
type Margin struct {
	Tenant         string  `json:"tenant"`
	Revenue        float64 `json:"revenue"`
	ComputeSeconds float64 `json:"compute_seconds"`
	ComputeCost    float64 `json:"compute_cost"`
	Margin         float64 `json:"margin"`
	MarginPercent  float64 `json:"margin_percent"`
}

// Margins reconciles each tenant's bill with the cost of the server time
// its requests took: server span seconds per service × the service's rate
// (metering.compute_cost_per_second, "*" for the rest).
func (s *Service) Margins(ctx context.Context, p Period) ([]Margin, string, error) {
	rep, err := s.Cost(ctx, p)
	if err != nil {
		return nil, "", err
	}
	rates := s.cfg.Metering.ComputeCostPerSecond
	byTenant := map[string]*Margin{}
	for _, t := range rep.Tenants {
		byTenant[t.Tenant] = &Margin{Tenant: t.Tenant, Revenue: t.Total}
	}
	for _, st := range s.regions() {
		var rows []struct {
			Tenant  string  `ch:"tenant_id"`
			Service string  `ch:"service"`
			Seconds float64 `ch:"seconds"`
		}
		if err := st.Select(ctx, &rows, `SELECT tenant_id, service, sum(duration_ns) / 1e9 AS seconds FROM usage_hourly
			WHERE signal = 'spans' AND hour >= ? AND hour < ? GROUP BY tenant_id, service`, p.From, p.To); err != nil {
			return nil, "", fmt.Errorf("margin: %w", err)
		}
		for _, r := range rows {
			m := byTenant[r.Tenant]
			if m == nil {
				continue
			}
			rate, ok := rates[r.Service]
			if !ok {
				rate = rates["*"]
			}
			m.ComputeSeconds += r.Seconds
			m.ComputeCost += r.Seconds * rate
		}
	}
	out := make([]Margin, 0, len(byTenant))
	for _, m := range byTenant {
		m.ComputeCost = round(m.ComputeCost)
		m.Margin = round(m.Revenue - m.ComputeCost)
		if m.Revenue != 0 {
			m.MarginPercent = round(100 * m.Margin / m.Revenue)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out, rep.Currency, nil
}
