package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/internal/pubtest"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/sdk"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func TestPublisherEventsLogsAndSpansReachClickHouse(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	pub, err := sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", User: "acme-svc", Password: p.Passwords["acme"], MaxPending: 64})
	require.NoError(t, err)

	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(pub.SpanExporter("checkout")),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "checkout"))),
	)
	ctx, span := tp.Tracer("test").Start(sdk.WithCorrelationID(context.Background(), "corr-42"), "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	log := zerolog.New(pub.LogWriter("checkout")).With().Timestamp().Logger()

	for i := range 500 {
		require.NoError(t, pub.Event(ctx, "checkout", "order_created", map[string]any{"actor": "u1", "entity": "order", "i": i}))
	}
	log.Info().Str("order", "o-1").Msg("order accepted")
	log.Error().Msg("card declined")
	span.AddEvent("retry")
	span.SetStatus(codes.Error, "declined")
	span.End()
	require.NoError(t, tp.Shutdown(context.Background()))
	require.ErrorContains(t, pub.Event(ctx, "checkout", "_audit", map[string]any{}), "reserved")
	require.ErrorContains(t, pub.Event(ctx, "checkout", "x", []int{1}), "JSON object")
	// The collector's own rule (wire.CheckAction): what it would dead-letter
	// is refused here, where the caller hears of it.
	for _, a := range []string{"a.b", "a\x00b", "a\x7fb", "a b", "a*", strings.Repeat("x", 257), "\xff"} {
		require.ErrorIs(t, pub.Event(ctx, "checkout", a, map[string]any{}), wire.ErrActionNotToken, "%q", a)
	}
	require.NoError(t, pub.Close(context.Background()))
	published, failed, _ := pub.Stats()
	require.Equal(t, int64(503), published)
	require.Zero(t, failed)

	traceID := span.SpanContext().TraceID().String()
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM events FINAL WHERE tenant_id = 'acme' AND correlation_id = 'corr-42' AND trace_id = ?", traceID) == 500 &&
			p.Count(t, "SELECT count() FROM logs FINAL WHERE tenant_id = 'acme' AND service = 'checkout'") == 2 &&
			p.Count(t, "SELECT count() FROM spans FINAL WHERE trace_id = ? AND status_code = 'error' AND kind = 'server' AND length(events) = 1", traceID) == 1
	}, 30*time.Second, 100*time.Millisecond, "events %d (all %d, trace %s), logs %d, spans %d (all %d)",
		p.Count(t, "SELECT count() FROM events FINAL WHERE correlation_id = 'corr-42' AND trace_id = ?", traceID),
		p.Count(t, "SELECT count() FROM events"), traceID,
		p.Count(t, "SELECT count() FROM logs"),
		p.Count(t, "SELECT count() FROM spans FINAL WHERE trace_id = ? AND status_code = 'error' AND kind = 'server' AND length(events) = 1", traceID),
		p.Count(t, "SELECT count() FROM spans"))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM logs WHERE severity_text = 'error' AND body = 'card declined'"))
}

// A service signs in with the credentials file 'tenantscope nats creds'
// writes for the embedded server (the tenant's nkey seed), in its own NATS
// account, and its events are stored.
func TestPublisherSignsInWithACredsFile(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	b, err := config.LoadBootstrap(p.Config.Data)
	require.NoError(t, err)
	creds := filepath.Join(t.TempDir(), "acme.creds")
	require.NoError(t, os.WriteFile(creds, []byte("-----BEGIN USER NKEY SEED-----\n"+b.NATSNkeySeeds["acme"]+"\n------END USER NKEY SEED------\n"), 0o600))
	pub, err := sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", CredsFile: creds})
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, pub.Event(context.Background(), "billing", "invoice_created", map[string]any{"i": i}))
	}
	require.NoError(t, pub.Close(context.Background()))
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM events FINAL WHERE tenant_id = 'acme' AND service = 'billing'") == 20
	}, 30*time.Second, 100*time.Millisecond)
	_, err = sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", CredsFile: filepath.Join(t.TempDir(), "missing.creds")})
	require.ErrorContains(t, err, "credentials")
}

