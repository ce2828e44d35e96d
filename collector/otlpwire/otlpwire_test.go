package otlpwire

import (
	"testing"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzSoundAgreesWithUnmarshal: the wire checks accept a body exactly when
// proto.Unmarshal does, for both requests (nesting deeper than the checks
// follow is the one difference, and they refuse it).
func FuzzSoundAgreesWithUnmarshal(f *testing.F) {
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	for _, m := range []proto.Message{
		&coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: make([]byte, 16), SpanId: make([]byte, 8), Name: "x", Attributes: []*commonpb.KeyValue{{Key: "k", Value: str("v")}},
				Events: []*tracepb.Span_Event{{Name: "e"}}, Links: []*tracepb.Span_Link{{TraceId: make([]byte, 16)}}, Status: &tracepb.Status{Message: "m"}}}}}}}},
		&collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
			{Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{{Key: "a", Value: str("b")}}}}},
				SeverityText: "info", Attributes: []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{str("x")}}}}}}}}}}}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x0a\x05\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr := proto.Unmarshal(body, &coltrace.ExportTraceServiceRequest{}) == nil
		if SoundTraces(body) != tr {
			t.Fatalf("traces: wire checks %v, proto.Unmarshal %v (%x)", !tr, tr, body)
		}
		lg := proto.Unmarshal(body, &collogs.ExportLogsServiceRequest{}) == nil
		if SoundLogs(body) != lg {
			t.Fatalf("logs: wire checks %v, proto.Unmarshal %v (%x)", !lg, lg, body)
		}
	})
}
