package export

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/identity"
)

// Handler serves GET /api/v1/tenants/{tenantId}/export: the tenant's bundle,
// for its tenant-admin or a compliance officer; every download is audited.
type Handler struct {
	Keys        *identity.Keys
	Stores      func(tenant string) (*chstore.Store, error)
	SignerKey   string
	VerifierKey string
	Audit       func(ctx context.Context, tenant, msgID string, body []byte) error
	Log         zerolog.Logger
}

// Register mounts the route.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/tenants/{tenantId}/export", identity.WithCorrelation(http.HandlerFunc(h.serve)))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	p, tenant, ok := h.Keys.Require(w, r, identity.Export, auditlog.Denied(h.Audit, h.Stores, h.Log, r, identity.Export))
	if !ok {
		return
	}
	st, err := h.Stores(tenant)
	if err != nil {
		identity.WriteError(w, r, http.StatusNotFound, "not_found", "no such tenant")
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+tenant+"-"+time.Now().UTC().Format("20060102-150405")+`.tar.gz"`)
	m, err := Write(r.Context(), st, tenant, h.SignerKey, h.VerifierKey, w, io.Discard)
	outcome := "success"
	if err != nil {
		outcome = "failure"
		h.Log.Error().Err(err).Str("tenant_id", tenant).Str("correlation_id", identity.CorrelationID(r.Context())).Msg("export")
	}
	meta := map[string]string{}
	for _, f := range m.Files {
		meta[f.Name] = strconv.Itoa(f.Rows)
	}
	rec := auditlog.Record{
		TenantID: tenant, Time: time.Now().UTC(),
		Actor:  auditlog.Actor{Type: "api_key", ID: p.Name, Name: p.Role, UserAgent: r.UserAgent()},
		Action: "export.downloaded", Target: auditlog.Target{Type: "tenant", ID: tenant}, Outcome: outcome,
		SourceService: "tenantscope", CorrelationID: identity.CorrelationID(r.Context()), Metadata: meta,
	}
	if err := auditlog.Publisher(h.Audit).Record(r.Context(), rec); err != nil {
		h.Log.Warn().Err(err).Str("tenant_id", tenant).Msg("could not audit an export")
	}
}
