package otlp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/collector/otlp"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func start(t *testing.T) (*collectortest.Pipeline, string) {
	p := collectortest.Start(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{
			{Name: "acme-ingest", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("key-acme")},
			{Name: "acme-viewer", Role: config.RoleTenantViewer, Tenant: "acme", KeyHash: config.HashAPIKey("key-viewer")},
			{Name: "sre", Role: config.RoleSRE, KeyHash: config.HashAPIKey("key-sre")},
		}
	}, "acme", "globex")
	rcv, err := otlp.New(p.Config, p.JS, zerolog.Nop(), prometheus.NewRegistry())
	require.NoError(t, err)
	mux := http.NewServeMux()
	rcv.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// The stock OpenTelemetry Go exporters, unchanged but for endpoint and header.
func TestStockExporters(t *testing.T) {
	p, url := start(t)
	ctx := context.Background()
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"), attribute.String("tenant.id", "acme"))

	texp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(url+"/v1/traces"), otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer key-acme"}))
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(texp), sdktrace.WithResource(res))
	sctx, root := tp.Tracer("t").Start(ctx, "POST /checkout", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tp.Tracer("t").Start(sctx, "charge card", trace.WithSpanKind(trace.SpanKindClient))
	child.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", 2)))
	child.SetStatus(codes.Error, "declined")
	child.End()
	root.End()
	require.NoError(t, tp.Shutdown(ctx))

	lexp, err := otlploghttp.New(ctx, otlploghttp.WithEndpointURL(url+"/v1/logs"), otlploghttp.WithHeaders(map[string]string{"Authorization": "Bearer key-acme"}))
	require.NoError(t, err)
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(lexp)), sdklog.WithResource(res))
	var rec otellog.Record
	rec.SetTimestamp(time.Now())
	rec.SetSeverity(otellog.SeverityWarn)
	rec.SetSeverityText("WARN")
	rec.SetBody(attribute.StringValue("card declined"))
	rec.AddAttributes(attribute.String("order", "o-1"))
	lp.Logger("t").Emit(sctx, rec)
	require.NoError(t, lp.Shutdown(ctx))

	traceID := root.SpanContext().TraceID().String()
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans FINAL WHERE tenant_id = 'acme' AND trace_id = ?", traceID) == 2 &&
			p.Count(t, "SELECT count() FROM logs FINAL WHERE tenant_id = 'acme'") == 1
	}, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM spans WHERE trace_id = ? AND name = 'charge card' AND kind = 'client' AND status_code = 'error' AND parent_span_id = ? AND length(events) = 1 AND service = 'checkout'", traceID, root.SpanContext().SpanID().String()))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM logs WHERE body = 'card declined' AND severity_text = 'warn' AND attributes['order'] = 'o-1' AND resource['service.name'] = 'checkout' AND trace_id = ?", traceID))
	require.Zero(t, p.Count(t, "SELECT count() FROM spans WHERE tenant_id = 'globex'"))
}

func post(t *testing.T, url, key, contentType, body string) (int, string) {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b := new(strings.Builder)
	_, _ = io_copy(b, res)
	return res.StatusCode, b.String()
}

func TestJSONPartialSuccessAndRefusals(t *testing.T) {
	p, url := start(t)
	start := time.Now().Add(-time.Minute).UnixNano()
	body := `{"resourceSpans":[
	  {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
	   "scopeSpans":[{"spans":[
	     {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /x","kind":2,"startTimeUnixNano":"` + fmt.Sprint(start) + `","endTimeUnixNano":"` + fmt.Sprint(start+250_000_000) + `"},
	     {"traceId":"bad","spanId":"eee19b7ec3c1b174","name":"broken"}]}]},
	  {"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"globex"}}]},
	   "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175","name":"foreign"}]}]}]}`
	code, resp := post(t, url+"/v1/traces", "key-acme", "application/json", body)
	require.Equal(t, 200, code, resp)
	require.Contains(t, resp, `"rejectedSpans":"2"`)
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans WHERE trace_id = '5b8efff798038103d269b633813fc60c'") == 1
	}, 30*time.Second, 100*time.Millisecond)
	var kind string
	var dur uint64
	require.NoError(t, p.Store.QueryRow(context.Background(), []any{&kind, &dur}, "SELECT kind, duration_ns FROM spans WHERE trace_id = '5b8efff798038103d269b633813fc60c'"))
	require.Equal(t, "server", kind)
	require.Equal(t, uint64(250000000), dur)
	require.Zero(t, p.Count(t, "SELECT count() FROM spans WHERE name IN ('broken', 'foreign')"))

	for _, c := range []struct {
		name, key, ct, body string
		status              int
	}{
		{"no key", "", "application/json", "{}", 401},
		{"unknown key", "nope", "application/json", "{}", 401},
		{"viewer key", "key-viewer", "application/json", "{}", 403},
		{"cross-tenant role key", "key-sre", "application/json", "{}", 403},
		{"protobuf garbage", "key-acme", "application/x-protobuf", "\xff\xff\xff\x01garbage", 400},
		{"json garbage", "key-acme", "application/json", "{not json", 400},
		{"wrong content type", "key-acme", "text/plain", "hi", 415},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, resp := post(t, url+"/v1/traces", c.key, c.ct, c.body)
			require.Equal(t, c.status, code, resp)
		})
	}
}
