package ui

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/identity"
)

// can reports whether s may use c on tenant (the pages show only what the
// role may do; every handler checks again).
func can(s *Session, c identity.Capability, tenant string) bool {
	return identity.Scope(s.principal(), c, tenant) == nil
}

// allow checks s for c on the path's tenant and finds the tenant's store,
// rendering the error page otherwise.
func (u *UI) allow(w http.ResponseWriter, r *http.Request, s *Session, c identity.Capability, what string) (string, *chstore.Store, bool) {
	tenant := r.PathValue("tenantId")
	if !can(s, c, tenant) {
		u.render(w, r, http.StatusForbidden, errorPage(s, http.StatusForbidden, "Your role may not "+what+" for this tenant."))
		return "", nil, false
	}
	st, err := u.stores(tenant)
	if err != nil {
		u.render(w, r, http.StatusNotFound, errorPage(s, http.StatusNotFound, "No such tenant."))
		return "", nil, false
	}
	return tenant, st, true
}

// checkCSRF refuses a form post without the session's token.
func (u *UI) checkCSRF(w http.ResponseWriter, r *http.Request, s *Session) bool {
	if subtle.ConstantTimeCompare([]byte(s.CSRF), []byte(r.PostFormValue("csrf"))) == 1 {
		return true
	}
	u.render(w, r, http.StatusForbidden, errorPage(s, http.StatusForbidden, "The form expired or was not ours (CSRF check). Reload the page and try again."))
	return false
}

func (s *Session) actor(r *http.Request) auditlog.Actor {
	return auditlog.Actor{Type: "user", ID: s.User, Name: s.Role + tenantSuffix(s), IP: r.RemoteAddr, UserAgent: r.UserAgent()}
}

// KeysView is the API key page's data.
type KeysView struct {
	Keys []apikeys.Key
	// Minted counts, per key, the live keys it minted (and theirs).
	Minted  map[string]int
	New     *apikeys.Key
	Secret  string
	Message string
}

func (u *UI) keysPage(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ManageKeys, "manage API keys")
	if !ok {
		return
	}
	u.renderKeys(w, r, s, tenant, http.StatusOK, KeysView{})
}

func (u *UI) renderKeys(w http.ResponseWriter, r *http.Request, s *Session, tenant string, status int, v KeysView) {
	keys, err := u.Keys.List(r.Context(), tenant)
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("list API keys")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The API keys could not be read."))
		return
	}
	v.Keys, v.Minted = keys, apikeys.Minted(keys)
	w.Header().Set("Cache-Control", "no-store") // the new key is on this page once
	u.render(w, r, status, keysPage(s, tenant, v))
}

func (u *UI) createKey(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ManageKeys, "manage API keys")
	if !ok || !u.checkCSRF(w, r, s) {
		return
	}
	k, secret, err := u.Keys.Create(r.Context(), tenant, r.PostFormValue("name"), r.PostFormValue("role"), s.actor(r), "")
	if errors.Is(err, apikeys.ErrInvalid) {
		u.renderKeys(w, r, s, tenant, http.StatusBadRequest, KeysView{Message: err.Error()})
		return
	}
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("create API key")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The key could not be created."))
		return
	}
	u.renderKeys(w, r, s, tenant, http.StatusCreated, KeysView{New: &k, Secret: secret})
}

