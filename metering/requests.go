package metering

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tenantscope/tenantscope/identity"
)

// Requests counts API and UI requests per tenant and hour, and writes the
// counts into usage_hourly (signals api_requests and ui_requests) every
// flush. Only served (status below 400), authenticated calls on a tenant's
// route (/tenants/{tenantId}/...) count, and they count for the caller's
// tenant: anonymous or refused calls and calls by cross-tenant roles
// (compliance, finance, sre) are on no tenant's bill.
type Requests struct {
	svc    *Service
	mu     sync.Mutex
	counts map[requestKey]uint64
}

type requestKey struct {
	tenant, signal, group string
	hour                  time.Time
}

// NewRequests builds a counter.
func NewRequests(svc *Service) *Requests {
	return &Requests{svc: svc, counts: map[requestKey]uint64{}}
}

// Middleware counts each call next served to an authenticated tenant
// caller on a tenant's path. It gives the request an identity.Caller that
// authentication fills, and watches the status written.
func (q *Requests) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, caller := identity.WithCaller(r.Context())
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		p, authenticated := caller.Principal()
		if !authenticated || p.Tenant == "" || sw.status() >= http.StatusBadRequest {
			return
		}
		path := r.PathValue("tenantId") // set by the mux on r
		if path == "" {
			return
		}
		tenant := p.Tenant
		if _, ok := q.svc.tenant(tenant); !ok {
			return
		}
		signal := "api_requests"
		if strings.HasPrefix(r.URL.Path, "/ui/") {
			signal = "ui_requests"
		}
		// The route group: the path segment after the tenant (every counted
		// route has /tenants/{tenantId}/; a tenant named "api" or "ui" must
		// not match an earlier segment).
		_, rest, _ := strings.Cut(r.URL.Path+"/", "/tenants/"+path+"/")
		group, _, _ := strings.Cut(rest, "/")
		q.mu.Lock()
		q.counts[requestKey{tenant, signal, group, time.Now().UTC().Truncate(time.Hour)}]++
		q.mu.Unlock()
	})
}

// statusWriter notes the status a handler answered (200 when it only
// wrote a body, or nothing).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= http.StatusOK { // not an informational 1xx
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes a flush on to a streaming handler's connection.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Flush writes the counts gathered since the last flush.
func (q *Requests) Flush(ctx context.Context) error {
	q.mu.Lock()
	counts := q.counts
	q.counts = map[requestKey]uint64{}
	q.mu.Unlock()
	var errs []error
	for k, n := range counts {
		// A tenant being moved to another region keeps its counts for a
		// later flush (into its new region).
		release, writable := q.svc.place.Write(k.tenant)
		if !writable {
			q.mu.Lock()
			q.counts[k] += n
			q.mu.Unlock()
			continue
		}
		st, err := q.svc.StoreOf(k.tenant)
		if err == nil {
			err = st.Exec(ctx, "INSERT INTO usage_hourly (tenant_id, hour, signal, service, count, bytes, duration_ns, errors) VALUES (?, ?, ?, ?, ?, 0, 0, 0)",
				k.tenant, k.hour, k.signal, k.group, n)
		}
		release()
		if err != nil {
			// Kept for the next flush.
			q.mu.Lock()
			q.counts[k] += n
			q.mu.Unlock()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run flushes every interval, and once more when ctx ends.
func (q *Requests) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return q.Flush(context.WithoutCancel(ctx))
		case <-t.C:
			if err := q.Flush(ctx); err != nil {
				q.svc.log.Warn().Err(err).Msg("request counts not written yet")
			}
		}
	}
}
