// Command service is a small tenant service instrumented with the tenantscope
// SDK: it publishes a domain event per simulated request, ships its zerolog
// logs, and exports its OpenTelemetry spans — all over NATS as its tenant.
//
//	go run ./examples/service -url nats://127.0.0.1:4222 -tenant acme -user acme-svc -password …
//	go run ./examples/service -tenant acme -creds acme.creds
//
// (the password is printed by `make run` at first start; the creds file is
// written by 'tenantscope nats creds --tenant acme --out acme.creds'.)
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/sdk"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "tenantscope's NATS")
	tenant := flag.String("tenant", "acme", "tenant id")
	user := flag.String("user", "acme-svc", "the tenant's NATS service user")
	password := flag.String("password", os.Getenv("TENANT_NATS_PASSWORD"), "its password")
	creds := flag.String("creds", "", "a credentials file instead of -user/-password")
	n := flag.Int("requests", 100, "requests to simulate")
	flag.Parse()
	cfg := sdk.Config{URL: *url, Tenant: *tenant, User: *user, Password: *password, CredsFile: *creds}
	if *creds != "" {
		cfg.User, cfg.Password = "", ""
	}
	if err := run(cfg, *n); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

func run(cfg sdk.Config, n int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pub, err := sdk.New(cfg)
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(pub.SpanExporter("checkout")),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "checkout"))),
	)
	log := zerolog.New(pub.LogWriter("checkout")).With().Timestamp().Str("service", "checkout").Logger()
	tracer := tp.Tracer("checkout")
	for i := 0; i < n && ctx.Err() == nil; i++ {
		rctx := sdk.WithCorrelationID(ctx, fmt.Sprintf("req-%d", i))
		rctx, span := tracer.Start(rctx, "POST /checkout", trace.WithSpanKind(trace.SpanKindServer))
		order := fmt.Sprintf("order-%d", i)
		if err := pub.Event(rctx, "checkout", "order_placed", map[string]any{"actor": "user-1", "entity": order, "total": rand.IntN(10000)}); err != nil {
			log.Error().Err(err).Msg("publish event")
		}
		if rand.Float64() < 0.05 {
			span.SetStatus(codes.Error, "payment declined")
			log.Warn().Str("order", order).Msg("payment declined")
		} else {
			log.Info().Str("order", order).Msg("order placed")
		}
		span.End()
		time.Sleep(10 * time.Millisecond)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		return err
	}
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.Close(flushCtx); err != nil {
		return err
	}
	published, failed, _ := pub.Stats()
	fmt.Printf("published %d messages, %d failed\n", published, failed)
	return nil
}
