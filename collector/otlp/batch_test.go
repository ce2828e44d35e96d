package otlp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/collector/otlp"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
)

// lastSeq is how many messages the tenant's stream has taken so far.
func lastSeq(t *testing.T, p *collectortest.Pipeline, tenant string) uint64 {
	t.Helper()
	st, err := p.JS.Stream(context.Background(), natsbus.IngestStream(tenant))
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State.LastSeq
}

// metric reads one series of the collector's registry (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// stubs are n spans of one request: every eighth a server span (every
// 32nd of them an error), the rest its children.
func stubs(n int) []sdktrace.ReadOnlySpan {
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"), attribute.String("tenant.id", "acme"))
	now := time.Now()
	out := make([]sdktrace.ReadOnlySpan, 0, n)
	var tid trace.TraceID
	var root trace.SpanID
	for i := range n {
		var sid trace.SpanID
		copy(sid[:], fmt.Sprintf("%08d", i))
		s := tracetest.SpanStub{Resource: res, StartTime: now.Add(time.Duration(i) * time.Microsecond), EndTime: now.Add(time.Duration(i)*time.Microsecond + time.Millisecond)}
		if i%8 == 0 {
			copy(tid[:], fmt.Sprintf("trace-%010d", i))
			root = sid
			s.Name, s.SpanKind = "POST /checkout", trace.SpanKindServer
			if i%256 == 0 {
				s.Status = sdktrace.Status{Code: codes.Error, Description: "declined"}
			}
		} else {
			s.Name, s.SpanKind = "SELECT orders", trace.SpanKindClient
			s.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: root})
		}
		s.SpanContext = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
		out = append(out, s.Snapshot())
	}
	return out
}

// A 512-span request from the stock exporter is one stream message, stored
// before the client is answered, and 512 spans once the collector has it;
// the collector's counters move by the batch.
func TestA512SpanRequestIsOneMessage(t *testing.T) {
	p, url := start(t)
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(url+"/v1/traces"), otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer key-acme"}))
	require.NoError(t, err)
	before := lastSeq(t, p, "acme")
	require.NoError(t, exp.ExportSpans(ctx, stubs(512)))
	require.Equal(t, before+1, lastSeq(t, p, "acme"), "one message, in the stream when the client is answered")
	require.NoError(t, exp.Shutdown(ctx))

	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans FINAL WHERE tenant_id = 'acme'") == 512
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, uint64(64), p.Count(t, "SELECT count() FROM spans WHERE kind = 'server' AND service = 'checkout' AND name = 'POST /checkout'"))
	require.Equal(t, uint64(448), p.Count(t, "SELECT count() FROM spans WHERE kind = 'client' AND parent_span_id != ''"))
	require.Equal(t, uint64(2), p.Count(t, "SELECT count() FROM spans WHERE status_code = 'error' AND status_message = 'declined'"))
	require.Equal(t, uint64(512), p.Count(t, "SELECT count() FROM spans WHERE duration_ns = 1000000 AND resource['tenant.id'] = 'acme'"))
	// The counters move once the batch is acked, just after the insert.
	require.Eventually(t, func() bool {
		return metric(t, p.Registry, "tenantscope_sla_errors_total", map[string]string{"tenant": "acme", "service": "checkout"}) > 0
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 512.0, metric(t, p.Registry, "tenantscope_collector_rows_total", map[string]string{"tenant": "acme", "signal": "spans"}))
	require.Equal(t, 64.0, metric(t, p.Registry, "tenantscope_sla_requests_total", map[string]string{"tenant": "acme", "service": "checkout"}))
	require.Equal(t, 2.0, metric(t, p.Registry, "tenantscope_sla_errors_total", map[string]string{"tenant": "acme", "service": "checkout"}))
	require.Equal(t, 1.0, batchMessages(t, p.Registry), "the collector stored one message")
}

