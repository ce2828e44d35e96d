package otlp

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/otlpwire"
)

// fullOutcome is what the full decode makes of a protobuf traces request:
// whether it decodes, its spans, how many it takes out and the service of
// its first resource.
func fullOutcome(body []byte, tenant string) (decoded bool, total, rejected int, service string) {
	var in coltrace.ExportTraceServiceRequest
	if proto.Unmarshal(body, &in) != nil {
		return false, 0, 0, ""
	}
	for _, rs := range in.ResourceSpans {
		n := 0
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				n++
				if len(s.TraceId) != 16 || len(s.SpanId) != 8 {
					rejected++
				}
			}
		}
		total += n
		if _, foreign := foreignTenant(rs.Resource, tenant); foreign {
			rejected += n
		}
	}
	if len(in.ResourceSpans) > 0 {
		service = serviceOf(in.ResourceSpans[0].Resource)
	}
	return true, total, rejected, service
}

func anyString(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

// nested is an AnyValue of arrays depth levels deep.
func nested(depth int) *commonpb.AnyValue {
	v := anyString("bottom")
	for range depth {
		v = &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{v}}}}
	}
	return v
}

func tracesRequest(resources ...*tracepb.ResourceSpans) []byte {
	b, err := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: resources})
	if err != nil {
		panic(err)
	}
	return b
}

func resourceSpans(attrs []*commonpb.KeyValue, spans ...*tracepb.Span) *tracepb.ResourceSpans {
	return &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: attrs},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "lib"}, Spans: spans}}}
}

func goodSpan(i byte) *tracepb.Span {
	return &tracepb.Span{TraceId: []byte("0123456789abcdef"), SpanId: []byte{'s', 'p', 'a', 'n', 0, 0, 0, i}, Name: "GET /x",
		Attributes: []*commonpb.KeyValue{str("http.method", "GET"), {Key: "nested", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{
			KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{str("a", "b")}}}}}},
		Events: []*tracepb.Span_Event{{Name: "ev"}}, Links: []*tracepb.Span_Link{{TraceId: []byte("0123456789abcdef")}},
		Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "boom"}}
}

