package collector

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
)

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func otlpMeta() Meta {
	m := meta()
	m.Subject = Subject{Tenant: "acme", Service: "checkout", Action: wire.ActionOTLPTraces}
	m.MsgID = "otlp-batch-1"
	m.TraceParent = ""
	return m
}

func tid(b byte) []byte { return []byte{b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} }
func sid(b byte) []byte { return []byte{b, 1, 2, 3, 4, 5, 6, 7} }

func TestDecodeOTLPTraces(t *testing.T) {
	start := uint64(1_764_237_600_000_000_000)
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "check.out"), kv("tenant.id", "acme")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
				{TraceId: tid(1), SpanId: sid(1), Name: "POST /pay", Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: start, EndTimeUnixNano: start + 250_000_000,
					Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "declined"}, Attributes: []*commonpb.KeyValue{kv("http.response.status_code", "502")},
					Events: []*tracepb.Span_Event{{TimeUnixNano: start + 1, Name: "retry", Attributes: []*commonpb.KeyValue{kv("attempt", "2")}}}},
				{TraceId: tid(1), SpanId: []byte{1, 2, 3}, Name: "short id", StartTimeUnixNano: start, EndTimeUnixNano: start},
				{TraceId: tid(1), SpanId: sid(2), ParentSpanId: sid(1), Name: "SELECT", StartTimeUnixNano: start, EndTimeUnixNano: start + 5},
				{TraceId: tid(1), SpanId: sid(3), Name: "backwards", StartTimeUnixNano: start, EndTimeUnixNano: start - 1},
				{TraceId: tid(1), SpanId: sid(4), StartTimeUnixNano: start, EndTimeUnixNano: start},
			}}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("tenant.id", "globex")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "lib"}, Spans: []*tracepb.Span{
				{TraceId: tid(2), SpanId: sid(5), Name: "foreign", StartTimeUnixNano: start, EndTimeUnixNano: start},
			}}}},
	}}
	body, err := proto.Marshal(req)
	require.NoError(t, err)
	spans, bads, err := DecodeOTLPTraces(otlpMeta(), body, 0, nil)
	require.NoError(t, err)
	require.Len(t, spans, 2)
	s := spans[0]
	require.Equal(t, "acme", s.TenantID)
	require.Equal(t, "check_out", s.Service, "the resource's service.name, as a subject token")
	require.Equal(t, "POST /pay", s.Name)
	require.Equal(t, "server", s.Kind)
	require.Equal(t, "error", s.StatusCode)
	require.Equal(t, "declined", s.StatusMessage)
	require.Equal(t, uint64(250_000_000), s.DurationNs)
	require.Equal(t, "01010203040506070809", s.TraceID[:20])
	require.Equal(t, "502", s.Attributes["http.response.status_code"])
	require.Equal(t, "check.out", s.Resource["service.name"])
	require.Len(t, s.Events, 1)
	require.Equal(t, "2", s.Events[0].Attributes["attempt"])
	require.True(t, BadSpan(s))
	require.Equal(t, "internal", spans[1].Kind)
	require.Equal(t, "unset", spans[1].StatusCode)
	require.Equal(t, "0101020304050607", spans[1].ParentSpanID)

	want := map[int]Reason{1: ReasonInvalidField, 3: ReasonInvalidField, 4: ReasonInvalidField, 5: ReasonTenantMismatch}
	require.Len(t, bads, len(want))
	for _, b := range bads {
		require.Equal(t, want[b.Index], b.Err.Reason, "item %d", b.Index)
		var one coltrace.ExportTraceServiceRequest
		require.NoError(t, proto.Unmarshal(b.Data, &one), "a dead-lettered item is a request of its own")
		require.Len(t, one.ResourceSpans, 1)
		require.Len(t, one.ResourceSpans[0].ScopeSpans[0].Spans, 1)
	}
	require.Equal(t, "lib", func() string {
		var one coltrace.ExportTraceServiceRequest
		require.NoError(t, proto.Unmarshal(bads[3].Data, &one))
		return one.ResourceSpans[0].ScopeSpans[0].Scope.Name
	}(), "with its resource and scope")

	// An offset counts the items from there (a replayed item keeps its index).
	_, bads, err = DecodeOTLPTraces(otlpMeta(), body, 10, nil)
	require.NoError(t, err)
	require.Equal(t, 11, bads[0].Index)

	_, _, err = DecodeOTLPTraces(otlpMeta(), []byte("\xff\xff\xff garbage"), 0, nil)
	require.Equal(t, ReasonInvalidProtobuf, reason(t, err))
}

