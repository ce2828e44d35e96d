package ui

import (
	"errors"
	"fmt"
	"html"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/shopspring/decimal"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/metering"
)

// period reads ?period= (default: this month) for a report page.
func (u *UI) period(w http.ResponseWriter, r *http.Request, s *Session) (metering.Period, bool) {
	v := r.URL.Query().Get("period")
	if v == "" {
		v = time.Now().UTC().Format("2006-01")
	}
	p, err := metering.ParsePeriod(v)
	if err == nil && p.From.After(time.Now()) {
		err = fmt.Errorf("period %s has not started", p.Name)
	}
	if err != nil {
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, err.Error()))
		return p, false
	}
	return p, true
}

// needMetering renders an error page when metering is not wired.
func (u *UI) needMetering(w http.ResponseWriter, r *http.Request, s *Session) bool {
	if u.Metering == nil {
		u.render(w, r, http.StatusServiceUnavailable, errorPage(s, http.StatusServiceUnavailable, "Metering is not running in this process."))
		return false
	}
	return true
}

// crossOnly checks a capability held across tenants (a page of all tenants).
func (u *UI) crossOnly(w http.ResponseWriter, r *http.Request, s *Session, c identity.Capability, what string) bool {
	if identity.Scope(s.principal(), c, "") != nil {
		u.render(w, r, http.StatusForbidden, errorPage(s, http.StatusForbidden, "Your role may not "+what+"."))
		return false
	}
	return u.needMetering(w, r, s)
}

func (u *UI) reportError(w http.ResponseWriter, r *http.Request, s *Session, err error) {
	switch {
	case errors.Is(err, metering.ErrNoRateCard), errors.Is(err, metering.ErrFuture), errors.Is(err, metering.ErrInvalid):
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, err.Error()))
	case errors.Is(err, metering.ErrClosed), errors.Is(err, metering.ErrOpen), errors.Is(err, metering.ErrMoving):
		u.render(w, r, http.StatusConflict, errorPage(s, http.StatusConflict, err.Error()))
	default:
		u.log.Error().Err(err).Msg("report")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The report could not be computed."))
	}
}

// CostView is the finance page's data.
type CostView struct {
	Period  string
	Sort    string
	Report  metering.CostReport
	Message string
}

// costOf checks s may read the cost of the path's tenant (every tenant's
// without one), reads ?period= and computes the report (the tenant's only
// when there is one), rendering the error page otherwise.
func (u *UI) costOf(w http.ResponseWriter, r *http.Request, s *Session) (string, metering.Period, metering.CostReport, bool) {
	tenant := r.PathValue("tenantId")
	if tenant == "" {
		if !u.crossOnly(w, r, s, identity.ReadCost, "read cost reports") {
			return "", metering.Period{}, metering.CostReport{}, false
		}
	} else if _, _, ok := u.allow(w, r, s, identity.ReadCost, "read this tenant's cost"); !ok || !u.needMetering(w, r, s) {
		return "", metering.Period{}, metering.CostReport{}, false
	}
	p, ok := u.period(w, r, s)
	if !ok {
		return "", p, metering.CostReport{}, false
	}
	rep, err := u.Metering.Cost(r.Context(), p)
	if err != nil {
		u.reportError(w, r, s, err)
		return "", p, rep, false
	}
	if tenant != "" {
		rep = rep.Only(tenant)
	}
	return tenant, p, rep, true
}

func (u *UI) costPage(w http.ResponseWriter, r *http.Request, s *Session) {
	_, p, rep, ok := u.costOf(w, r, s)
	if !ok {
		return
	}
	sortBy := r.URL.Query().Get("sort")
	switch sortBy {
	case "tenant":
		sort.Slice(rep.Tenants, func(i, j int) bool { return rep.Tenants[i].Tenant < rep.Tenants[j].Tenant })
	default:
		sortBy = "total"
		sort.SliceStable(rep.Tenants, func(i, j int) bool { return rep.Tenants[i].Total.GreaterThan(rep.Tenants[j].Total) })
	}
	u.render(w, r, http.StatusOK, costPage(s, CostView{Period: p.Name, Sort: sortBy, Report: rep}))
}

func (u *UI) costDownload(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, p, rep, ok := u.costOf(w, r, s)
	if !ok {
		return
	}
	format := r.PathValue("format")
	if format != "csv" && format != "json" {
		u.render(w, r, http.StatusNotFound, errorPage(s, http.StatusNotFound, "Downloads are csv or json."))
		return
	}
	name := "cost-" + p.Name
	if tenant != "" {
		name = tenant + "-" + name
	}
	ct := map[string]string{"csv": "text/csv; charset=utf-8", "json": "application/json"}[format]
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+"."+format+`"`)
	if err := metering.WriteCost(w, rep, format); err != nil {
		u.log.Warn().Err(err).Msg("cost download")
	}
}

func (u *UI) closePeriod(w http.ResponseWriter, r *http.Request, s *Session) {
	if !u.crossOnly(w, r, s, identity.ManageCost, "close periods") || !u.checkCSRF(w, r, s) {
		return
	}
	p, err := metering.ParsePeriod(r.PostFormValue("period"))
	if err != nil {
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, err.Error()))
		return
	}
	rep, err := u.Metering.Close(r.Context(), p, s.User)
	if err != nil {
		u.reportError(w, r, s, err)
		return
	}
	u.auditFinance(r, s, config.PlatformTenant, "cost.period_closed", p.Name, map[string]string{"total": fmt.Sprint(rep.Total), "currency": rep.Currency, "rate_card": rep.RateCard})
	http.Redirect(w, r, "/ui/finance?period="+p.Name, http.StatusSeeOther)
}

