package metering

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// LineItem is one line of a tenant's bill. Quantities and amounts are
// exact decimals (JSON strings, e.g. "7.5000"); see money.go for the
// rounding rule.
type LineItem struct {
	Kind     string          `json:"kind"` // usage, shared, discount, sla_credit, adjustment
	Meter    string          `json:"meter,omitempty"`
	Quantity decimal.Decimal `json:"quantity"`
	Unit     decimal.Decimal `json:"unit"`
	Detail   string          `json:"detail,omitempty"`
	Amount   decimal.Decimal `json:"amount"`
}

// TenantCost is a tenant's bill for a period.
type TenantCost struct {
	Tenant   string          `json:"tenant"`
	Lines    []LineItem      `json:"line_items"`
	Total    decimal.Decimal `json:"total"`
	Usage    Usage           `json:"usage"`
	ClosedAt *time.Time      `json:"closed_at,omitempty"`
	ClosedBy string          `json:"closed_by,omitempty"`
}

// CostReport is every tenant's bill for a period.
type CostReport struct {
	Period   string          `json:"period"`
	Currency string          `json:"currency"`
	RateCard string          `json:"rate_card"`
	Closed   bool            `json:"closed"`
	Tenants  []TenantCost    `json:"tenants"`
	Total    decimal.Decimal `json:"total"`
}

// Errors callers map to statuses.
var (
	ErrFuture     = errors.New("the period has not started")
	ErrNoRateCard = errors.New("no rate card version is in effect for the period")
	ErrClosed     = errors.New("the period is closed")
	ErrOpen       = errors.New("the period is not closed")
	ErrInvalid    = errors.New("invalid request")
	ErrMoving     = errors.New("a tenant is being moved to another region; try again when the move ends")
)

// priced is the amount of quantity q of p and its detail. A flat price is
// q × price ÷ unit, rounded once. Tiers count units (q ÷ unit, to
// unitScale places) and price each tier's units at its price (the caller
// rounds the sum).
func priced(p Price, q, unit decimal.Decimal) (decimal.Decimal, string) {
	per := func(q decimal.Decimal) string {
		if unit.Equal(decimal.NewFromInt(1)) {
			return q.String()
		}
		return q.String() + " / " + unit.String()
	}
	if len(p.Tiers) == 0 {
		return q.Mul(p.Price.Decimal).DivRound(unit, AmountScale), per(q) + " × " + p.Price.String()
	}
	units := q.DivRound(unit, unitScale)
	total, prev := decimal.Zero, decimal.Zero
	var parts []string
	for _, t := range p.Tiers {
		upper := t.UpTo.Decimal
		if upper.IsZero() || upper.GreaterThan(units) {
			upper = units
		}
		if upper.GreaterThan(prev) {
			n := upper.Sub(prev)
			total = total.Add(n.Mul(t.Price.Decimal))
			parts = append(parts, n.String()+" × "+t.Price.String())
			prev = upper
		}
		if prev.GreaterThanOrEqual(units) {
			break
		}
	}
	detail := strings.Join(parts, " + ")
	if !unit.Equal(decimal.NewFromInt(1)) {
		detail = per(q) + " units: " + detail
	}
	return total, detail
}

// prices is a tenant's price list: the version's, overridden by meter.
func (v *Version) prices(tenant string) []Price {
	out := map[string]Price{}
	var order []string
	for _, p := range v.Prices {
		out[p.Meter] = p
		order = append(order, p.Meter)
	}
	for _, p := range v.Tenants[tenant].Prices {
		if _, ok := out[p.Meter]; !ok {
			order = append(order, p.Meter)
		}
		out[p.Meter] = p
	}
	res := make([]Price, 0, len(order))
	for _, m := range order {
		res = append(res, out[m])
	}
	return res
}

