// Package demo simulates a SaaS platform's services: for each tenant it
// publishes domain events, zerolog-style logs and spans on the tenant's own
// NATS subjects, with the tenant's own service credentials, so that every
// page and dashboard has data on first start.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Tenant is a tenant's service credentials.
type Tenant struct {
	ID, User, Password string
}

// Options configure the demo.
type Options struct {
	URL     string
	Tenants []Tenant
	// NATS are extra connection options (TLS: the CA, a client certificate).
	NATS []nats.Option
	// Rate is requests per second per tenant; each request yields an event,
	// a log line and one or two spans (default 20).
	Rate float64
	// Count stops after this many requests per tenant (0: until ctx ends).
	Count int
	Log   zerolog.Logger
}

var services = []struct {
	name    string
	actions []string
	ops     []string
}{
	{"orders", []string{"order_created", "order_paid", "order_shipped", "order_cancelled"}, []string{"POST /orders", "GET /orders/{id}"}},
	{"billing", []string{"invoice_created", "invoice_paid", "payment_failed"}, []string{"POST /invoices", "charge card"}},
	{"auth", []string{"user_signed_in", "user_signed_out", "password_changed", "mfa_enabled"}, []string{"POST /login", "verify token"}},
	{"search", []string{"index_rebuilt", "query_saved"}, []string{"GET /search", "query index"}},
}

// Run publishes until ctx ends (or Count requests per tenant).
func Run(ctx context.Context, o Options) error {
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if len(o.Tenants) == 0 {
		return errors.New("demo: no tenants with service credentials")
	}
	errc := make(chan error, len(o.Tenants))
	for _, t := range o.Tenants {
		go func() { errc <- runTenant(ctx, o, t) }()
	}
	var errs []error
	for range o.Tenants {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func runTenant(ctx context.Context, o Options, t Tenant) error {
	nc, err := nats.Connect(o.URL, append([]nats.Option{nats.UserInfo(t.User, t.Password), nats.Name("demo-" + t.ID)}, o.NATS...)...)
	if err != nil {
		return fmt.Errorf("demo %s: %w", t.ID, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(t.ID))))
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
	defer tick.Stop()
	for i := 0; o.Count == 0 || i < o.Count; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := request(ctx, js, t.ID, rng, i); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			o.Log.Warn().Err(err).Str("tenant_id", t.ID).Msg("demo publish failed")
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	return hex.EncodeToString(b)
}

// request simulates one request to a service: a server span (sometimes
// failing), a client child span, a log line and a domain event.
func request(ctx context.Context, js jetstream.JetStream, tenant string, rng *mrand.Rand, i int) error {
	svc := services[rng.IntN(len(services))]
	action := svc.actions[rng.IntN(len(svc.actions))]
	traceID, spanID, childID := randHex(16), randHex(8), randHex(8)
	corr := uuid.NewString()
	now := time.Now().UTC()
	dur := time.Duration(5+rng.ExpFloat64()*40) * time.Millisecond
	failed := rng.Float64() < 0.02
	status := "ok"
	level := "info"
	if failed {
		status, level = "error", "error"
	}
	publish := func(action string, body any) error {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		m := nats.NewMsg("tenant." + tenant + "." + svc.name + "." + action)
		m.Header.Set("Tenant-Id", tenant)
		m.Header.Set(nats.MsgIdHdr, uuid.NewString())
		m.Header.Set("Correlation-Id", corr)
		m.Header.Set("traceparent", "00-"+traceID+"-"+spanID+"-01")
		m.Data = b
		_, err = js.PublishMsg(ctx, m)
		return err
	}
	actor := fmt.Sprintf("user-%d", rng.IntN(40))
	entity := fmt.Sprintf("%s-%d", svc.name, rng.IntN(5000))
	if err := publish(action, map[string]any{
		"time": now.Format(time.RFC3339Nano), "actor": map[string]any{"id": actor, "type": "user"},
		"entity": entity, "amount": rng.IntN(50000) / 100, "currency": "EUR", "seq": i,
	}); err != nil {
		return err
	}
	if err := publish("_log", map[string]any{
		"level": level, "time": now.Format(time.RFC3339Nano), "message": svc.name + " handled " + action,
		"actor": actor, "entity": entity, "duration_ms": dur.Milliseconds(), "trace_id": traceID, "span_id": spanID,
	}); err != nil {
		return err
	}
	// Security-relevant actions also go to the tenant's audit chain.
	if svc.name == "auth" || action == "invoice_paid" || action == "order_cancelled" {
		outcome := "success"
		if failed {
			outcome = "failure"
		}
		if err := publish("_audit", map[string]any{
			"time":   now.Format(time.RFC3339Nano),
			"actor":  map[string]any{"type": "user", "id": actor, "ip": fmt.Sprintf("10.0.%d.%d", rng.IntN(255), rng.IntN(255)), "user_agent": "demo-browser/1.0"},
			"action": svc.name + "." + action, "target": map[string]any{"type": svc.name, "id": entity},
			"outcome": outcome, "changes": map[string]any{"before": map[string]any{"state": "old"}, "after": map[string]any{"state": action}},
		}); err != nil {
			return err
		}
	}
	op := svc.ops[rng.IntN(len(svc.ops))]
	if err := publish("_span", map[string]any{
		"trace_id": traceID, "span_id": spanID, "name": op, "kind": "server",
		"start_time": now.Add(-dur), "end_time": now, "status_code": status,
		"attributes": map[string]any{"http.route": op, "tenant.id": tenant},
	}); err != nil {
		return err
	}
	return publish("_span", map[string]any{
		"trace_id": traceID, "span_id": childID, "parent_span_id": spanID, "name": "clickhouse query", "kind": "client",
		"start_time": now.Add(-dur / 2), "duration_ns": int64(dur / 3), "status_code": "ok",
	})
}
