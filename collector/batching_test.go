package collector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/natsbus"
)

// TestBatchesGrowWhileTheStoreIsBusy: while both store workers are busy
// (AfterStore holds the first two batches), a tenant publishes 300 events
// in two bursts, BatchAge apart and more. The batch they go into waits for
// a worker, still filling: once the store moves, the collector stores them
// as one batch. Before, a batch went at BatchAge whatever the store was
// doing, and waited for a worker full: the second burst made a batch of its
// own (on a busy engine: twice the inserts, each writing a part of the
// table and of its views).
func TestBatchesGrowWhileTheStoreIsBusy(t *testing.T) {
	h := startHeldStore(t, func(batch int32) bool { return batch <= 2 }, func(c *collector.Config) {
		c.BatchAge = 50 * time.Millisecond
		c.BatchSize = 1000
		c.StoreWorkers = 2
	})
	p, js, entered, unblock := h.p, h.js, h.entered, h.release
	ctx := context.Background()
	cons, err := p.JS.Consumer(ctx, natsbus.IngestStream("acme"), natsbus.CollectorDurable)
	require.NoError(t, err)
	// inHand waits until the collector holds n messages (delivered, not
	// acked), then for more than BatchAge.
	inHand := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool {
			info, err := cons.Info(ctx)
			require.NoError(t, err)
			return info.NumAckPending == n
		}, 10*time.Second, 10*time.Millisecond)
		time.Sleep(200 * time.Millisecond) // four times BatchAge: a batch would have gone
	}

	// Two batches of one event: one per worker, both stuck.
	for i := range 2 {
		publishAcmeOrder(t, js, fmt.Appendf(nil, `{"n":%d}`, i))
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("batch %d never reached the store", i+1)
		}
	}
	for burst := range 2 {
		for i := range 150 {
			publishAcmeOrder(t, js, fmt.Appendf(nil, `{"burst":%d,"n":%d}`, burst, i))
		}
		inHand(2 + 150*(burst+1))
	}
	unblock()
	require.Eventually(t, func() bool {
		_, messages := batchHistogram(t, p.Registry)
		return messages == 302
	}, 30*time.Second, 20*time.Millisecond, "every message stored (the histogram counts them once acked)")
	batches, _ := batchHistogram(t, p.Registry)
	require.EqualValues(t, 3, batches, "the 300 events waiting for a worker went as one batch")
	require.EqualValues(t, 302, p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'"))
}

// batchHistogram is how many batches the collector stored and how many
// messages they held.
func batchHistogram(t *testing.T, reg *prometheus.Registry) (batches uint64, messages float64) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "tenantscope_collector_batch_messages" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no tenantscope_collector_batch_messages metric")
	return 0, 0
}

// TestEventBatchesHaveARowsBound: a batch of domain events also closes at
// EventBatchRows events, counted in the batch messages' bodies, not taken
// from their Batch-Items headers (here each says 1): three messages of 500
// tiny events with a bound of 800 make a batch of two messages and one of
// one. Tiny events are a row for every 23 bytes: the bytes bound alone
// would let a 4 MiB batch hold 180,000 rows.
func TestEventBatchesHaveARowsBound(t *testing.T) {
	p := collectortest.StartWith(t, nil, func(c *collector.Config) {
		c.BatchAge = 2 * time.Second // only the bounds close a batch while the three arrive
		c.EventBatchRows = 800
	}, "acme")
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	for m := range 3 {
		var body []byte
		for i := range 500 {
			body = wire.AppendEvent(body, wire.Event{ID: [16]byte{byte(m + 1), byte(i), byte(i >> 8), 7}, Action: "tick", Payload: []byte(`{}`)})
		}
		publishUnderstatedBatch(t, js, body)
	}
	require.Eventually(t, func() bool {
		_, messages := batchHistogram(t, p.Registry)
		return messages == 3
	}, 30*time.Second, 20*time.Millisecond)
	batches, _ := batchHistogram(t, p.Registry)
	require.EqualValues(t, 2, batches, "1,000 events passed the bound of 800: a batch of two messages, then one")
	require.EqualValues(t, 1500, p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'"))
}

// TestEventOnlyBatchesTakeEventBatchBytes: a batch of domain events only
// closes at EventBatchBytes, one that also holds another message (here a
// log record) at BatchBytes. Six event messages of about 40 KB with bounds
// of 64 KB and 192 KB make a batch of five and one of one (by age), where
// BatchBytes alone would have made three of two; a log record and four
// event messages make a batch of the record and two events (64 KB), then
// one of two events (events only again, closed by age).
func TestEventOnlyBatchesTakeEventBatchBytes(t *testing.T) {
	p := collectortest.StartWith(t, nil, func(c *collector.Config) {
		c.BatchAge = 2 * time.Second // only the bounds close a batch while they arrive
		c.BatchBytes = 64 << 10
		c.EventBatchBytes = 192 << 10
	}, "acme")
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	payload := `{"note":"` + strings.Repeat("x", 200) + `"}`
	eventMessage := func(m int) []byte {
		var body []byte
		for i := range 180 { // about 40 KB
			body = wire.AppendEvent(body, wire.Event{ID: [16]byte{byte(m + 1), byte(i), 9}, Action: "tick", Payload: []byte(payload)})
		}
		return body
	}
	stored := func(messages float64) (batches uint64) {
		t.Helper()
		require.Eventually(t, func() bool {
			_, got := batchHistogram(t, p.Registry)
			return got == messages
		}, 30*time.Second, 20*time.Millisecond)
		batches, _ = batchHistogram(t, p.Registry)
		return batches
	}

	for m := range 6 {
		publishUnderstatedBatch(t, js, eventMessage(m))
	}
	require.EqualValues(t, 2, stored(6), "events only: five messages (200 KB) passed 192 KB, then one")

	log := nats.NewMsg("tenant.acme.crm._log")
	log.Header.Set("Tenant-Id", "acme")
	log.Data = []byte(`{"level":"info","message":"sent"}`)
	_, err = js.PublishMsg(context.Background(), log)
	require.NoError(t, err)
	for m := 6; m < 10; m++ {
		publishUnderstatedBatch(t, js, eventMessage(m))
	}
	require.EqualValues(t, 2+2, stored(11), "with a log record: BatchBytes closed it at two events, the other two went alone")
	require.EqualValues(t, 10*180, p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM logs WHERE tenant_id = 'acme'"))
}