// Cost computes (open period) or reads (closed period) the cost report.
func (s *Service) Cost(ctx context.Context, p Period) (CostReport, error) {
	if p.From.After(s.Now()) {
		return CostReport{}, fmt.Errorf("%w: %s", ErrFuture, p.Name)
	}
	closed, err := s.snapshot(ctx, p)
	if err != nil {
		return CostReport{}, err
	}
	var rep CostReport
	if closed != nil {
		rep = *closed
	} else if rep, err = s.compute(ctx, p); err != nil {
		return rep, err
	}
	// Adjustments are explicit lines on top of the (closed) bill.
	adj, err := s.Adjustments(ctx, p)
	if err != nil {
		return rep, err
	}
	for i := range rep.Tenants {
		t := &rep.Tenants[i]
		for _, a := range adj[t.Tenant] {
			t.Lines = append(t.Lines, LineItem{Kind: "adjustment", Detail: a.Reason + " (" + a.ID + ", by " + a.By + ")", Amount: a.Amount})
			t.Total = t.Total.Add(a.Amount)
		}
	}
	rep.Total = decimal.Zero
	for _, t := range rep.Tenants {
		rep.Total = rep.Total.Add(t.Total)
	}
	return rep, nil
}

func (s *Service) compute(ctx context.Context, p Period) (CostReport, error) {
	v, ok := s.card.For(p.From)
	if !ok {
		return CostReport{}, fmt.Errorf("%w: %s", ErrNoRateCard, p.Name)
	}
	usage, err := s.UsageByTenant(ctx, p.From, p.To)
	if err != nil {
		return CostReport{}, err
	}
	sla, err := s.slaByTenant(ctx, p.From, minTime(p.To, s.Now()), false)
	if err != nil {
		return CostReport{}, err
	}
	rep := CostReport{Period: p.Name, Currency: v.Currency, RateCard: v.Version}
	ids := make([]string, 0, len(usage))
	for id := range usage {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		u := usage[id]
		tc := TenantCost{Tenant: id, Usage: u}
		for _, pr := range v.prices(id) {
			q := u[pr.Meter]
			unit := pr.Unit.Decimal
			if unit.IsZero() {
				unit = decimal.NewFromInt(1)
			}
			a, detail := priced(pr, q, unit)
			tc.Lines = append(tc.Lines, LineItem{Kind: "usage", Meter: pr.Meter, Quantity: q, Unit: unit, Detail: detail, Amount: amount(a)})
		}
		rep.Tenants = append(rep.Tenants, tc)
	}
	hundred := decimal.NewFromInt(100)
	for _, sh := range v.Shared {
		var weights []decimal.Decimal
		total := decimal.Zero
		for _, t := range rep.Tenants {
			w := decimal.NewFromInt(1)
			if sh.Split == "usage_share" {
				w = t.Usage[sh.Meter]
			}
			weights = append(weights, w)
			total = total.Add(w)
		}
		shares := split(amount(sh.Amount.Decimal), weights)
		for i := range rep.Tenants {
			pct := decimal.Zero
			if total.IsPositive() {
				pct = weights[i].Mul(hundred).DivRound(total, 2)
			}
			rep.Tenants[i].Lines = append(rep.Tenants[i].Lines, LineItem{Kind: "shared",
				Detail: fmt.Sprintf("%s: %s%% of %s (%s)", sh.Name, pct.StringFixed(2), sh.Amount.String(), sh.Split), Amount: shares[i]})
		}
	}
	for i := range rep.Tenants {
		t := &rep.Tenants[i]
		subtotal := sum(t.Lines)
		if d := v.Tenants[t.Tenant].DiscountPercent.Decimal; d.IsPositive() {
			t.Lines = append(t.Lines, LineItem{Kind: "discount", Detail: d.String() + "%", Amount: amount(subtotal.Mul(d).Shift(-2).Neg())})
			subtotal = sum(t.Lines)
		}
		if credit, detail := s.credit(sla[t.Tenant]); credit > 0 {
			c := decimal.NewFromFloat(credit)
			t.Lines = append(t.Lines, LineItem{Kind: "sla_credit", Detail: detail, Amount: amount(subtotal.Mul(c).Shift(-2).Neg())})
		}
		t.Total = sum(t.Lines)
		rep.Total = rep.Total.Add(t.Total)
	}
	return rep, nil
}

