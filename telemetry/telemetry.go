// Package telemetry sets up the suite's OpenTelemetry tracing and carries
// trace context through NATS headers.
//
// Spans are exported with OTLP/HTTP when the standard
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set;
// without it spans are still created and their context still propagates
// (the ids land on every stored row), but nothing is exported.
package telemetry

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is W3C trace context, the traceparent header.
var Propagator = propagation.TraceContext{}

// Provider is the tracer provider and its shutdown.
type Provider struct {
	*sdktrace.TracerProvider
}

// New builds the provider for service (e.g. "tenantscope-collector").
func New(ctx context.Context, service, version string, getenv func(string) string) (*Provider, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return &Provider{sdktrace.NewTracerProvider(opts...)}, nil
}

// HeaderCarrier adapts NATS headers to OpenTelemetry propagation.
type HeaderCarrier nats.Header

// Get returns a header.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set sets a header.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the headers.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into h (traceparent).
func Inject(ctx context.Context, h nats.Header) { Propagator.Inject(ctx, HeaderCarrier(h)) }

// Extract reads the span context a message carries.
func Extract(h nats.Header) trace.SpanContext {
	return trace.SpanContextFromContext(Propagator.Extract(context.Background(), HeaderCarrier(h)))
}