func (u *UI) revokeKey(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ManageKeys, "manage API keys")
	if !ok || !u.checkCSRF(w, r, s) {
		return
	}
	var k apikeys.Key
	var minted []apikeys.Key
	var err error
	if r.PostFormValue("cascade") != "" {
		var rev apikeys.Revocation
		rev, err = u.Keys.RevokeCascade(r.Context(), tenant, r.PathValue("keyId"), s.actor(r))
		k, minted = rev.Key, rev.Minted
	} else {
		k, err = u.Keys.Revoke(r.Context(), tenant, r.PathValue("keyId"), s.actor(r))
	}
	switch {
	case errors.Is(err, apikeys.ErrNotFound):
		u.render(w, r, http.StatusNotFound, errorPage(s, http.StatusNotFound, "No such API key in this tenant."))
	case errors.Is(err, apikeys.ErrRevoked):
		u.renderKeys(w, r, s, tenant, http.StatusConflict, KeysView{Message: "That key was already revoked."})
	case err != nil:
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("revoke API key")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The key could not be revoked."))
	default:
		msg := fmt.Sprintf("Key %q (%s) is revoked.", k.Name, k.ID)
		if len(minted) > 0 {
			ids := make([]string, len(minted))
			for i, m := range minted {
				ids[i] = m.ID
			}
			msg += fmt.Sprintf(" So are the %d keys it minted: %s.", len(minted), strings.Join(ids, ", "))
		}
		u.renderKeys(w, r, s, tenant, http.StatusOK, KeysView{Message: msg})
	}
}

func (u *UI) exportsPage(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ReadAudit, "read the audit trail")
	if !ok {
		return
	}
	u.render(w, r, http.StatusOK, exportsPage(s, tenant, can(s, identity.Export, tenant)))
}

// exportTrail streams the filtered trail as CSV, JSON lines or Parquet.
func (u *UI) exportTrail(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, st, ok := u.allow(w, r, s, identity.ReadAudit, "read the audit trail")
	if !ok {
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	delete(q, "format")
	delete(q, "limit")
	f, err := auditlog.ParseFilter(q)
	f.Open = u.Open
	if err == nil && !slices.Contains(auditlog.TrailFormats, format) {
		err = fmt.Errorf("format must be one of %s", strings.Join(auditlog.TrailFormats, ", "))
	}
	if err != nil {
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, err.Error()))
		return
	}
	w.Header().Set("Content-Type", auditlog.TrailContentType(format))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-audit-%s.%s"`, tenant, time.Now().UTC().Format("20060102-150405"), format))
	n, err := auditlog.WriteTrail(r.Context(), st, tenant, f, format, w)
	u.auditExport(r, s, tenant, "audit.exported", err, map[string]string{"format": format, "records": fmt.Sprint(n), "query": r.URL.RawQuery})
}

// exportBundle streams the tenant's signed archive.
func (u *UI) exportBundle(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, st, ok := u.allow(w, r, s, identity.Export, "export all data")
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+tenant+"-"+time.Now().UTC().Format("20060102-150405")+`.tar.gz"`)
	m, err := export.Write(r.Context(), st, tenant, u.SignerKey, u.VerifierKey, w, io.Discard)
	meta := map[string]string{}
	for _, f := range m.Files {
		meta[f.Name] = fmt.Sprint(f.Rows)
	}
	u.auditExport(r, s, tenant, "export.downloaded", err, meta)
}

// auditRecord is a successful UI action on target in chain.
func auditRecord(chain string, actor auditlog.Actor, action, targetType, target string, meta map[string]string) auditlog.Record {
	return auditlog.Record{TenantID: chain, Time: time.Now().UTC(), Actor: actor, Action: action,
		Target: auditlog.Target{Type: targetType, ID: target}, Outcome: "success", SourceService: "tenantscope-ui", Metadata: meta}
}

func (u *UI) auditExport(r *http.Request, s *Session, tenant, action string, err error, meta map[string]string) {
	rec := auditRecord(tenant, s.actor(r), action, "tenant", tenant, meta)
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Str("action", action).Msg("export")
		rec.Outcome, rec.Reason = "failure", err.Error()
	}
	u.publish(r, rec)
}

// publish queues rec in its tenant's chain; a failure is logged.
func (u *UI) publish(r *http.Request, rec auditlog.Record) {
	if err := auditlog.Publisher(u.audit).Record(r.Context(), rec); err != nil {
		u.log.Warn().Err(err).Str("tenant_id", rec.TenantID).Str("action", rec.Action).Msg("could not audit")
	}
}