// scan takes the clean requests stock exporters send and leaves every
// request with something to take out, or anything unusual, to the full
// decode.
func TestScanFindsCleanRequestsAndLeavesTheRestToTheFullDecode(t *testing.T) {
	acme := []*commonpb.KeyValue{str("service.name", "checkout"), str("tenant.id", "acme")}
	noID := goodSpan(3)
	noID.SpanId = nil
	twice := proto.Clone(resourceSpans(acme, goodSpan(1))).(*tracepb.ResourceSpans)
	twiceBody := protowire.AppendTag(tracesRequest(twice)[:0:0], 1, protowire.BytesType)
	inner, err := proto.Marshal(twice)
	require.NoError(t, err)
	res, err := proto.Marshal(&resourcepb.Resource{Attributes: acme})
	require.NoError(t, err)
	inner = protowire.AppendBytes(protowire.AppendTag(inner, 1, protowire.BytesType), res) // the resource again
	twiceBody = protowire.AppendBytes(twiceBody, inner)
	bad := append(tracesRequest(resourceSpans(acme, goodSpan(1))), 0x0a, 0x05, 0x01) // a length past the end

	for _, c := range []struct {
		name    string
		body    []byte
		clean   bool
		items   int
		service string
	}{
		{"clean", tracesRequest(resourceSpans(acme, goodSpan(1), goodSpan(2)), resourceSpans(nil, goodSpan(3))), true, 3, "checkout"},
		{"no resource", tracesRequest(&tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{goodSpan(1)}}}}), true, 1, "unknown_service"},
		{"another tenant's resource", tracesRequest(resourceSpans(acme, goodSpan(1)), resourceSpans([]*commonpb.KeyValue{str("tenant.id", "globex")}, goodSpan(2))), false, 0, ""},
		{"a span without a span id", tracesRequest(resourceSpans(acme, goodSpan(1), noID)), false, 0, ""},
		{"tenant.id not a string", tracesRequest(resourceSpans([]*commonpb.KeyValue{{Key: "tenant.id", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 1}}}}, goodSpan(1))), false, 0, ""},
		{"a resource given twice", twiceBody, false, 0, ""},
		{"no spans", tracesRequest(resourceSpans(acme)), false, 0, ""},
		{"truncated", bad, false, 0, ""},
		// The first tenant.id decides here, as in the full decode; the
		// collector reads the last and dead-letters the spans
		// (TestASecondTenantIDIsRefusedByTheCollector).
		{"tenant.id given twice, the second another tenant's", tracesRequest(resourceSpans([]*commonpb.KeyValue{str("tenant.id", "acme"), str("tenant.id", "globex")}, goodSpan(1))), true, 1, "unknown_service"},
		{"nesting deeper than the scan follows", tracesRequest(resourceSpans(acme, &tracepb.Span{TraceId: []byte("0123456789abcdef"), SpanId: []byte("01234567"),
			Attributes: []*commonpb.KeyValue{{Key: "deep", Value: nested(70)}}})), false, 0, ""},
		{"attributes three messages down", tracesRequest(resourceSpans(acme, &tracepb.Span{TraceId: []byte("0123456789abcdef"), SpanId: []byte("01234567"),
			Events: []*tracepb.Span_Event{{Attributes: []*commonpb.KeyValue{{Key: "k", Value: anyString("ok")}}}}})), true, 1, "checkout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, clean := scanTraces(c.body, "acme")
			require.Equal(t, c.clean, clean)
			if clean {
				require.Equal(t, c.items, s.items)
				require.Equal(t, c.service, s.service)
			}
		})
	}

	// A string field with invalid UTF-8 three messages down: proto.Unmarshal
	// refuses it, so scan does too.
	b := tracesRequest(resourceSpans(acme, &tracepb.Span{TraceId: []byte("0123456789abcdef"), SpanId: []byte("01234567"),
		Events: []*tracepb.Span_Event{{Attributes: []*commonpb.KeyValue{{Key: "k", Value: anyString("UTF8")}}}}}))
	i := strings.LastIndex(string(b), "UTF8")
	b[i] = 0xff
	require.Error(t, proto.Unmarshal(b, &coltrace.ExportTraceServiceRequest{}))
	_, clean := scanTraces(b, "acme")
	require.False(t, clean)

	logs, err := proto.Marshal(&collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{
		{Resource: &resourcepb.Resource{Attributes: acme}, ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{{Body: anyString("hello")}, {}}}}}}})
	require.NoError(t, err)
	s, clean := scanLogs(logs, "acme")
	require.True(t, clean)
	require.Equal(t, scanned{items: 2, service: "checkout"}, s)
	_, clean = scanLogs(logs, "globex")
	require.False(t, clean)
}

// FuzzScanAgreesWithUnmarshal holds scan to the full decode: its wire
// checks accept what proto.Unmarshal accepts, and whatever it finds clean, proto.Unmarshal decodes, with the same spans, nothing to
// take out and the same service.
func FuzzScanAgreesWithUnmarshal(f *testing.F) {
	acme := []*commonpb.KeyValue{str("service.name", "checkout"), str("tenant.id", "acme")}
	f.Add(tracesRequest(resourceSpans(acme, goodSpan(1), goodSpan(2)), resourceSpans(nil, goodSpan(3))))
	f.Add(tracesRequest(resourceSpans([]*commonpb.KeyValue{str("tenant.id", "globex")}, goodSpan(1))))
	f.Add([]byte("\x0a\x02\x0a\x00"))
	f.Add([]byte("\x0a\x04\x12\x02\x12\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, clean := scanTraces(body, "acme")
		decoded, total, rejected, service := fullOutcome(body, "acme")
		// The wire checks accept exactly what proto.Unmarshal does.
		if otlpwire.SoundTraces(body) != decoded {
			t.Fatalf("wire checks accept: %v, proto.Unmarshal decodes: %v (%x)", !decoded, decoded, body)
		}
		if !clean {
			return
		}
		if !decoded {
			t.Fatalf("scan found clean what proto.Unmarshal refuses: %x", body)
		}
		if rejected != 0 || total != s.items || service != s.service {
			t.Fatalf("scan: %d spans, service %q; full decode: %d spans, %d to take out, service %q (%x)", s.items, s.service, total, rejected, service, body)
		}
	})
}
