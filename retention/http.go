package retention

import (
	"errors"
	"net/http"
	"time"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/identity"
)

// API serves the retention routes under /api/v1/tenants/{tenantId}/.
type API struct {
	Keys    *identity.Keys
	Service *Service
}

// Register mounts the routes.
func (a *API) Register(mux *http.ServeMux) {
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /api/v1/tenants/{tenantId}/retention":            a.policies,
		"PUT /api/v1/tenants/{tenantId}/retention/{signal}":   a.setPolicy,
		"GET /api/v1/tenants/{tenantId}/holds":                a.holds,
		"POST /api/v1/tenants/{tenantId}/holds":               a.placeHold,
		"POST /api/v1/tenants/{tenantId}/holds/{holdId}/lift": a.liftHold,
		"GET /api/v1/tenants/{tenantId}/erasures":             a.erasures,
		"POST /api/v1/tenants/{tenantId}/erasures":            a.erase,
		"POST /api/v1/tenants/{tenantId}/purge":               a.purge,
		"GET /api/v1/tenants/{tenantId}/purge-runs":           a.purgeRuns,
		"GET /api/v1/tenants/{tenantId}/residency":            a.residency,
	} {
		mux.Handle(pattern, identity.WithCorrelation(h))
	}
}

func (a *API) require(w http.ResponseWriter, r *http.Request, c identity.Capability) (identity.Principal, string, bool) {
	s := a.Service
	return a.Keys.Require(w, r, c, auditlog.Denied(s.audit, s.StoreOf, s.log, r, c))
}

func actor(p identity.Principal, r *http.Request) auditlog.Actor {
	return auditlog.Actor{Type: "api_key", ID: p.Name, Name: p.Role, IP: r.RemoteAddr, UserAgent: r.UserAgent()}
}

// decode reads a small JSON body, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return identity.DecodeJSON(w, r, v, 16<<10, "a JSON object with the documented fields")
}

// Fail maps an engine error to the API's error body.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, ErrNotFound):
		identity.WriteError(w, r, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrConflict):
		identity.WriteError(w, r, http.StatusConflict, "conflict", err.Error())
	default:
		a.Service.log.Error().Err(err).Str("correlation_id", identity.CorrelationID(r.Context())).Msg("retention")
		identity.WriteError(w, r, http.StatusInternalServerError, "internal", "the retention engine failed; see the logs with this correlation id")
	}
}

func (a *API) policies(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r, identity.ReadRetention)
	if !ok {
		return
	}
	pols, err := a.Service.Policies(r.Context(), tenant)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"tenant": tenant, "policies": pols, "bounds": map[string]any{
		"minimum": a.Service.cfg.Retention.Minimum, "maximum": a.Service.cfg.Retention.Maximum}})
}

func (a *API) setPolicy(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	var body struct {
		Days   int    `json:"days"`
		Reason string `json:"reason"`
	}
	if !decode(w, r, &body) {
		return
	}
	pol, err := a.Service.SetPolicy(r.Context(), tenant, r.PathValue("signal"), body.Days, actor(p, r), body.Reason)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, pol)
}

func (a *API) holds(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	hs, err := a.Service.Holds(r.Context(), tenant)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": hs})
}

func (a *API) placeHold(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	var body struct {
		Kind    string     `json:"kind"`
		Subject string     `json:"subject"`
		From    *time.Time `json:"from"`
		To      *time.Time `json:"to"`
		Reason  string     `json:"reason"`
	}
	if !decode(w, r, &body) {
		return
	}
	h, err := a.Service.PlaceHold(r.Context(), tenant, body.Kind, body.Subject, body.From, body.To, body.Reason, actor(p, r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusCreated, h)
}

func (a *API) liftHold(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if !decode(w, r, &body) {
		return
	}
	h, err := a.Service.LiftHold(r.Context(), tenant, r.PathValue("holdId"), body.Reason, actor(p, r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, h)
}

func (a *API) erasures(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	es, err := a.Service.Erasures(r.Context(), tenant)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": es})
}

func (a *API) erase(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	var body struct {
		Subject string `json:"subject"`
		DryRun  bool   `json:"dry_run"`
	}
	if !decode(w, r, &body) {
		return
	}
	e, err := a.Service.Erase(r.Context(), tenant, body.Subject, body.DryRun, p.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if e.Status == "blocked_by_hold" {
		status = http.StatusConflict
	}
	identity.WriteJSON(w, status, e)
}

func (a *API) purge(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r, identity.ManageRetention)
	if !ok {
		return
	}
	rs, err := a.Service.Purge(r.Context(), tenant, "on demand", actor(p, r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": rs})
}

func (a *API) purgeRuns(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r, identity.ReadRetention)
	if !ok {
		return
	}
	rs, err := a.Service.PurgeRuns(r.Context(), tenant, 50)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": rs})
}

func (a *API) residency(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r, identity.ReadRetention)
	if !ok {
		return
	}
	rep, err := a.Service.Residency(r.Context(), tenant)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, rep)
}
