package collector

import (
	"fmt"
	"math"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/config"
)

// wireVariety is a request with every kind of attribute value, events,
// links, statuses, bad spans and a resource of another tenant.
func wireVariety(tb testing.TB) []byte {
	start := uint64(1_764_237_600_000_000_000)
	attrs := []*commonpb.KeyValue{
		kv("http.method", "GET"), kv("empty", ""),
		{Key: "int", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -42}}},
		{Key: "double", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: math.Pi}}},
		{Key: "bool", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
		{Key: "bytes", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1, 2}}}},
		{Key: "array", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{
			{Value: &commonpb.AnyValue_StringValue{StringValue: "a"}}, {Value: &commonpb.AnyValue_IntValue{IntValue: 1}}}}}}},
		{Key: "map", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{kv("k", "v")}}}}},
		{Key: "no value"},
		{Key: "empty value", Value: &commonpb.AnyValue{}},
		kv("http.method", "POST"), // the later wins
	}
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "check.out"), kv("tenant.id", "acme"), {Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}}}},
			SchemaUrl: "https://example.com/r",
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "lib", Version: "1"}, SchemaUrl: "https://example.com/s", Spans: []*tracepb.Span{
				{TraceId: tid(1), SpanId: sid(1), Name: "POST /pay", Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: start, EndTimeUnixNano: start + 250_000_000,
					Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "declined"}, Attributes: attrs, TraceState: "x=1", Flags: 1,
					Events: []*tracepb.Span_Event{{TimeUnixNano: start + 1, Name: "retry", Attributes: attrs}, {Name: "bare"}},
					Links:  []*tracepb.Span_Link{{TraceId: tid(9), SpanId: sid(9), Attributes: attrs}}},
				{TraceId: tid(1), SpanId: []byte{1, 2, 3}, Name: "short id", StartTimeUnixNano: start, EndTimeUnixNano: start},
				{TraceId: tid(1), SpanId: sid(2), ParentSpanId: sid(1), Name: "SELECT", Kind: tracepb.Span_SpanKind(99), StartTimeUnixNano: start, EndTimeUnixNano: start + 5,
					Status: &tracepb.Status{Code: tracepb.Status_StatusCode(-3)}},
				{TraceId: tid(1), SpanId: sid(3), Name: "backwards", StartTimeUnixNano: start, EndTimeUnixNano: start - 1},
				{TraceId: tid(1), SpanId: sid(4), StartTimeUnixNano: start, EndTimeUnixNano: start},
			}}, {Spans: []*tracepb.Span{{TraceId: tid(3), SpanId: sid(3), Name: "no scope", StartTimeUnixNano: start, EndTimeUnixNano: start}}}}},
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: tid(4), SpanId: sid(4), Name: "no resource", StartTimeUnixNano: start, EndTimeUnixNano: start}}}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("tenant.id", "globex")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "lib"}, Spans: []*tracepb.Span{
				{TraceId: tid(2), SpanId: sid(5), Name: "foreign", StartTimeUnixNano: start, EndTimeUnixNano: start},
			}}}},
	}}
	body, err := proto.Marshal(req)
	require.NoError(tb, err)
	return body
}

// sameAsProto checks that decodeTracesWire, where it decodes, gives what
// decodeTracesProto gives: the same rows, the same bad items with the same
// one-span requests (as messages: field order may differ).
func sameAsProto(t *testing.T, body []byte, red *Redactor) bool {
	t.Helper()
	m := otlpMeta()
	spans, bads, ok := decodeTracesWire(m, body, 3, red)
	if !ok {
		return false
	}
	want, wantBads, err := decodeTracesProto(m, body, 3, red)
	if err != nil {
		t.Fatalf("the wire decoder took a body proto refuses (%v): %x", err, body)
	}
	if len(spans) != len(want) || (len(spans) > 0 && !reflect.DeepEqual(spans, want)) {
		t.Fatalf("rows differ:\nwire  %+v\nproto %+v\n(%x)", spans, want, body)
	}
	if len(bads) != len(wantBads) {
		t.Fatalf("%d bad items, proto %d (%x)", len(bads), len(wantBads), body)
	}
	for i := range bads {
		if bads[i].Index != wantBads[i].Index || !reflect.DeepEqual(bads[i].Err, wantBads[i].Err) {
			t.Fatalf("bad item %d: %d %v, proto %d %v", i, bads[i].Index, bads[i].Err, wantBads[i].Index, wantBads[i].Err)
		}
		var got, exp coltrace.ExportTraceServiceRequest
		if proto.Unmarshal(bads[i].Data, &got) != nil || proto.Unmarshal(wantBads[i].Data, &exp) != nil || !proto.Equal(&got, &exp) {
			t.Fatalf("bad item %d's request differs:\nwire  %v\nproto %v", i, &got, &exp)
		}
	}
	return true
}