func (u *UI) auditFinance(r *http.Request, s *Session, chain, action, target string, meta map[string]string) {
	u.publish(r, auditRecord(chain, s.actor(r), action, "cost_period", target, meta))
}

// TenantCostView is a tenant's bill page.
type TenantCostView struct {
	Period string
	Tenant string
	Cost   metering.TenantCost
	Report metering.CostReport
	Chart  templ.Component
	Days   []DayValue
}

// DayValue is one bar of a daily chart.
type DayValue struct {
	Day   string
	Value float64
}

func (u *UI) tenantCostPage(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, p, rep, ok := u.costOf(w, r, s)
	if !ok {
		return
	}
	var tc metering.TenantCost
	if len(rep.Tenants) == 1 {
		tc = rep.Tenants[0]
	}
	days, err := u.Metering.DailyUsage(r.Context(), tenant, p.From, p.To)
	if err != nil {
		u.reportError(w, r, s, err)
		return
	}
	// Each usage line's amount spread over the days by their share of its meter.
	var series []DayValue
	for _, d := range days {
		v := decimal.Zero
		for _, l := range tc.Lines {
			if l.Kind == "usage" && l.Quantity.IsPositive() {
				v = v.Add(l.Amount.Mul(d.Usage[l.Meter]).DivRound(l.Quantity, 4))
			}
		}
		series = append(series, DayValue{Day: d.Day.Format("01-02"), Value: v.InexactFloat64()}) // a bar's height
	}
	u.render(w, r, http.StatusOK, tenantCostPage(s, TenantCostView{Period: p.Name, Tenant: tenant, Cost: tc, Report: rep,
		Chart: barChart("Daily cost of usage, "+tenant+", "+p.Name+" ("+rep.Currency+")", series, "%.2f"), Days: series}))
}

// SLAView is the SLA overview page.
type SLAView struct {
	Period  string
	Tenants []metering.SLA
}

func (u *UI) slaPage(w http.ResponseWriter, r *http.Request, s *Session) {
	if !u.crossOnly(w, r, s, identity.ReadSLA, "read SLA reports") {
		return
	}
	p, ok := u.period(w, r, s)
	if !ok {
		return
	}
	all, err := u.Metering.SLAByTenant(r.Context(), p.From, p.To)
	if err != nil {
		u.reportError(w, r, s, err)
		return
	}
	v := SLAView{Period: p.Name}
	for _, x := range all {
		v.Tenants = append(v.Tenants, x)
	}
	sort.Slice(v.Tenants, func(i, j int) bool {
		return v.Tenants[i].BudgetRemaining < v.Tenants[j].BudgetRemaining || v.Tenants[i].BudgetRemaining == v.Tenants[j].BudgetRemaining && v.Tenants[i].Tenant < v.Tenants[j].Tenant
	})
	u.render(w, r, http.StatusOK, slaPage(s, v))
}

// TenantSLAView is a tenant's SLA page.
type TenantSLAView struct {
	Period string
	Tenant string
	SLA    metering.TenantSLA
	Chart  templ.Component
}

func (u *UI) tenantSLAPage(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ReadSLA, "read this tenant's SLA")
	if !ok || !u.needMetering(w, r, s) {
		return
	}
	p, ok := u.period(w, r, s)
	if !ok {
		return
	}
	sla, err := u.Metering.TenantSLA(r.Context(), tenant, p.From, p.To)
	if err != nil {
		u.reportError(w, r, s, err)
		return
	}
	var series []DayValue
	for _, d := range sla.Days {
		series = append(series, DayValue{Day: d.Day.Format("01-02"), Value: 100 * d.Remaining})
	}
	u.render(w, r, http.StatusOK, tenantSLAPage(s, TenantSLAView{Period: p.Name, Tenant: tenant, SLA: sla,
		Chart: barChart(fmt.Sprintf("Error budget left (%%), %s, %s", tenant, p.Name), series, "%.1f")}))
}

// barChart draws values as an accessible SVG bar chart (negative values
// below the axis), with the numbers in a <title> per bar.
func barChart(title string, data []DayValue, format string) templ.Component {
	const w, h, pad = 720.0, 220.0, 28.0
	hi, lo := 0.0, 0.0
	for _, d := range data {
		hi, lo = math.Max(hi, d.Value), math.Min(lo, d.Value)
	}
	if hi == lo {
		hi = lo + 1
	}
	scale := (h - 2*pad) / (hi - lo)
	zero := pad + hi*scale
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" data-testid="chart" viewBox="0 0 %g %g" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg"><title>%s</title>`,
		w, h, html.EscapeString(title), html.EscapeString(title))
	fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#52606d"/>`, pad, w-pad, zero, zero)
	fmt.Fprintf(&b, `<text x="2" y="%g" font-size="11" fill="#334e68">%s</text><text x="2" y="%g" font-size="11" fill="#334e68">%s</text>`,
		pad-4, html.EscapeString(fmt.Sprintf(format, hi)), h-pad+12, html.EscapeString(fmt.Sprintf(format, lo)))
	if n := len(data); n > 0 {
		bw := (w - 2*pad) / float64(n)
		for i, d := range data {
			y, bh := zero-d.Value*scale, d.Value*scale
			fill := "#2680c2"
			if d.Value < 0 {
				y, bh, fill = zero, -d.Value*scale, "#ab091e"
			}
			fmt.Fprintf(&b, `<rect data-testid="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`,
				pad+float64(i)*bw+1, y, math.Max(bw-2, 1), bh, fill, html.EscapeString(d.Day), html.EscapeString(fmt.Sprintf(format, d.Value)))
			if i%5 == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%g" font-size="10" fill="#334e68">%s</text>`, pad+float64(i)*bw, h-6, html.EscapeString(d.Day))
			}
		}
	}
	b.WriteString(`</svg>`)
	return templ.Raw(b.String())
}
