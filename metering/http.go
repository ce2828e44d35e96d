package metering

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
)

// API serves cost, usage and SLA reports.
type API struct {
	Keys    *identity.Keys
	Service *Service
	// Audit records closings and adjustments (platform and tenant chains).
	Audit auditlog.Publisher
}

// Register mounts the routes.
func (a *API) Register(mux *http.ServeMux) {
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /api/v1/cost":                                 a.report(identity.ReadCost, a.cost),
		"GET /api/v1/tenants/{tenantId}/cost":              a.report(identity.ReadCost, a.tenantCost),
		"GET /api/v1/tenants/{tenantId}/usage":             a.report(identity.ReadCost, a.usage),
		"POST /api/v1/cost/periods/{period}/close":         a.close,
		"POST /api/v1/tenants/{tenantId}/cost/adjustments": a.adjust,
		"GET /api/v1/sla":                                  a.report(identity.ReadSLA, a.slaAll),
		"GET /api/v1/tenants/{tenantId}/sla":               a.report(identity.ReadSLA, a.sla),
		"GET /api/v1/margin":                               a.report(identity.ReadCost, a.margin),
	} {
		mux.Handle(pattern, identity.WithCorrelation(h))
	}
}

func (a *API) require(w http.ResponseWriter, r *http.Request, c identity.Capability) (identity.Principal, string, bool) {
	s := a.Service
	return a.Keys.Require(w, r, c, auditlog.Denied(a.Audit, s.StoreOf, s.log, r, c))
}

func writeJSON(w http.ResponseWriter, v any) { identity.WriteJSON(w, http.StatusOK, v) }

// period reads ?period=, defaulting to the current month.
func (a *API) period(w http.ResponseWriter, r *http.Request) (Period, bool) {
	v := r.URL.Query().Get("period")
	if v == "" {
		v = a.Service.Now().UTC().Format("2006-01")
	}
	p, err := ParsePeriod(v)
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return p, false
	}
	if p.From.After(a.Service.Now()) {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("period %s has not started", p.Name))
		return p, false
	}
	return p, true
}

var answers = []identity.Answer{
	{Err: ErrInvalid, Status: http.StatusBadRequest, Code: "bad_request"},
	{Err: ErrFuture, Status: http.StatusBadRequest, Code: "bad_request"},
	{Err: ErrNoRateCard, Status: http.StatusBadRequest, Code: "bad_request"},
	{Err: ErrClosed, Status: http.StatusConflict, Code: "conflict"},
	{Err: ErrMoving, Status: http.StatusConflict, Code: "conflict"},
	{Err: ErrOpen, Status: http.StatusConflict, Code: "conflict"},
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	identity.FailWith(w, r, err, answers, a.Service.log, "metering", "the report could not be computed")
}

// report is a GET route: the caller holds c (for the path's tenant when
// there is one), ?period= is read (default: this month), and do's answer is
// written (a cost report as ?format=json or csv).
func (a *API) report(c identity.Capability, do func(r *http.Request, tenant string, p Period) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, tenant, ok := a.require(w, r, c)
		if !ok {
			return
		}
		p, ok := a.period(w, r)
		if !ok {
			return
		}
		v, err := do(r, tenant, p)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if rep, isCost := v.(CostReport); isCost {
			a.writeCost(w, r, rep)
			return
		}
		writeJSON(w, v)
	}
}

func (a *API) cost(r *http.Request, _ string, p Period) (any, error) {
	return a.Service.Cost(r.Context(), p)
}

func (a *API) tenantCost(r *http.Request, tenant string, p Period) (any, error) {
	rep, err := a.Service.Cost(r.Context(), p)
	return rep.Only(tenant), err
}

func (a *API) usage(r *http.Request, tenant string, p Period) (any, error) {
	days, err := a.Service.DailyUsage(r.Context(), tenant, p.From, p.To)
	total := Usage{}
	for _, d := range days {
		for m, v := range d.Usage {
			total[m] = total[m].Add(v)
		}
	}
	return map[string]any{"tenant": tenant, "period": p.Name, "usage": total, "days": days}, err
}