// batchMessages is how many messages the collector's stored batches held.
func batchMessages(t *testing.T, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "tenantscope_collector_batch_messages" {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}

func startWith(t *testing.T, mutate func(*config.Config)) (*collectortest.Pipeline, string) {
	p := collectortest.Start(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "acme-ingest", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("key-acme")}}
		mutate(c)
	}, "acme", "globex")
	rcv, err := otlp.New(p.Config, p.JS, zerolog.Nop(), prometheus.NewRegistry())
	require.NoError(t, err)
	mux := http.NewServeMux()
	rcv.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func span(i int, name string, attrs ...*commonpb.KeyValue) *tracepb.Span {
	now := uint64(time.Now().UnixNano())
	return &tracepb.Span{TraceId: []byte(fmt.Sprintf("trace-%010d", i/8)), SpanId: []byte(fmt.Sprintf("%08d", i)), Name: name,
		StartTimeUnixNano: now, EndTimeUnixNano: now + 1000, Attributes: attrs}
}

func postProto(t *testing.T, url string, m proto.Message) (int, []byte) {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	req, err := http.NewRequest("POST", url, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Authorization", "Bearer key-acme")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, body
}

// A request larger than the stream's largest message is cut into several
// messages, each span with its resource and scope; a span larger than any
// message is rejected with the reason, the rest stored.
func TestLargeRequestsAreCutAtTheMessageSize(t *testing.T) {
	p, url := startWith(t, func(c *config.Config) { c.NATS.Stream.MaxMsgSize = 64 << 10 })
	pad := strings.Repeat("x", 100)
	var spans []*tracepb.Span
	for i := range 2000 {
		spans = append(spans, span(i, "GET /item", kv("pad", pad)))
	}
	spans = append(spans, span(2000, "huge", kv("blob", strings.Repeat("y", 100<<10))))
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "catalog")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "a"}, Spans: spans[:1000]}, {Scope: &commonpb.InstrumentationScope{Name: "b"}, Spans: spans[1000:]}},
	}}}
	require.Greater(t, proto.Size(req), 5*(64<<10))
	before := lastSeq(t, p, "acme")
	code, body := postProto(t, url+"/v1/traces", req)
	require.Equal(t, 200, code, string(body))
	var out coltrace.ExportTraceServiceResponse
	require.NoError(t, proto.Unmarshal(body, &out))
	require.Equal(t, int64(1), out.GetPartialSuccess().GetRejectedSpans())
	require.Contains(t, out.GetPartialSuccess().GetErrorMessage(), "larger than the largest message")
	parts := lastSeq(t, p, "acme") - before
	require.GreaterOrEqual(t, parts, uint64(5))
	require.LessOrEqual(t, parts, uint64(7), "cut at the message size, not finer")
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans FINAL WHERE tenant_id = 'acme' AND service = 'catalog'") == 2000
	}, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, p.Count(t, "SELECT count() FROM spans WHERE name = 'huge'"))

	// The same request again (an exporter's retry): the same parts, dropped
	// by JetStream as duplicates.
	code, body = postProto(t, url+"/v1/traces", req)
	require.Equal(t, 200, code, string(body))
	require.Equal(t, before+parts, lastSeq(t, p, "acme"), "a retried request is not stored twice")
}

