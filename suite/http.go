package suite

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/otlp"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/retention"
	"github.com/tenantscope/tenantscope/ui"
)

// httpLn is the HTTP listener, opened before the banner is printed.
func (s *Suite) startHTTP(ctx context.Context, withUI bool) error {
	ln, err := listen(s.cfg.HTTP.Listen)
	if err != nil {
		return err
	}
	s.httpLn = ln
	s.httpAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n")) //nolint:errcheck // client gone
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{"ready": true}
		if err := s.ready(ctx); err != nil {
			body = map[string]any{"ready": false, "error": err.Error()}
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body) //nolint:errcheck // client gone
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	if withUI {
		mux.HandleFunc("GET /{$}", s.index)
		// OTLP/HTTP for stock OpenTelemetry exporters, into the same NATS path.
		rcv, err := otlp.New(s.cfg, s.js, s.log, s.reg)
		if err != nil {
			return err
		}
		rcv.Register(mux)
		keys := identity.NewKeys(s.cfg)
		keys.OnFailures = auditlog.ReportFailures(s.publishAudit, s.log, auditlog.KeyFailures)
		s.apiKeys = apikeys.New(s.cfg, s.storeOf, s.regionStores, s.publishAudit, s.log)
		if err := s.apiKeys.Load(ctx); err != nil {
			return err
		}
		keys.Managed = s.apiKeys
		(&apikeys.API{Keys: keys, Store: s.apiKeys}).Register(mux)
		auditAPI := auditlog.NewAPI(keys, s.storeOf, s.publishAudit, s.log)
		if s.retention.Shred != nil {
			auditAPI.Open = s.retention.Shred.Keys.Open
		}
		auditAPI.Register(mux)
		b := s.boot
		sessionKey, err := hex.DecodeString(b.SessionKey)
		if err != nil || len(sessionKey) < 16 {
			return fmt.Errorf("ui: bad session key in %s", config.BootstrapPath(s.cfg.Data))
		}
		pages := ui.New(s.cfg, sessionKey, s.storeOf, s.publishAudit, s.log)
		pages.VerifierKey = b.AuditVerifierKey
		pages.Keys = s.apiKeys
		s.metering = metering.New(s.cfg, s.stores, s.card, s.log)
		pages.Metering = s.metering
		pages.Retention = s.retention
		if s.retention.Shred != nil {
			pages.Open = s.retention.Shred.Keys.Open
		}
		(&retention.API{Keys: keys, Service: s.retention}).Register(mux)
		(&metering.API{Keys: keys, Service: s.metering, Audit: s.publishAudit}).Register(mux)
		s.requests = metering.NewRequests(s.metering)
		if s.meterGauges, err = metering.NewExporter(s.metering, s.reg); err != nil {
			return err
		}
		pages.Health = s.health
		pages.Register(mux)
		(&export.Handler{Keys: keys, Stores: s.storeOf, SignerKey: b.AuditSignerKey, VerifierKey: b.AuditVerifierKey, Audit: s.publishAudit, Log: s.log}).Register(mux)
	}
	var handler http.Handler = mux
	if s.requests != nil {
		handler = s.requests.Middleware(mux)
	}
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return context.Background() }}
	return nil
}

var indexTmpl = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tenantscope</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #d9e2ec;padding:.4rem;text-align:left}
code{background:#f0f4f8;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><h1>tenantscope</h1>
<p>Observability and compliance for multi-tenant SaaS. The audit trail, cost and SLA pages arrive with their issues;
this page shows what the suite is running.</p>
<table data-testid="tenants"><tr><th>tenant</th><th>name</th><th>region</th><th>events stored</th></tr>
{{range .Tenants}}<tr><td><code>{{.ID}}</code></td><td>{{.Name}}</td><td>{{.Region}}</td><td>{{.Events}}</td></tr>{{end}}
</table>
<p><a href="/ui/">Sign in to the audit trails</a> · <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a> · ClickHouse: <code>{{.Engine}}</code></p>
</body></html>`))

func (s *Suite) index(w http.ResponseWriter, r *http.Request) {
	type row struct {
		ID, Name, Region string
		Events           uint64
	}
	data := struct {
		Tenants []row
		Engine  string
	}{Engine: s.engAddr}
	for _, t := range s.cfg.Tenants {
		var n uint64
		region := s.cfg.TenantRegion(t)
		if st := s.stores[region]; st != nil {
			if err := st.QueryRow(r.Context(), []any{&n}, "SELECT count() FROM events WHERE tenant_id = ?", t.ID); err != nil {
				s.log.Warn().Err(err).Str("tenant_id", t.ID).Msg("count events")
			}
		}
		data.Tenants = append(data.Tenants, row{t.ID, t.Name, region, n})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := indexTmpl.Execute(w, data); err != nil {
		s.log.Warn().Err(err).Msg("render index")
	}
}

// regionStores lists every region's store.
func (s *Suite) regionStores() []*chstore.Store {
	out := make([]*chstore.Store, 0, len(s.stores))
	for _, st := range s.stores {
		out = append(out, st)
	}
	return out
}

// publishAudit queues an audit record on the tenant's `._audit` subject for
// the chain writer, waiting for JetStream's acknowledgement.
func (s *Suite) publishAudit(ctx context.Context, tenant, msgID string, body []byte) error {
	return auditlog.JetStreamPublisher(s.js)(ctx, tenant, msgID, body)
}