func (a *API) slaAll(r *http.Request, _ string, p Period) (any, error) {
	sla, err := a.Service.SLAByTenant(r.Context(), p.From, p.To)
	return map[string]any{"period": p.Name, "tenants": sla}, err
}

func (a *API) sla(r *http.Request, tenant string, p Period) (any, error) {
	sla, err := a.Service.TenantSLA(r.Context(), tenant, p.From, p.To)
	return map[string]any{"period": p.Name, "tenant": tenant, "sla": sla}, err
}

func (a *API) margin(r *http.Request, _ string, p Period) (any, error) {
	ms, currency, err := a.Service.Margins(r.Context(), p)
	return map[string]any{"period": p.Name, "currency": currency, "tenants": ms}, err
}

// writeCost answers in ?format=json (default) or csv.
func (a *API) writeCost(w http.ResponseWriter, r *http.Request, rep CostReport) {
	format := r.URL.Query().Get("format")
	switch format {
	case "", "json":
		writeJSON(w, rep)
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="cost-`+rep.Period+`.csv"`)
		_ = WriteCost(w, rep, "csv") //nolint:errcheck // client gone
	default:
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "format must be json or csv")
	}
}

// Only is rep narrowed to one tenant (the scoping of every per-tenant read
// of a report).
func (rep CostReport) Only(tenant string) CostReport {
	out := rep
	out.Tenants, out.Total = nil, decimal.Zero
	for _, t := range rep.Tenants {
		if t.Tenant == tenant {
			out.Tenants = append(out.Tenants, t)
			out.Total = t.Total
		}
	}
	return out
}

func (a *API) close(w http.ResponseWriter, r *http.Request) {
	pr, _, ok := a.require(w, r, identity.ManageCost)
	if !ok {
		return
	}
	p, err := ParsePeriod(r.PathValue("period"))
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rep, err := a.Service.Close(r.Context(), p, pr.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.record(r, config.PlatformTenant, pr, "cost.period_closed", p.Name, map[string]string{"total": fmt.Sprint(rep.Total), "currency": rep.Currency, "rate_card": rep.RateCard, "tenants": fmt.Sprint(len(rep.Tenants))}, nil)
	writeJSON(w, rep)
}

func (a *API) adjust(w http.ResponseWriter, r *http.Request) {
	pr, tenant, ok := a.require(w, r, identity.ManageCost)
	if !ok {
		return
	}
	var body struct {
		Period string          `json:"period"` // amount: a JSON number or string, read exactly
		Amount decimal.Decimal `json:"amount"`
		Reason string          `json:"reason"`
	}
	if !identity.DecodeJSON(w, r, &body, 8192, `JSON {"period": "2026-10", "amount": -12.5, "reason": "…"}`) {
		return
	}
	p, err := ParsePeriod(body.Period)
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	adj, err := a.Service.Adjust(r.Context(), p, tenant, body.Amount, body.Reason, pr.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	meta := map[string]string{"period": p.Name, "amount": fmt.Sprint(adj.Amount), "adjustment": adj.ID}
	changes := map[string]any{"after": map[string]any{"amount": adj.Amount, "reason": adj.Reason}}
	a.record(r, config.PlatformTenant, pr, "cost.adjusted", tenant, meta, changes)
	a.record(r, tenant, pr, "cost.adjusted", tenant, meta, changes)
	identity.WriteJSON(w, http.StatusCreated, adj)
}

// record audits a finance action.
func (a *API) record(r *http.Request, chain string, p identity.Principal, action, target string, meta map[string]string, changes any) {
	rec := auditlog.Record{TenantID: chain, Time: time.Now().UTC(), Actor: auditlog.Actor{Type: "api_key", ID: p.Name, Name: p.Role, UserAgent: r.UserAgent()},
		Action: action, Target: auditlog.Target{Type: "cost_period", ID: target}, Outcome: "success", SourceService: "tenantscope",
		CorrelationID: identity.CorrelationID(r.Context()), Metadata: meta}
	if changes != nil {
		rec.Changes, _ = json.Marshal(changes) //nolint:errcheck // plain values
	}
	if err := a.Audit.Record(r.Context(), rec); err != nil {
		a.Service.log.Warn().Err(err).Str("action", action).Msg("could not audit a finance action")
	}
}