// A service may publish its own OTLP batches. Items that fail the checks
// are dead-lettered alone, each with its reason, its index and its resource
// and scope; the rest are stored; a body that is not OTLP is dead-lettered
// whole.
func TestBadItemsOfABatchAreDeadLetteredAlone(t *testing.T) {
	p, _ := start(t)
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	bad := span(1, "short id")
	bad.SpanId = []byte{1, 2, 3}
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "checkout")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span(0, "ok 1"), bad, span(2, "ok 2")}}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "checkout"), kv("tenant.id", "globex")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "lib"}, Spans: []*tracepb.Span{span(3, "foreign")}}}},
	}}
	data, err := proto.Marshal(req)
	require.NoError(t, err)
	subject := "tenant.acme.checkout." + wire.ActionOTLPTraces
	publish := func(subject string, data []byte, id string) {
		m := nats.NewMsg(subject)
		m.Header.Set("Tenant-Id", "acme")
		m.Header.Set(nats.MsgIdHdr, id)
		m.Header.Set(wire.BatchItemsHeader, "4")
		m.Data = data
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	publish(subject, data, "batch-1")
	publish(subject, []byte("\xff\xff\xffnot a request"), "batch-2")
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans WHERE tenant_id = 'acme'") == 2
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM spans WHERE name = 'ok 1'"))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM spans WHERE name = 'ok 2'"))

	var dls []collector.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme"})
		return err == nil && len(dls) == 3
	}, 30*time.Second, 50*time.Millisecond)
	byReason := map[string]collector.DeadLetter{}
	for _, d := range dls {
		byReason[d.Reason] = d
		require.Equal(t, subject, d.Subject)
	}
	for reason, want := range map[string]struct {
		offset, name string
	}{string(collector.ReasonInvalidField): {"1", "short id"}, string(collector.ReasonTenantMismatch): {"3", "foreign"}} {
		d, ok := byReason[reason]
		require.True(t, ok, reason)
		require.Equal(t, want.offset, d.Header.Get(wire.BatchOffsetHeader), reason)
		require.Equal(t, "1", d.Header.Get(wire.BatchItemsHeader))
		require.Equal(t, "batch-1", d.Header.Get("Deadletter-Msg-Id"))
		var one coltrace.ExportTraceServiceRequest
		require.NoError(t, proto.Unmarshal(d.Data, &one), reason)
		require.Len(t, one.ResourceSpans, 1)
		require.Len(t, one.ResourceSpans[0].ScopeSpans[0].Spans, 1)
		require.Equal(t, want.name, one.ResourceSpans[0].ScopeSpans[0].Spans[0].Name)
	}
	require.Equal(t, "lib", func() string {
		var one coltrace.ExportTraceServiceRequest
		require.NoError(t, proto.Unmarshal(byReason[string(collector.ReasonTenantMismatch)].Data, &one))
		return one.ResourceSpans[0].ScopeSpans[0].Scope.GetName()
	}())
	require.Contains(t, byReason, string(collector.ReasonInvalidProtobuf), "a body that is not OTLP goes whole")

	// A replayed item is checked again (and dead-lettered again, still bad).
	require.NoError(t, collector.Replay(ctx, p.JS, byReason[string(collector.ReasonTenantMismatch)]))
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme", Reason: string(collector.ReasonTenantMismatch)})
		return err == nil && len(dls) == 1 && dls[0].Seq != byReason[string(collector.ReasonTenantMismatch)].Seq
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "3", dls[0].Header.Get(wire.BatchOffsetHeader), "it keeps its index")
	require.Equal(t, uint64(2), p.Count(t, "SELECT count() FROM spans WHERE tenant_id = 'acme'"))
}

// The same batch stored twice (a redelivery after a crash between insert
// and ack, or a replay under the batch's first id) is read once: spans by
// their sort key, log records by their ids.
func TestABatchStoredTwiceIsReadOnce(t *testing.T) {
	p, _ := start(t)
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	var spans []*tracepb.Span
	var recs []*logspb.LogRecord
	for i := range 100 {
		spans = append(spans, span(i, "op"))
		recs = append(recs, &logspb.LogRecord{TimeUnixNano: uint64(time.Now().UnixNano()), SeverityText: "INFO",
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "same line"}}})
	}
	res := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "worker")}}
	traces, err := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{Resource: res, ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	require.NoError(t, err)
	logs, err := proto.Marshal(&collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{Resource: res, ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}}}}})
	require.NoError(t, err)
	for i := range 2 {
		for action, data := range map[string][]byte{wire.ActionOTLPTraces: traces, wire.ActionOTLPLogs: logs} {
			m := nats.NewMsg("tenant.acme.worker." + action)
			m.Header.Set("Tenant-Id", "acme")
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-copy-%d", action, i))
			m.Header.Set(collector.OriginalMsgIDHeader, action+"-first")
			m.Data = data
			_, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool {
		return metric(t, p.Registry, "tenantscope_collector_rows_total", map[string]string{"tenant": "acme", "signal": "spans"}) == 200 &&
			metric(t, p.Registry, "tenantscope_collector_rows_total", map[string]string{"tenant": "acme", "signal": "logs"}) == 200
	}, 30*time.Second, 50*time.Millisecond, "both copies stored")
	require.Equal(t, uint64(100), p.Count(t, "SELECT count() FROM spans FINAL WHERE service = 'worker'"))
	require.Equal(t, uint64(100), p.Count(t, "SELECT count() FROM logs FINAL WHERE service = 'worker'"))
	require.Equal(t, uint64(100), p.Count(t, "SELECT uniqExact(log_id) FROM logs WHERE service = 'worker'"), "100 records alike but for their place are 100 rows")
}