func TestPublisherBackpressureFailsClearly(t *testing.T) {
	for _, unbatched := range []bool{true, false} {
		t.Run(fmt.Sprint("unbatched=", unbatched), func(t *testing.T) { testBackpressure(t, unbatched) })
	}
}

func testBackpressure(t *testing.T, unbatched bool) {
	p := collectortest.Start(t, nil, "acme")
	pub, err := sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", User: "acme-svc", Password: p.Passwords["acme"], MaxPending: 4, StallWait: 100 * time.Millisecond,
		Unbatched: unbatched, BatchEvents: 3, BatchLinger: time.Hour})
	require.NoError(t, err)
	// The collector is running (it has its consumers) before the server goes.
	require.NoError(t, pub.Event(context.Background(), "svc", "first", map[string]int{"i": -1}))
	require.NoError(t, pub.Flush(context.Background()))
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") == 1 }, 30*time.Second, 50*time.Millisecond)
	// With the server gone nothing is acknowledged: after MaxPending
	// publishes (of events, or of batches of 3) the next one waits
	// StallWait, then fails with a clear error.
	p.NATS.Shutdown()
	var lastErr error
	for i := range 100 {
		if err := pub.Event(context.Background(), "svc", "act", map[string]int{"i": i}); err != nil {
			lastErr = err
			break
		}
	}
	require.Error(t, lastErr)
	require.ErrorContains(t, lastErr, "tenantscope sdk: publish")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.Error(t, pub.Close(ctx), "pending messages are reported, not silently dropped")
}

func TestAuditRecordsAreChainedOnceAndVerify(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	pub, err := sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", User: "acme-svc", Password: p.Passwords["acme"]})
	require.NoError(t, err)
	ctx := sdk.WithCorrelationID(context.Background(), "corr-audit")
	same := uuid.New()
	for i := range 25 {
		rec := auditlog.Record{Actor: auditlog.Actor{Type: "user", ID: "u1"}, Action: "invoice.updated",
			Target: auditlog.Target{Type: "invoice", ID: fmt.Sprint("inv-", i)}, Outcome: "success",
			Changes: []byte(fmt.Sprintf(`{"before":{"n":%d},"after":{"n":%d}}`, i, i+1))}
		if i == 24 {
			rec.RecordID = same
		}
		require.NoError(t, pub.Audit(ctx, "billing", rec))
	}
	// The same record again (a retry after the duplicate window, say).
	dup := auditlog.Record{RecordID: same, Actor: auditlog.Actor{Type: "user", ID: "u1"}, Action: "invoice.updated", Outcome: "success"}
	m, _ := json.Marshal(dup)
	nc := p.TenantConn(t, "acme")
	msg := nats.NewMsg("tenant.acme.billing._audit")
	msg.Header.Set("Tenant-Id", "acme")
	msg.Data = m
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
	require.ErrorContains(t, pub.Audit(ctx, "billing", auditlog.Record{Action: "x", Outcome: "maybe"}), "outcome")
	require.NoError(t, pub.Close(context.Background()))

	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'") == 25
	}, 30*time.Second, 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // the duplicate has been through the collector too
	require.Equal(t, uint64(25), p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'"), "the duplicate record_id is chained once")
	require.Equal(t, uint64(25), p.Count(t, "SELECT max(seq) FROM audit_records WHERE tenant_id = 'acme' AND correlation_id = 'corr-audit' AND source_service = 'billing'"))
	rep, err := auditlog.Verify(context.Background(), p.Store, "acme", 1, p.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.Equal(t, uint64(25), rep.Records)
	require.GreaterOrEqual(t, rep.Checkpoints, 1)
}

// A publish JetStream does not acknowledge (here: the stream does not exist
// yet, as during a stream leader election nothing answers) is tried again
// with the same Nats-Msg-Id until it is stored: every event lands once and
// none is counted as failed.
func TestPublisherRetriesUntilStored(t *testing.T) {
	srv, cfg, b := pubtest.Server(t, "acme")
	pub, err := sdk.New(sdk.Config{URL: srv.ClientURL(), Tenant: "acme", User: "acme-svc", Password: b.NATS["acme-svc"], RetryFor: 20 * time.Second})
	require.NoError(t, err)
	const n = 50
	for i := range n {
		require.NoError(t, pub.Event(context.Background(), "billing", "invoice_created", map[string]any{"i": i}))
	}
	// The stream appears a second later.
	time.Sleep(time.Second)
	js := pubtest.Suite(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, natsbus.EnsureStreams(ctx, js, cfg))
	require.NoError(t, pub.Close(ctx))
	requireStoredOnce(ctx, t, pub, js, n)
}

// requireStoredOnce checks that pub counts n events published and none
// failed, and that acme's stream holds each of n events once.
func requireStoredOnce(ctx context.Context, t *testing.T, pub *sdk.Publisher, js jetstream.JetStream, n int) {
	t.Helper()
	published, failed, lastErr := pub.Stats()
	require.EqualValues(t, n, published)
	require.Zero(t, failed, "%v", lastErr)
	stored := storedEvents(ctx, t, js)
	require.Len(t, stored, n, "every event stored")
	for id, copies := range stored {
		require.Equal(t, 1, copies, "event %x stored %d times", id, copies)
	}
}

// storedEvents counts the copies of each event acme's stream holds (the
// events travel in batches on billing's _events subject).
func storedEvents(ctx context.Context, t *testing.T, js jetstream.JetStream) map[[16]byte]int {
	t.Helper()
	st, err := js.Stream(ctx, natsbus.IngestStream("acme"))
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	stored := map[[16]byte]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.Equal(t, "tenant.acme.billing."+wire.ActionEvents, m.Subject)
		_, err = wire.DecodeEvents(m.Data, func(_ int, e wire.Event) error {
			stored[e.ID]++
			return nil
		})
		require.NoError(t, err)
	}
	return stored
}

