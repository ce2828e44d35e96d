package suite

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/otlp"
	"github.com/tenantscope/tenantscope/edge"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/oidc"
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
	var guardKeys *identity.Keys
	var guardPages *ui.UI
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
	// The main listener is public: its /metrics carries no tenant's series.
	mux.Handle("GET /metrics", promhttp.HandlerFor(withoutTenantSeries(s.reg), promhttp.HandlerOpts{Registry: s.reg}))
	if withUI {
		mux.HandleFunc("GET /{$}", s.index)
		// OTLP/HTTP for stock OpenTelemetry exporters, into the same NATS path.
		rcv, err := otlp.New(s.cfg, s.js, s.log, s.reg)
		if err != nil {
			return err
		}
		rcv.Register(mux)
		keys := identity.NewKeys(s.cfg)
		guardKeys = keys
		s.keys = keys
		keys.OnFailures = auditlog.ReportFailures(s.publishAudit, s.log, auditlog.KeyFailures)
		s.apiKeys = apikeys.New(s.cfg, s.place, s.storeOf, s.regionStores, s.publishAudit, s.log)
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
		sess, err := s.sessionStore(ctx)
		if err != nil {
			return err
		}
		pages := ui.New(s.cfg, sess, s.storeOf, s.publishAudit, s.log)
		guardPages = pages
		s.pages = pages
		pages.Secure = s.cfg.Sessions.SecureCookies
		pages.IsSecure = func(r *http.Request) bool { return edge.IsSecure(r.Context()) }
		if s.cfg.OIDC.Enabled() { // single sign-on; the provider is discovered at the first sign-in
			if pages.OIDC, err = oidc.New(ctx, s.cfg.OIDC, s.js, b.SessionKey); err != nil {
				return err
			}
		}
		pages.VerifierKey = b.AuditVerifierKey
		pages.Keys = s.apiKeys
		s.metering = metering.New(s.cfg, s.place, s.stores, s.card, s.log)
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
	// One edge for every route: headers, correlation id, body limits and
	// deadlines, panic recovery (edge/).
	s.http = edge.Server(edge.Wrap(handler, edge.Config{TrustedProxies: s.cfg.HTTP.Proxies(), Guard: guard(guardKeys, guardPages), Logger: s.log}))
	s.http.BaseContext = func(net.Listener) context.Context { return context.Background() }
	return s.useTLS(s.http)
}

// publicPaths answer without credentials and carry nothing of a tenant.
var publicPaths = map[string]bool{"/": true, "/healthz": true, "/readyz": true, "/metrics": true}

// guard is the edge's authentication, before any route: public paths pass;
// /api/ and /v1/ (OTLP) need a valid API key, /ui/ pages a live session
// (sign-in pages excepted); any other path is refused as unknown. A route
// registered without its own check is still behind a credential, and one
// outside these prefixes is not served until it is added here.
func guard(keys *identity.Keys, pages *ui.UI) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		p := r.URL.Path
		switch {
		case publicPaths[p]:
			return true
		case strings.HasPrefix(p, "/ui/") && pages != nil:
			return pages.Guard(w, r)
		case (strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/v1/")) && keys != nil:
			if _, err := keys.Authenticate(r); err != nil {
				identity.Fail(w, r, err)
				return false
			}
			return true
		}
		identity.WriteError(w, r, http.StatusNotFound, "not_found", "no such route")
		return false
	}
}

// useTLS serves srv over TLS when a certificate is configured (reloaded
// when its files change).
func (s *Suite) useTLS(srv *http.Server) error {
	if s.cfg.HTTP.TLSCert == "" {
		return nil
	}
	if s.certs == nil {
		c, err := edge.LoadCertificates(s.cfg.HTTP.TLSCert, s.cfg.HTTP.TLSKey)
		if err != nil {
			return err
		}
		s.certs = c
	}
	srv.TLSConfig = s.certs.TLSConfig()
	return nil
}

var indexTmpl = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tenantscope</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
a.button{display:inline-block;background:#243b53;color:#fff;padding:.5rem 1rem;border-radius:4px;text-decoration:none}</style></head>
<body><h1>tenantscope</h1>
<p>Audit trails, usage and cost reports, SLA metrics, retention and erasure for a multi-tenant platform.
Compliance officers, finance, SREs and tenant admins sign in to see what their role allows.</p>
<p><a class="button" data-testid="sign-in" href="/ui/">Sign in</a></p>
<p>Machines use the API (<code>/api/v1/…</code>) and the OTLP receiver (<code>/v1/traces</code>, <code>/v1/logs</code>) with an API key.
Health: <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>.</p>
</body></html>`))

// index is the public landing page: nothing of any tenant, no address of
// another listener.
func (s *Suite) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := indexTmpl.Execute(w, nil); err != nil {
		s.log.Warn().Err(err).Msg("render index")
	}
}

// withoutTenantSeries gathers only the metric families that carry no
// tenant or tenant stream label: process and pipeline health, for the
// public listener.
func withoutTenantSeries(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if !hasTenantLabel(mf) {
				out = append(out, mf)
			}
		}
		return out, err
	})
}

func hasTenantLabel(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			// A tenant's stream names it too (INGEST_<tenant>).
			if n := l.GetName(); n == "tenant" || n == "tenant_id" || n == "stream" {
				return true
			}
		}
	}
	return false
}

// metricsServer serves every series on the metrics listener, and Go's
// profiles when http.metrics_pprof is on, behind the bearer token when one
// is configured.
func (s *Suite) metricsServer() *http.Server {
	token := s.cfg.HTTP.MetricsToken
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	if s.cfg.HTTP.MetricsPprof {
		// Index serves the runtime's named profiles by path; the command
		// line (pprof.Cmdline) is left out on purpose.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	guard := func(w http.ResponseWriter, r *http.Request) bool {
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tenantscope metrics"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return false
		}
		return true
	}
	srv := edge.Server(edge.Wrap(mux, edge.Config{MaxBody: 1, Guard: guard, Logger: s.log}))
	srv.BaseContext = func(net.Listener) context.Context { return context.Background() }
	return srv
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
