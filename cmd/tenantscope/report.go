package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/shopspring/decimal"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/export/csvcell"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// openMetering opens every region and the configured rate card.
func openMetering(ctx context.Context, cfg config.Config) (*metering.Service, func(), error) {
	stores, place, closeAll, err := openRegions(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	var card *metering.RateCard
	if cfg.Metering.RateCard != "" {
		if card, err = metering.LoadRateCard(cfg.Metering.RateCard, cfg); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	return metering.New(cfg, place, stores, card, zerolog.Nop()), closeAll, nil
}

// openRegions opens every region's store and reads where tenants live
// after region moves (place); closeAll closes the stores.
func openRegions(ctx context.Context, cfg config.Config) (map[string]*chstore.Store, *placement.Placement, func(), error) {
	stores := map[string]*chstore.Store{}
	closeAll := func() {
		for _, st := range stores {
			_ = st.Close() //nolint:errcheck // short-lived
		}
	}
	for _, r := range cfg.Regions {
		st, err := openRegion(ctx, cfg, r)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		stores[r.Name] = st
	}
	place := placement.New()
	if err := retention.LoadPlacement(ctx, cfg, place, stores[cfg.Regions[0].Name]); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return stores, place, closeAll, nil
}

const (
	reportUsage = "report cost|sla|margin --period 2026-11 [--format csv|json] [--out FILE]"
	periodUsage = "period close --period 2026-10 --by NAME | period adjust --period 2026-10 --tenant T --amount -12.5 --reason TEXT --by NAME"
	sloUsage    = "slo rules > prometheus-rules.yml"
)

// runReport prints the cost, SLA or margin report of a period.
func runReport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "cost" && args[0] != "sla" && args[0] != "margin") {
		return fmt.Errorf("%w: tenantscope %s", errUsage, reportUsage)
	}
	kind := args[0]
	cf := newConfigFlags("report "+kind, stderr)
	period := cf.fs.String("period", "", "the month, e.g. 2026-11 (required)")
	format := cf.fs.String("format", "csv", "csv or json")
	out := cf.fs.String("out", "", "file (default: standard output)")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	p, err := metering.ParsePeriod(*period)
	if err != nil {
		return err
	}
	svc, closeAll, err := openMetering(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	w := stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	switch kind {
	case "cost":
		rep, err := svc.Cost(ctx, p)
		if err != nil {
			return err
		}
		if err := metering.WriteCost(w, rep, *format); err != nil {
			return err
		}
		state := "open (follows usage until closed)"
		if rep.Closed {
			state = "closed"
		}
		fmt.Fprintf(stderr, "cost %s: %d tenants, total %.2f %s, rate card %s, %s\n", p.Name, len(rep.Tenants), rep.Total, rep.Currency, rep.RateCard, state)
		return nil
	case "sla":
		sla, err := svc.SLAByTenant(ctx, p.From, p.To)
		if err != nil {
			return err
		}
		return writeRows(w, *format, []string{"tenant", "valid", "bad", "availability_percent", "target_percent", "latency_p99_ms", "met", "error_budget_remaining", "credit_percent"}, func(yield func([]any)) {
			for _, t := range cfg.Tenants {
				x := sla[t.ID]
				yield([]any{t.ID, x.Valid, x.Bad, x.Availability, x.Target, x.P99, x.Met, x.BudgetRemaining, x.CreditPercent})
			}
		})
	default:
		ms, currency, err := svc.Margins(ctx, p)
		if err != nil {
			return err
		}
		return writeRows(w, *format, []string{"tenant", "revenue", "compute_seconds", "compute_cost", "margin", "margin_percent", "currency"}, func(yield func([]any)) {
			for _, m := range ms {
				yield([]any{m.Tenant, m.Revenue, m.ComputeSeconds, m.ComputeCost, m.Margin, m.MarginPercent, currency})
			}
		})
	}
}

// writeRows writes a table as CSV or as a JSON array of objects.
func writeRows(w io.Writer, format string, header []string, rows func(yield func([]any))) error {
	switch format {
	case "csv":
		// Cells a spreadsheet would run as formulas are neutralized (OWASP).
		cw := csvcell.NewWriter(w)
		_ = cw.Write(header) //nolint:errcheck // Flush reports
		rows(func(r []any) {
			vals := make([]string, len(r))
			for i, v := range r {
				vals[i] = fmt.Sprint(v)
			}
			_ = cw.Write(vals) //nolint:errcheck // Flush reports
		})
		cw.Flush()
		return cw.Error()
	case "json":
		var out []map[string]any
		rows(func(r []any) {
			m := map[string]any{}
			for i, h := range header {
				m[h] = r[i]
			}
			out = append(out, m)
		})
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return fmt.Errorf("%w: --format %q is not csv or json", errUsage, format)
}

// runPeriod closes a month or adjusts a closed one.
func runPeriod(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "close" && args[0] != "adjust") {
		return fmt.Errorf("%w: tenantscope %s", errUsage, periodUsage)
	}
	cf := newConfigFlags("period "+args[0], stderr)
	period := cf.fs.String("period", "", "the month, e.g. 2026-10 (required)")
	by := cf.fs.String("by", "", "who does it (recorded and audited; required)")
	tenant := cf.fs.String("tenant", "", "adjust: the tenant")
	amount := cf.fs.Float64("amount", 0, "adjust: the amount (negative for a credit)")
	reason := cf.fs.String("reason", "", "adjust: why (required)")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	if *by == "" {
		return errors.New("--by is required: closing and adjusting are audited")
	}
	p, err := metering.ParsePeriod(*period)
	if err != nil {
		return err
	}
	svc, closeAll, err := openMetering(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	if args[0] == "close" {
		rep, err := svc.Close(ctx, p, *by)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "closed %s: %d tenants, total %.2f %s (rate card %s); its report will not change\n", p.Name, len(rep.Tenants), rep.Total, rep.Currency, rep.RateCard)
		return err
	}
	a, err := svc.Adjust(ctx, p, *tenant, decimal.NewFromFloat(*amount), *reason, *by) // the flag's shortest decimal text, exactly
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "adjustment %s: %s %s %+.2f (%s)\n", a.ID, a.Period, a.Tenant, a.Amount, a.Reason)
	return err
}

// runSLO prints the Prometheus rules file.
func runSLO(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	if wantsHelp(args) {
		_, err := fmt.Fprintf(stdout, "usage: tenantscope %s\n", sloUsage)
		return err
	}
	if len(args) != 1 || args[0] != "rules" {
		return fmt.Errorf("%w: tenantscope %s", errUsage, sloUsage)
	}
	_, err := io.WriteString(stdout, metering.Rules())
	return err
}