// Redaction rules apply to the items of OTLP batches as to ._span and
// ._log messages.
func TestOTLPItemsAreRedacted(t *testing.T) {
	p, url := startWith(t, func(c *config.Config) {
		c.Tenants[0].Redact = []config.RedactRule{{Pattern: `[\w.+-]+@[\w-]+\.[\w.]+`, Action: "mask"}}
	})
	code, body := postProto(t, url+"/v1/traces", &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span(0, "signup", kv("user", "ann@example.com"))}}}}}})
	require.Equal(t, 200, code, string(body))
	code, body = postProto(t, url+"/v1/logs", &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{{TimeUnixNano: uint64(time.Now().UnixNano()),
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "mail to ann@example.com"}}}}}}}}})
	require.Equal(t, 200, code, string(body))
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans") == 1 && p.Count(t, "SELECT count() FROM logs") == 1
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM spans WHERE attributes['user'] = '[REDACTED]'"))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM logs WHERE body = 'mail to [REDACTED]'"))
}

// When JetStream does not store a request, the exporter is asked to retry
// (503, Retry-After) rather than told its spans were refused.
func TestUnstoredRequestsAreRetried(t *testing.T) {
	p, _ := start(t)
	conn, err := p.NATS.Connect("otlp-test")
	require.NoError(t, err)
	js, err := jetstream.New(conn)
	require.NoError(t, err)
	cfg := p.Config
	cfg.APIKeys = []config.APIKey{{Name: "acme-ingest", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("key-acme")}}
	rcv, err := otlp.New(cfg, js, zerolog.Nop(), prometheus.NewRegistry())
	require.NoError(t, err)
	conn.Close()
	mux := http.NewServeMux()
	rcv.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	code, body := postProto(t, srv.URL+"/v1/traces", &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span(0, "lost?")}}}}}})
	require.Equal(t, http.StatusServiceUnavailable, code, string(body))
	require.Contains(t, string(body), "retry")
}

// Every attribute of every span and log record arrives with its own value:
// keys shared by many rows, empty values, rows without attributes, and
// non-ASCII keys (the Map columns are appended without clickhouse-go's
// reflection).
func TestAttributesArriveWhole(t *testing.T) {
	p, url := start(t)
	want := []map[string]string{
		{"http.method": "GET", "empty": "", "ключ": "значение"},
		{},
		{"http.method": "POST", "n": "1"},
	}
	var spans []*tracepb.Span
	var records []*logspb.LogRecord
	for i, m := range want {
		var attrs []*commonpb.KeyValue
		for k, v := range m {
			attrs = append(attrs, kv(k, v))
		}
		spans = append(spans, span(i, fmt.Sprintf("s%d", i), attrs...))
		records = append(records, &logspb.LogRecord{TimeUnixNano: uint64(time.Now().UnixNano()), Attributes: attrs,
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("s%d", i)}}})
	}
	code, body := postProto(t, url+"/v1/traces", &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	require.Equal(t, 200, code, string(body))
	code, body = postProto(t, url+"/v1/logs", &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: records}}}}})
	require.Equal(t, 200, code, string(body))
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM spans") == 3 && p.Count(t, "SELECT count() FROM logs") == 3
	}, 30*time.Second, 50*time.Millisecond)
	for _, q := range []string{"SELECT name, attributes FROM spans ORDER BY name", "SELECT body, attributes FROM logs ORDER BY body"} {
		rows, err := p.Store.Query(context.Background(), q)
		require.NoError(t, err)
		i := 0
		for rows.Next() {
			var name string
			var got map[string]string
			require.NoError(t, rows.Scan(&name, &got))
			require.Equal(t, fmt.Sprintf("s%d", i), name)
			require.Equal(t, want[i], got, q)
			i++
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		require.Equal(t, 3, i)
	}
}