func TestDecodeOTLPLogsIDsAreStable(t *testing.T) {
	rec := func(body string, sev logspb.SeverityNumber, text string) *logspb.LogRecord {
		return &logspb.LogRecord{TimeUnixNano: 1_764_237_600_000_000_000, SeverityNumber: sev, SeverityText: text,
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: body}}, TraceId: tid(3), SpanId: sid(3),
			Attributes: []*commonpb.KeyValue{kv("order", "o-1"), kv("correlation_id", "c-9")}}
	}
	req := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "billing")}},
			ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
				rec("a", logspb.SeverityNumber_SEVERITY_NUMBER_WARN, ""), rec("b", logspb.SeverityNumber_SEVERITY_NUMBER_TRACE4, ""), rec("b", 0, "Notice"),
			}}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("tenant.id", "globex")}},
			ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{rec("foreign", 9, "")}}}},
	}}
	body, err := proto.Marshal(req)
	require.NoError(t, err)
	m := otlpMeta()
	logs, bads, err := DecodeOTLPLogs(m, body, 0, nil)
	require.NoError(t, err)
	require.Len(t, logs, 3)
	require.Len(t, bads, 1)
	require.Equal(t, ReasonTenantMismatch, bads[0].Err.Reason)
	require.Equal(t, "warn", logs[0].SeverityText)
	require.Equal(t, uint8(13), logs[0].SeverityNumber)
	require.Equal(t, "trace", logs[1].SeverityText, "1-4 is trace")
	require.Equal(t, "notice", logs[2].SeverityText)
	require.Equal(t, "billing", logs[0].Service)
	require.Equal(t, "c-9", logs[0].Correlation)
	require.Equal(t, map[string]string{"order": "o-1"}, logs[0].Attributes)
	require.NotEqual(t, logs[1].LogID, logs[2].LogID, "records alike but for their place are two rows")

	again, _, err := DecodeOTLPLogs(m, body, 0, nil)
	require.NoError(t, err)
	for i := range logs {
		require.Equal(t, logs[i].LogID, again[i].LogID, "a redelivered batch gives the same ids")
	}
	// The second record alone, as a dead letter replays it: the batch's id
	// (Original-Msg-Id) and its index (Batch-Offset).
	one := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{Resource: req.ResourceLogs[0].Resource,
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{req.ResourceLogs[0].ScopeLogs[0].LogRecords[1]}}}}}}
	b, err := proto.Marshal(one)
	require.NoError(t, err)
	alone, _, err := DecodeOTLPLogs(m, b, 1, nil)
	require.NoError(t, err)
	require.Equal(t, logs[1].LogID, alone[0].LogID)
	other := m
	other.MsgID = "otlp-batch-2"
	moved, _, err := DecodeOTLPLogs(other, body, 0, nil)
	require.NoError(t, err)
	require.NotEqual(t, logs[0].LogID, moved[0].LogID, "another batch, other ids")
}

// With redaction rules, a batch's items pass them in their JSON form: the
// same rules as for ._span and ._log messages.
func TestOTLPBatchesAreRedacted(t *testing.T) {
	red, err := NewRedactor([]config.RedactRule{{Pattern: `[\w.+-]+@[\w-]+\.[\w.]+`, Action: "mask"}, {Path: "attributes.card", Action: "drop"}}, "salt")
	require.NoError(t, err)
	traces, err := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
		{TraceId: tid(1), SpanId: sid(1), Name: "signup", StartTimeUnixNano: 10, EndTimeUnixNano: 20, Attributes: []*commonpb.KeyValue{kv("user", "ann@example.com"), kv("card", "4111")}},
	}}}}}})
	require.NoError(t, err)
	spans, _, err := DecodeOTLPTraces(otlpMeta(), traces, 0, red)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"user": Mask}, spans[0].Attributes)
	require.Equal(t, uint64(10), spans[0].DurationNs)
	require.Equal(t, "unknown_service", spans[0].Service)

	logs, err := proto.Marshal(&collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
		{TimeUnixNano: 10, SeverityText: "INFO", Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "mail to bob@example.org"}}},
	}}}}}})
	require.NoError(t, err)
	rows, _, err := DecodeOTLPLogs(otlpMeta(), logs, 0, red)
	require.NoError(t, err)
	require.Equal(t, "mail to "+Mask, rows[0].Body)
	plain, _, err := DecodeOTLPLogs(otlpMeta(), logs, 0, nil)
	require.NoError(t, err)
	require.Equal(t, plain[0].LogID, rows[0].LogID)
	require.Equal(t, plain[0].Time, rows[0].Time)
}

func TestBatchItemsCountAgainstTheQuota(t *testing.T) {
	for v, want := range map[string]int{"": 1, "512": 512, "0": 1, "-3": 1, "x": 1, "999999": 2000} {
		h := nats.Header{}
		if v != "" {
			h.Set(wire.BatchItemsHeader, v)
		}
		require.Equal(t, want, batchItems(h, 2000), v)
	}
}

// The prefetch holds about a second of a tenant's quota and at most a
// batch's bytes: thousands of one-event messages, dozens of OTLP requests.
func TestPrefetchFollowsWhatMessagesHold(t *testing.T) {
	s := &Service{cfg: Config{BatchBytes: 8 << 20, BatchSize: 5000}}
	s.cfg.defaults()
	q := config.Quota{EventsPerSecond: 20000, BytesPerSecond: 32 << 20}
	require.Equal(t, 5000, s.prefetchFor(q, 1, 300), "one-event messages: as before")
	require.Equal(t, 39, s.prefetchFor(q, 512, 150<<10), "512-span requests: a second of quota")
	require.Equal(t, 8, s.prefetchFor(config.Quota{EventsPerSecond: 1e7, BytesPerSecond: 1e10}, 4000, 1<<20), "1 MiB requests: a batch's bytes")
	require.Equal(t, 16, s.prefetchFor(config.Quota{EventsPerSecond: 2000, BytesPerSecond: 32 << 20}, 512, 150<<10), "never fewer than 16 that fit a batch")
	require.Equal(t, 16, s.prefetchFor(config.Quota{EventsPerSecond: 5}, 1, 100))
}