// JSON a service already has (json.RawMessage) is published as it is, in
// a copy: the caller may reuse its buffer at once; bad JSON and JSON that
// is not an object are refused, nothing of them published.
func TestRawJSONEventsArePublishedAsTheyAre(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	for _, unbatched := range []bool{false, true} {
		pub, err := sdk.New(sdk.Config{URL: p.URL, Tenant: "acme", User: "acme-svc", Password: p.Passwords["acme"], Unbatched: unbatched})
		require.NoError(t, err)
		buf := []byte(fmt.Sprintf("  {\"entity\": \"raw-%v\", \"note\": \"<b>&</b>\"}\n", unbatched))
		require.NoError(t, pub.Event(context.Background(), "checkout", "raw", json.RawMessage(buf)))
		copy(buf, bytes.Repeat([]byte("x"), len(buf))) // the caller reuses its buffer
		for _, bad := range []string{`{"a":`, `{"a":1} {"b":2}`, `[1]`, ``, `  `, "{\"a\":\"\x00\"}"} {
			require.Error(t, pub.Event(context.Background(), "checkout", "raw", json.RawMessage(bad)), bad)
		}
		require.NoError(t, pub.Close(context.Background()))
		published, failed, _ := pub.Stats()
		require.Equal(t, int64(1), published)
		require.Zero(t, failed)
		want := fmt.Sprintf(`{"entity": "raw-%v", "note": "<b>&</b>"}`, unbatched)
		require.Eventually(t, func() bool {
			return p.Count(t, "SELECT count() FROM events WHERE action = 'raw' AND payload = ?", want) == 1
		}, 30*time.Second, 50*time.Millisecond, "stored: %d", p.Count(t, "SELECT count() FROM events WHERE action = 'raw'"))
	}
	require.Equal(t, uint64(2), p.Count(t, "SELECT count() FROM events WHERE action = 'raw'"))
}
