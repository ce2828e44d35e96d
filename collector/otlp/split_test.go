package otlp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// Every part fits, every span is in exactly one part in its order, with
// its own resource and scope, and cutting is deterministic.
func TestSplitKeepsEverySpanWithItsResourceAndScope(t *testing.T) {
	req := &coltrace.ExportTraceServiceRequest{}
	n := 0
	for r := range 3 {
		rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", fmt.Sprint("svc", r))}}}
		for s := range 4 {
			ss := &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: fmt.Sprint("scope", s)}}
			for range 50 + r*s*10 {
				ss.Spans = append(ss.Spans, &tracepb.Span{Name: fmt.Sprint(n), Attributes: []*commonpb.KeyValue{str("pad", strings.Repeat("p", n%300))}})
				n++
			}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		req.ResourceSpans = append(req.ResourceSpans, rs)
	}
	for _, limit := range []int{2 << 10, 16 << 10, 1 << 20} {
		parts, tooBig, err := splitTraces(req, limit)
		require.NoError(t, err)
		require.Zero(t, tooBig)
		again, _, err := splitTraces(req, limit)
		require.NoError(t, err)
		require.Equal(t, parts, again, "deterministic")
		next := 0
		for _, p := range parts {
			require.LessOrEqual(t, len(p.data), limit)
			var got coltrace.ExportTraceServiceRequest
			require.NoError(t, proto.Unmarshal(p.data, &got))
			items := 0
			for _, rs := range got.ResourceSpans {
				svc := rs.Resource.Attributes[0].Value.GetStringValue()
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						require.Equal(t, fmt.Sprint(next), s.Name)
						orig := findSpan(req, s.Name)
						require.Equal(t, orig.svc, svc)
						require.Equal(t, orig.scope, ss.Scope.Name)
						next++
						items++
					}
				}
			}
			require.Equal(t, items, p.items)
			require.Equal(t, got.ResourceSpans[0].Resource.Attributes[0].Value.GetStringValue(), p.service)
		}
		require.Equal(t, n, next)
		if limit == 1<<20 {
			require.Len(t, parts, 1)
		}
	}
	// An item too large for any message is left out and counted.
	big := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
		{SeverityText: "a"}, {Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat("b", 5000)}}}, {SeverityText: "c"},
	}}}}}}
	parts, tooBig, err := splitLogs(big, 4096)
	require.NoError(t, err)
	require.Equal(t, int64(1), tooBig)
	require.Len(t, parts, 1)
	require.Equal(t, 2, parts[0].items)
	require.Equal(t, "unknown_service", parts[0].service)
}

type origin struct{ svc, scope string }

func findSpan(req *coltrace.ExportTraceServiceRequest, name string) origin {
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				if s.Name == name {
					return origin{rs.Resource.Attributes[0].Value.GetStringValue(), ss.Scope.Name}
				}
			}
		}
	}
	return origin{}
}