// split divides total (≥ 0, AmountScale places) in proportion to weights
// (≥ 0): each share is rounded down to AmountScale places, and what is left
// goes one smallest unit (0.0001) each to the largest remainders (the first
// on ties), so the shares add up to total exactly.
func split(total decimal.Decimal, weights []decimal.Decimal) []decimal.Decimal {
	out := make([]decimal.Decimal, len(weights))
	sumW := decimal.Zero
	for _, w := range weights {
		sumW = sumW.Add(w)
	}
	if !sumW.IsPositive() {
		return out
	}
	rems := make([]decimal.Decimal, len(weights))
	left := total
	for i, w := range weights {
		exact := total.Mul(w).DivRound(sumW, AmountScale+12)
		out[i] = exact.RoundDown(AmountScale)
		rems[i] = exact.Sub(out[i])
		left = left.Sub(out[i])
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]].GreaterThan(rems[order[b]]) })
	unit := decimal.New(1, -AmountScale)
	for _, i := range order {
		if !left.IsPositive() {
			break
		}
		out[i] = out[i].Add(unit)
		left = left.Sub(unit)
	}
	return out
}

// sum is the exact sum of the (rounded) line amounts.
func sum(lines []LineItem) decimal.Decimal {
	total := decimal.Zero
	for _, l := range lines {
		total = total.Add(l.Amount)
	}
	return total
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// snapshot reads a closed period, or nil.
func (s *Service) snapshot(ctx context.Context, p Period) (*CostReport, error) {
	rep := &CostReport{Period: p.Name, Closed: true}
	for _, st := range s.regions() {
		var rows []struct {
			Tenant   string          `ch:"tenant_id"`
			Lines    string          `ch:"line_items"`
			Total    decimal.Decimal `ch:"total"`
			Currency string          `ch:"currency"`
			RateCard string          `ch:"rate_card"`
			ClosedAt time.Time       `ch:"closed_at"`
			ClosedBy string          `ch:"closed_by"`
		}
		if err := st.Select(ctx, &rows, "SELECT tenant_id, line_items, total, currency, rate_card, closed_at, closed_by FROM cost_snapshots FINAL WHERE period = ? ORDER BY tenant_id", p.Name); err != nil {
			return nil, fmt.Errorf("cost snapshot: %w", err)
		}
		for _, r := range rows {
			tc := TenantCost{Tenant: r.Tenant, ClosedAt: &r.ClosedAt, ClosedBy: r.ClosedBy}
			if err := json.Unmarshal([]byte(r.Lines), &struct {
				Lines *[]LineItem `json:"line_items"`
				Usage *Usage      `json:"usage"`
			}{&tc.Lines, &tc.Usage}); err != nil {
				return nil, fmt.Errorf("cost snapshot of %s: %w", r.Tenant, err)
			}
			tc.Total = r.Total
			rep.Currency, rep.RateCard = r.Currency, r.RateCard
			rep.Tenants = append(rep.Tenants, tc)
		}
	}
	if len(rep.Tenants) == 0 {
		return nil, nil
	}
	sort.Slice(rep.Tenants, func(i, j int) bool { return rep.Tenants[i].Tenant < rep.Tenants[j].Tenant })
	return rep, nil
}

// Close snapshots a finished period: its report never changes after.
func (s *Service) Close(ctx context.Context, p Period, by string) (CostReport, error) {
	if p.To.After(s.Now()) {
		return CostReport{}, fmt.Errorf("%w: %s ends %s; close it after that", ErrInvalid, p.Name, p.To.Format(time.DateOnly))
	}
	// Every tenant is held for writing until its snapshot is stored: a
	// region move waits, and one in progress refuses the close.
	ids := make([]string, 0, len(s.cfg.Tenants))
	for _, t := range s.cfg.Tenants {
		ids = append(ids, t.ID)
	}
	release, blocked := s.place.WriteAll(ids)
	if blocked != "" {
		return CostReport{}, fmt.Errorf("%w (tenant %s)", ErrMoving, blocked)
	}
	defer release()
	if c, err := s.snapshot(ctx, p); err != nil {
		return CostReport{}, err
	} else if c != nil {
		return CostReport{}, fmt.Errorf("%w: %s was closed by %s", ErrClosed, p.Name, c.Tenants[0].ClosedBy)
	}
	rep, err := s.compute(ctx, p)
	if err != nil {
		return rep, err
	}
	now := s.Now().UTC().Truncate(time.Millisecond)
	for i := range rep.Tenants {
		t := &rep.Tenants[i]
		st, err := s.StoreOf(t.Tenant)
		if err != nil {
			return rep, err
		}
		body, err := json.Marshal(map[string]any{"line_items": t.Lines, "usage": t.Usage})
		if err != nil {
			return rep, err
		}
		if err := st.Exec(ctx, "INSERT INTO cost_snapshots (period, tenant_id, line_items, total, currency, rate_card, closed_at, closed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			p.Name, t.Tenant, string(body), t.Total, rep.Currency, rep.RateCard, now, by); err != nil {
			return rep, fmt.Errorf("close %s: %w", p.Name, err)
		}
		t.ClosedAt, t.ClosedBy = &now, by
	}
	rep.Closed = true
	return rep, nil
}

// Adjustment is an explicit correction of a closed period.
type Adjustment struct {
	ID     string          `json:"id"`
	Period string          `json:"period"`
	Tenant string          `json:"tenant"`
	Amount decimal.Decimal `json:"amount"`
	Reason string          `json:"reason"`
	At     time.Time       `json:"created_at"`
	By     string          `json:"created_by"`
}

// Adjust adds a correction to a closed period of tenant: a non-zero amount
// of at most 10^12 with at most AmountScale decimal places.
func (s *Service) Adjust(ctx context.Context, p Period, tenant string, amt decimal.Decimal, reason, by string) (Adjustment, error) {
	if _, err := s.StoreOf(tenant); err != nil {
		return Adjustment{}, fmt.Errorf("%w: unknown tenant %q", ErrInvalid, tenant)
	}
	release, writable := s.place.Write(tenant)
	if !writable {
		return Adjustment{}, fmt.Errorf("%w (tenant %s)", ErrMoving, tenant)
	}
	defer release()
	st, err := s.StoreOf(tenant) // where the tenant lives while it is held
	if err != nil {
		return Adjustment{}, err
	}
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > 500 {
		return Adjustment{}, fmt.Errorf("%w: a reason (1 to 500 characters) is required", ErrInvalid)
	}
	if amt.IsZero() || amt.Abs().GreaterThan(decimal.New(1, 12)) || !amt.Equal(amount(amt)) {
		return Adjustment{}, fmt.Errorf("%w: amount must be a non-zero number of at most 10^12 with at most %d decimal places", ErrInvalid, AmountScale)
	}
	c, err := s.snapshot(ctx, p)
	if err != nil {
		return Adjustment{}, err
	}
	if c == nil {
		return Adjustment{}, fmt.Errorf("%w: %s is open; its report follows usage until it is closed", ErrOpen, p.Name)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	a := Adjustment{ID: "adj_" + hex.EncodeToString(b), Period: p.Name, Tenant: tenant, Amount: amount(amt), Reason: reason, At: s.Now().UTC().Truncate(time.Millisecond), By: by}
	if err := st.Exec(ctx, "INSERT INTO cost_adjustments (id, period, tenant_id, amount, reason, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
		a.ID, a.Period, a.Tenant, a.Amount, a.Reason, a.At, a.By); err != nil {
		return a, err
	}
	return a, nil
}

// Adjustments lists a period's corrections by tenant.
func (s *Service) Adjustments(ctx context.Context, p Period) (map[string][]Adjustment, error) {
	out := map[string][]Adjustment{}
	for _, st := range s.regions() {
		var rows []struct {
			ID     string          `ch:"id"`
			Tenant string          `ch:"tenant_id"`
			Amount decimal.Decimal `ch:"amount"`
			Reason string          `ch:"reason"`
			At     time.Time       `ch:"created_at"`
			By     string          `ch:"created_by"`
		}
		if err := st.Select(ctx, &rows, "SELECT id, tenant_id, amount, reason, created_at, created_by FROM cost_adjustments FINAL WHERE period = ? ORDER BY created_at", p.Name); err != nil {
			return nil, fmt.Errorf("adjustments: %w", err)
		}
		for _, r := range rows {
			a := Adjustment{ID: r.ID, Period: p.Name, Tenant: r.Tenant, Amount: r.Amount, Reason: r.Reason, At: r.At, By: r.By}
			out[a.Tenant] = append(out[a.Tenant], a)
		}
	}
	return out, nil
}
