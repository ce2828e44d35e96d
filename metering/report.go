package metering

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/shopspring/decimal"

	"github.com/tenantscope/tenantscope/export/csvcell"
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
		// Cells a spreadsheet would run as formulas are neutralized (OWASP).
		cw := csvcell.NewWriter(w)
		_ = cw.Write([]string{"period", "tenant", "kind", "meter", "quantity", "unit", "detail", "amount", "currency", "rate_card", "closed"}) //nolint:errcheck // Flush reports
		// Quantities and units as their exact decimal text (whole numbers
		// for counts and bytes), amounts with exactly AmountScale places.
		for _, t := range rep.Tenants {
			for _, l := range t.Lines {
				q, u := "", ""
				if l.Kind == "usage" {
					q, u = l.Quantity.String(), l.Unit.String()
				}
				_ = cw.Write([]string{rep.Period, t.Tenant, l.Kind, l.Meter, q, u, l.Detail, fixed(l.Amount), rep.Currency, rep.RateCard, strconv.FormatBool(rep.Closed)}) //nolint:errcheck // Flush reports
			}
			_ = cw.Write([]string{rep.Period, t.Tenant, "total", "", "", "", "", fixed(t.Total), rep.Currency, rep.RateCard, strconv.FormatBool(rep.Closed)}) //nolint:errcheck // Flush reports
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("%w: format %q is not csv or json", ErrInvalid, format)
}

// Margin is a tenant's revenue against the compute its requests used
// (exact decimals; amounts rounded to AmountScale places, the percent to 2).
type Margin struct {
	Tenant         string          `json:"tenant"`
	Revenue        decimal.Decimal `json:"revenue"`
	ComputeSeconds decimal.Decimal `json:"compute_seconds"`
	ComputeCost    decimal.Decimal `json:"compute_cost"`
	Margin         decimal.Decimal `json:"margin"`
	MarginPercent  decimal.Decimal `json:"margin_percent"`
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
			Tenant  string `ch:"tenant_id"`
			Service string `ch:"service"`
			NS      uint64 `ch:"ns"`
		}
		if err := st.Select(ctx, &rows, `SELECT tenant_id, service, sum(duration_ns) AS ns FROM usage_hourly
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
			secs := decimal.NewFromUint64(r.NS).Shift(-9)
			m.ComputeSeconds = m.ComputeSeconds.Add(secs)
			m.ComputeCost = m.ComputeCost.Add(secs.Mul(decimal.NewFromFloat(rate)))
		}
	}
	out := make([]Margin, 0, len(byTenant))
	for _, m := range byTenant {
		m.ComputeCost = amount(m.ComputeCost)
		m.Margin = m.Revenue.Sub(m.ComputeCost)
		if !m.Revenue.IsZero() {
			m.MarginPercent = m.Margin.Mul(decimal.NewFromInt(100)).DivRound(m.Revenue, 2)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out, rep.Currency, nil
}
