package suite_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/wire"
)

// TestSIGKILLMidBatchExactlyOnceOTLP is TestSIGKILLMidBatchExactlyOnce with
// OTLP batches: 150 trace requests of 100 spans and 100 log requests of 100
// records, one message each, to a collector that SIGKILLs itself right
// after a batch is stored and before it is acked. After the restart reads
// see every span and log record exactly once although the batch stored
// before the kill was inserted twice.
func TestSIGKILLMidBatchExactlyOnceOTLP(t *testing.T) {
	e := newEnv(t)
	// 25,000 items at a quota of 2,000 items/s (a batch counts its
	// Batch-Items) keep the collector busy for ~12 s.
	e.cfgYAML = strings.Replace(e.cfgYAML, "nats: {user: acme-svc}", "nats: {user: acme-svc}, quota: {events_per_second: 2000}", 1)
	trigger := e.data + "/crash-now"
	cmd := e.start(t, "TENANTSCOPE_CRASH_AFTER_STORE="+trigger)
	js := e.tenantConn(t, "acme")
	const traceBatches, logBatches, per = 150, 100, 100
	res := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "checkout"}}}}}
	now := uint64(time.Now().UnixNano())
	var futures []jetstream.PubAckFuture
	publish := func(action string, i int, m proto.Message) {
		data, err := proto.Marshal(m)
		require.NoError(t, err)
		msg := nats.NewMsg("tenant.acme.checkout." + action)
		msg.Header.Set("Tenant-Id", "acme")
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("kill-%s-%d", action, i))
		msg.Header.Set(wire.BatchItemsHeader, fmt.Sprint(per))
		msg.Data = data
		f, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute))
		require.NoError(t, err)
		futures = append(futures, f)
	}
	for b := range traceBatches {
		spans := make([]*tracepb.Span, per)
		for i := range spans {
			n := b*per + i
			spans[i] = &tracepb.Span{TraceId: []byte(fmt.Sprintf("trace-%010d", n/10)), SpanId: []byte(fmt.Sprintf("%08d", n)), Name: "op",
				Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: now + uint64(n), EndTimeUnixNano: now + uint64(n) + 1000}
		}
		publish(wire.ActionOTLPTraces, b, &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{Resource: res, ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	}
	for b := range logBatches {
		recs := make([]*logspb.LogRecord, per)
		for i := range recs {
			recs[i] = &logspb.LogRecord{TimeUnixNano: now, SeverityText: "INFO", Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "the same line"}}}
		}
		publish(wire.ActionOTLPLogs, b, &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{Resource: res, ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}}}}})
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("publish ack timeout")
		}
	}
	require.NoError(t, os.WriteFile(trigger, nil, 0o600))
	state, err := cmd.Process.Wait()
	require.NoError(t, err)
	require.Contains(t, state.String(), "killed", "the collector died by SIGKILL after storing a batch")

	e.start(t)
	const spans, logs = traceBatches * per, logBatches * per
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM spans FINAL") == spans && e.count(t, "ts_eu", "SELECT count() FROM logs FINAL") == logs
	}, 90*time.Second, 200*time.Millisecond, "every span and log record stored after the restart")
	redelivered := e.metric(t, `tenantscope_collector_redelivered_total{tenant="acme"}`)
	t.Logf("%d spans and %d log records in %d messages; %.0f messages redelivered after the kill", spans, logs, traceBatches+logBatches, redelivered)
	require.Positive(t, redelivered, "the batch stored before the kill was delivered and inserted again")
	require.Equal(t, uint64(spans), e.count(t, "ts_eu", "SELECT uniqExact(span_id) FROM spans"))
	require.Equal(t, uint64(logs), e.count(t, "ts_eu", "SELECT uniqExact(log_id) FROM logs"))
	require.Equal(t, uint64(spans), e.count(t, "ts_eu", "SELECT count() FROM spans FINAL"), "0 lost, 0 duplicated")
	require.Equal(t, uint64(logs), e.count(t, "ts_eu", "SELECT count() FROM logs FINAL"), "0 lost, 0 duplicated")
}
