package apikeys

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/identity"
)

// API serves the key management routes under /api/v1/tenants/{tenantId}/api-keys.
type API struct {
	Keys  *identity.Keys
	Store *Store
}

// Register mounts the routes.
func (a *API) Register(mux *http.ServeMux) {
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /api/v1/tenants/{tenantId}/api-keys":            a.list,
		"POST /api/v1/tenants/{tenantId}/api-keys":           a.create,
		"DELETE /api/v1/tenants/{tenantId}/api-keys/{keyId}": a.revoke,
	} {
		mux.Handle(pattern, identity.WithCorrelation(h))
	}
}

func (a *API) require(w http.ResponseWriter, r *http.Request) (identity.Principal, string, bool) {
	s := a.Store
	return a.Keys.Require(w, r, identity.ManageKeys, auditlog.Denied(s.audit, s.stores, s.log, r, identity.ManageKeys))
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := a.require(w, r)
	if !ok {
		return
	}
	keys, err := a.Store.List(r.Context(), tenant)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": keys})
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r)
	if !ok {
		return
	}
	var body struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !identity.DecodeJSON(w, r, &body, 4096, `JSON {"name": …, "role": …}`) {
		return
	}
	k, raw, err := a.Store.Create(r.Context(), tenant, body.Name, body.Role, auditlog.KeyActor(p, r), p.KeyID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	identity.WriteJSON(w, http.StatusCreated, map[string]any{"data": k, "key": raw,
		"note": "store this key now: it is shown once and only its hash is kept"})
}

// revoke ends a key; with the body {"cascade": true} also the keys it
// minted, and theirs (the body is optional).
func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := a.require(w, r)
	if !ok {
		return
	}
	var body struct {
		Cascade bool `json:"cascade"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1024))
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "the body could not be read")
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			identity.WriteError(w, r, http.StatusBadRequest, "bad_request", `body must be empty or JSON {"cascade": true|false}: `+err.Error())
			return
		}
	}
	if !body.Cascade {
		k, err := a.Store.Revoke(r.Context(), tenant, r.PathValue("keyId"), auditlog.KeyActor(p, r))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		identity.WriteJSON(w, http.StatusOK, map[string]any{"data": k})
		return
	}
	rev, err := a.Store.RevokeCascade(r.Context(), tenant, r.PathValue("keyId"), auditlog.KeyActor(p, r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	minted := rev.Minted
	if minted == nil {
		minted = []Key{}
	}
	identity.WriteJSON(w, http.StatusOK, map[string]any{"data": rev.Key, "minted_revoked": minted})
}

var answers = []identity.Answer{
	{Err: ErrInvalid, Status: http.StatusBadRequest, Code: "bad_request"},
	{Err: ErrNotFound, Status: http.StatusNotFound, Code: "not_found"},
	{Err: ErrRevoked, Status: http.StatusConflict, Code: "conflict"},
	{Err: ErrMoving, Status: http.StatusConflict, Code: "conflict"},
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	identity.FailWith(w, r, err, answers, a.Store.log, "API keys", "internal error")
}
