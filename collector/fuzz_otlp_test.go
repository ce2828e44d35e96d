package collector

import (
	"errors"
	"testing"
	"unicode/utf8"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeOTLPBatches feeds any bytes to the batch decoders: they never
// panic; a body they refuse is a DecodeError; a body they take yields one
// row or one bad item per span (log record), each bad item with its reason
// and its own one-item request; stored text is valid UTF-8.
func FuzzDecodeOTLPBatches(f *testing.F) {
	res := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "checkout"}}},
		{Key: "tenant.id", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "globex"}}},
	}}
	good := &tracepb.Span{TraceId: make([]byte, 16), SpanId: make([]byte, 8), Name: "GET /", StartTimeUnixNano: 1, EndTimeUnixNano: 2}
	good.TraceId[0], good.SpanId[0] = 1, 1
	traces, err := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{good, {Name: "no ids"}}}}},
		{Resource: res, ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{good}}}},
	}})
	if err != nil {
		f.Fatal(err)
	}
	logs, err := proto.Marshal(&collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
		{TimeUnixNano: 1, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{}}}}, {}}}}}}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{traces, logs, {}, []byte("\xff\xff\xff"), []byte(`{"resourceSpans":[]}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := meta()
		check := func(err error, rows, items int, bads []BadItem, texts ...string) {
			if err != nil {
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason == "" {
					t.Fatalf("not a DecodeError: %v", err)
				}
				return
			}
			if rows+len(bads) != items {
				t.Fatalf("%d rows and %d bad items for %d items", rows, len(bads), items)
			}
			for _, b := range bads {
				if b.Err == nil || b.Err.Reason == "" || len(b.Data) == 0 {
					t.Fatalf("bad item %d without reason or data", b.Index)
				}
			}
			for _, s := range texts {
				if !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 stored: %q", s)
				}
			}
		}
		var treq coltrace.ExportTraceServiceRequest
		spanItems := 0
		if proto.Unmarshal(body, &treq) == nil {
			for _, rs := range treq.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					spanItems += len(ss.Spans)
				}
			}
		}
		spans, bads, err := DecodeOTLPTraces(m, body, 0, nil)
		var texts []string
		for _, sp := range spans {
			texts = append(texts, sp.Name, sp.StatusMessage)
		}
		check(err, len(spans), spanItems, bads, texts...)

		var lreq collogs.ExportLogsServiceRequest
		logItems := 0
		if proto.Unmarshal(body, &lreq) == nil {
			for _, rl := range lreq.ResourceLogs {
				for _, sl := range rl.ScopeLogs {
					logItems += len(sl.LogRecords)
				}
			}
		}
		ls, lbads, err := DecodeOTLPLogs(m, body, 0, nil)
		texts = texts[:0]
		for _, l := range ls {
			texts = append(texts, l.Body)
		}
		check(err, len(ls), logItems, lbads, texts...)
	})
}
