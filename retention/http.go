package retention

import (
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
	s := a.Service
	type none struct{}
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /api/v1/tenants/{tenantId}/retention": route(a, identity.ReadRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			pols, err := s.Policies(r.Context(), tenant)
			return map[string]any{"tenant": tenant, "policies": pols, "bounds": map[string]any{"minimum": s.cfg.Retention.Minimum, "maximum": s.cfg.Retention.Maximum}}, http.StatusOK, err
		}),
		"PUT /api/v1/tenants/{tenantId}/retention/{signal}": route(a, identity.ManageRetention, true, func(r *http.Request, p identity.Principal, tenant string, b struct {
			Days   int    `json:"days"`
			Reason string `json:"reason"`
		}) (any, int, error) {
			pol, err := s.SetPolicy(r.Context(), tenant, r.PathValue("signal"), b.Days, auditlog.KeyActor(p, r), b.Reason)
			return pol, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/holds": route(a, identity.ManageRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			hs, err := s.Holds(r.Context(), tenant)
			return map[string]any{"data": hs}, http.StatusOK, err
		}),
		"POST /api/v1/tenants/{tenantId}/holds": route(a, identity.ManageRetention, true, func(r *http.Request, p identity.Principal, tenant string, b struct {
			Kind    string     `json:"kind"`
			Subject string     `json:"subject"`
			From    *time.Time `json:"from"`
			To      *time.Time `json:"to"`
			Reason  string     `json:"reason"`
		}) (any, int, error) {
			h, err := s.PlaceHold(r.Context(), tenant, b.Kind, b.Subject, b.From, b.To, b.Reason, auditlog.KeyActor(p, r))
			return h, http.StatusCreated, err
		}),
		"POST /api/v1/tenants/{tenantId}/holds/{holdId}/lift": route(a, identity.ManageRetention, true, func(r *http.Request, p identity.Principal, tenant string, b struct {
			Reason string `json:"reason"`
		}) (any, int, error) {
			h, err := s.LiftHold(r.Context(), tenant, r.PathValue("holdId"), b.Reason, auditlog.KeyActor(p, r))
			return h, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/erasures": route(a, identity.ManageRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			es, err := s.Erasures(r.Context(), tenant)
			return map[string]any{"data": es}, http.StatusOK, err
		}),
		"POST /api/v1/tenants/{tenantId}/erasures": route(a, identity.ManageRetention, true, func(r *http.Request, p identity.Principal, tenant string, b struct {
			Subject string `json:"subject"`
			DryRun  bool   `json:"dry_run"`
		}) (any, int, error) {
			e, err := s.Erase(r.Context(), tenant, b.Subject, b.DryRun, p.Name)
			if e.Status == "blocked_by_hold" {
				return e, http.StatusConflict, err
			}
			return e, http.StatusOK, err
		}),
		"POST /api/v1/tenants/{tenantId}/purge": route(a, identity.ManageRetention, false, func(r *http.Request, p identity.Principal, tenant string, _ none) (any, int, error) {
			rs, err := s.Purge(r.Context(), tenant, "on demand", auditlog.KeyActor(p, r))
			return map[string]any{"data": rs}, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/purge-runs": route(a, identity.ReadRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			rs, err := s.PurgeRuns(r.Context(), tenant, 50)
			return map[string]any{"data": rs}, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/events": route(a, identity.ReadEvents, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			evs, err := s.Events(r.Context(), tenant, r.URL.Query().Get("action"), 100)
			return map[string]any{"data": evs}, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/residency": route(a, identity.ReadRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			rep, err := s.Residency(r.Context(), tenant)
			return rep, http.StatusOK, err
		}),
		"GET /api/v1/tenants/{tenantId}/region-moves": route(a, identity.ReadRetention, false, func(r *http.Request, _ identity.Principal, tenant string, _ none) (any, int, error) {
			ms, err := s.Moves(r.Context(), tenant)
			return map[string]any{"data": ms}, http.StatusOK, err
		}),
		"POST /api/v1/tenants/{tenantId}/region-moves": route(a, identity.ManageRetention, true, func(r *http.Request, p identity.Principal, tenant string, b struct {
			To     string `json:"to_region"`
			Reason string `json:"reason"`
		}) (any, int, error) {
			m, err := s.StartMove(r.Context(), tenant, b.To, auditlog.KeyActor(p, r), b.Reason)
			return m, http.StatusAccepted, err
		}),
	} {
		mux.Handle(pattern, identity.WithCorrelation(h))
	}
}

// route is one handler: the caller must hold c for the path's tenant; with
// withBody the JSON body (unknown fields refused) is decoded into B; do's
// answer is written with its status, or its error mapped.
func route[B any](a *API, c identity.Capability, withBody bool, do func(r *http.Request, p identity.Principal, tenant string, b B) (any, int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, tenant, ok := a.require(w, r, c)
		if !ok {
			return
		}
		var b B
		if withBody && !identity.DecodeJSON(w, r, &b, 16<<10, "a JSON object with the documented fields") {
			return
		}
		v, status, err := do(r, p, tenant, b)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		identity.WriteJSON(w, status, v)
	}
}

func (a *API) require(w http.ResponseWriter, r *http.Request, c identity.Capability) (identity.Principal, string, bool) {
	s := a.Service
	return a.Keys.Require(w, r, c, auditlog.Denied(s.audit, s.StoreOf, s.log, r, c))
}

var answers = []identity.Answer{
	{Err: ErrInvalid, Status: http.StatusBadRequest, Code: "bad_request"},
	{Err: ErrNotFound, Status: http.StatusNotFound, Code: "not_found"},
	{Err: ErrConflict, Status: http.StatusConflict, Code: "conflict"},
}

// fail maps an engine error to the API's error body.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	identity.FailWith(w, r, err, answers, a.Service.log, "retention", "the retention engine failed; see the logs with this correlation id")
}
