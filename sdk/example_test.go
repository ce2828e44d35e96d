package sdk_test

import (
	"context"
	"fmt"
	"os"

	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/sdk"
)

// exampleBus starts an embedded NATS server with one tenant, standing in for
// a running tenantscope, and returns its URL and the tenant's password.
func exampleBus() (url, password string, stop func()) {
	dir, _ := os.MkdirTemp("", "sdk-example-")
	cfg := config.Default()
	cfg.Data, cfg.NATS.Listen = dir, "127.0.0.1:0"
	cfg.Tenants = []config.Tenant{{ID: "acme", Region: "default", NATS: config.Credentials{User: "acme-svc"}}}
	_, _ = config.EnsureSecrets(&cfg)
	b, _ := config.LoadBootstrap(dir)
	srv, _ := natsbus.Embedded(cfg, zerolog.Nop())
	nc, _ := srv.Connect("example")
	js, _ := jetstreamNew(nc)
	_ = natsbus.EnsureStreams(context.Background(), js, cfg)
	return srv.ClientURL(), b.NATS["acme-svc"], func() { nc.Close(); srv.Shutdown(); os.RemoveAll(dir) }
}

// A service publishes domain events, ships its zerolog logs and exports its
// OpenTelemetry spans, all as its tenant.
func Example() {
	url, password, stop := exampleBus()
	defer stop()

	pub, err := sdk.New(sdk.Config{URL: url, Tenant: "acme", User: "acme-svc", Password: password})
	if err != nil {
		fmt.Println(err)
		return
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(pub.SpanExporter("billing")))
	log := zerolog.New(pub.LogWriter("billing")).With().Timestamp().Logger()

	ctx := sdk.WithCorrelationID(context.Background(), "req-7")
	ctx, span := tp.Tracer("billing").Start(ctx, "POST /invoices")
	err = pub.Event(ctx, "billing", "invoice_created", map[string]any{"actor": "user-1", "entity": "inv-1", "amount": 42})
	log.Info().Str("invoice", "inv-1").Msg("invoice created")
	span.End()

	_ = tp.Shutdown(context.Background()) // exports the span
	_ = pub.Close(context.Background())   // flushes events and logs
	published, failed, _ := pub.Stats()
	fmt.Println(err, published, failed)
	// Output: <nil> 3 0
}