func TestDecodeTracesWireSameAsProto(t *testing.T) {
	body := wireVariety(t)
	require.True(t, sameAsProto(t, body, nil), "a request of every shape decodes from its bytes")
	red, err := NewRedactor([]config.RedactRule{{Pattern: `declined|GET`, Action: "mask"}}, "salt")
	require.NoError(t, err)
	require.True(t, sameAsProto(t, body, red), "and through the tenant's redaction")
	spans, bads, ok := decodeTracesWire(otlpMeta(), body, 0, nil)
	require.True(t, ok)
	require.Len(t, spans, 4)
	require.Len(t, bads, 4)
	require.Equal(t, "-42", spans[0].Attributes["int"])
	require.Contains(t, spans[0].Attributes["array"], `"arrayValue"`, "arrays are read through the built message")
	require.Equal(t, "POST", spans[0].Attributes["http.method"])

	// Shapes left to the built request: a resource given twice (merged).
	var rs []byte
	rs = protowire.AppendBytes(protowire.AppendTag(rs, 1, protowire.BytesType), mustMarshal(t, &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("a", "1")}}))
	rs = protowire.AppendBytes(protowire.AppendTag(rs, 1, protowire.BytesType), mustMarshal(t, &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("tenant.id", "globex")}}))
	rs = protowire.AppendBytes(protowire.AppendTag(rs, 2, protowire.BytesType), mustMarshal(t, &tracepb.ScopeSpans{Spans: []*tracepb.Span{{TraceId: tid(1), SpanId: sid(1), Name: "x", StartTimeUnixNano: 1, EndTimeUnixNano: 1}}}))
	twice := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rs)
	_, _, ok = decodeTracesWire(otlpMeta(), twice, 0, nil)
	require.False(t, ok)
	spans, bads, err = DecodeOTLPTraces(otlpMeta(), twice, 0, nil)
	require.NoError(t, err)
	require.Empty(t, spans)
	require.Len(t, bads, 1, "the merged resource names globex")
	require.Equal(t, ReasonTenantMismatch, bads[0].Err.Reason)

	_, _, err = DecodeOTLPTraces(otlpMeta(), []byte("\x0a\x05\x01"), 0, nil)
	require.ErrorContains(t, err, "not an OTLP ExportTraceServiceRequest")
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(tb, err)
	return b
}

// FuzzDecodeTracesWireSameAsProto holds the decoder that reads spans from
// the bytes to the one that builds the request first.
func FuzzDecodeTracesWireSameAsProto(f *testing.F) {
	f.Add(wireVariety(f))
	f.Add([]byte("\x0a\x02\x12\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		sameAsProto(t, body, nil)
	})
}

// BenchmarkDecodeOTLPTraces decodes a 512-span request as OTel SDKs send
// it, through the bytes and through the built request.
func BenchmarkDecodeOTLPTraces(b *testing.B) {
	var spans []*tracepb.Span
	for i := range 512 {
		spans = append(spans, &tracepb.Span{TraceId: tid(byte(i)), SpanId: sid(byte(i)), ParentSpanId: sid(0), Name: "GET /api/orders/{id}",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: uint64(1_764_237_600_000_000_000 + i), EndTimeUnixNano: uint64(1_764_237_600_000_500_000 + i),
			Attributes: []*commonpb.KeyValue{kv("http.request.method", "GET"), kv("url.path", fmt.Sprintf("/api/orders/%d", i)), kv("http.route", "/api/orders/{id}"),
				kv("server.address", "api.example.com"), kv("user_agent.original", "Go-http-client/1.1"), kv("network.protocol.version", "1.1"),
				{Key: "http.response.status_code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 200}}}},
			Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}})
	}
	body := mustMarshal(b, &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "checkout"), kv("tenant.id", "acme"), kv("telemetry.sdk.language", "go")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "net/http"}, Spans: spans}}}}})
	for _, c := range []struct {
		name   string
		decode func(Meta, []byte, int, *Redactor) ([]Span, []BadItem, error)
	}{{"bytes", DecodeOTLPTraces}, {"built", decodeTracesProto}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.decode(otlpMeta(), body, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
		})
	}
}

// A resource naming its tenant twice, the second time another tenant, may
// pass the receiver (which reads the first): the collector reads the last,
// as the built message did, and dead-letters its spans.
func TestASecondTenantIDIsRefusedByTheCollector(t *testing.T) {
	body := mustMarshal(t, &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("tenant.id", "acme"), kv("tenant.id", "globex")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: tid(1), SpanId: sid(1), Name: "x", StartTimeUnixNano: 1, EndTimeUnixNano: 1}}}}}}})
	require.True(t, sameAsProto(t, body, nil))
	spans, bads, err := DecodeOTLPTraces(otlpMeta(), body, 0, nil)
	require.NoError(t, err)
	require.Empty(t, spans)
	require.Len(t, bads, 1)
	require.Equal(t, ReasonTenantMismatch, bads[0].Err.Reason)
}
