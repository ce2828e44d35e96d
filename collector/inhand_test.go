package collector_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/natsbus"
)

// TestInHandStaysWithinAFewBatches: while the store is stuck (AfterStore
// blocks), a tenant publishes 300 messages of 100 KB (30 MB). The collector
// may hold what it is storing, the batch after it, the one it is filling,
// a short hand-off and one pull's bytes: about 60 messages with 1 MiB
// batches (BatchBytes, and EventBatchBytes: these are domain events), not
// all 300. Before, it took in up to BatchSize messages
// whatever their size (hundreds of MB of OTLP requests or SDK batches),
// and those at the back waited past the ack wait and were sent again.
func TestInHandStaysWithinAFewBatches(t *testing.T) {
	h := startHeldStore(t, func(int32) bool { return true }, func(c *collector.Config) { c.BatchBytes, c.EventBatchBytes = 1<<20, 1<<20 })
	p, js, unblock := h.p, h.js, h.release
	ctx := context.Background()
	note := strings.Repeat("x", 100<<10)
	const total = 300
	for i := range total {
		publishAcmeOrder(t, js, fmt.Appendf(nil, `{"n":%d,"note":%q}`, i, note))
	}
	cons, err := p.JS.Consumer(ctx, natsbus.IngestStream("acme"), natsbus.CollectorDurable)
	require.NoError(t, err)
	// In hand: delivered and not acked. Wait until it stops growing (well
	// within the ack wait, after which JetStream would send them again).
	var inHand, last int
	stable := 0
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) && stable < 8 {
		info, err := cons.Info(ctx)
		require.NoError(t, err)
		inHand = info.NumAckPending
		if inHand > 0 && inHand == last {
			stable++
		} else {
			stable = 0
		}
		last = inHand
		time.Sleep(250 * time.Millisecond)
	}
	require.Positive(t, inHand, "the collector took nothing")
	require.LessOrEqual(t, inHand, 90, "the collector holds %d of %d messages of 100 KB while its store is stuck", inHand, total)
	unblock()
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'") == total
	}, 60*time.Second, 100*time.Millisecond, "every message is stored once the store moves again")
}

// TestSwitchingMessageSizesKeepsPulling: a tenant switches between small
// and large messages again and again, so the collector re-sizes its pull
// each time (it drains the old one); every message is stored.
func TestSwitchingMessageSizesKeepsPulling(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	big := strings.Repeat("x", 60<<10)
	n := 0
	for round := range 12 {
		for i := range 100 {
			note := ""
			if round%2 == 1 {
				note = big
			}
			publishAcmeOrder(t, js, fmt.Appendf(nil, `{"n":%d,"note":%q}`, i, note))
			n++
		}
		if round%4 == 3 {
			want := uint64(n)
			require.Eventually(t, func() bool {
				return p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'") >= want
			}, 30*time.Second, 20*time.Millisecond, "round %d: the collector stopped pulling", round)
		}
	}
}

// heldStore is acme's pipeline whose store holds a batch after inserting
// it (before its ack) while hold says so for it (the first is 1), until
// release is called or the test ends; each batch held sends on entered.
type heldStore struct {
	p       *collectortest.Pipeline
	js      jetstream.JetStream // acme's
	entered chan struct{}
	release func()
}

func startHeldStore(t *testing.T, hold func(batch int32) bool, mutate func(*collector.Config)) *heldStore {
	t.Helper()
	released := make(chan struct{})
	var once sync.Once
	var batches atomic.Int32
	h := &heldStore{entered: make(chan struct{}, 16), release: func() { once.Do(func() { close(released) }) }}
	h.p = collectortest.StartWith(t, nil, func(c *collector.Config) {
		mutate(c)
		c.AfterStore = func() {
			if hold(batches.Add(1)) {
				select {
				case h.entered <- struct{}{}:
				default: // nobody counts them
				}
				<-released
			}
		}
	}, "acme")
	t.Cleanup(h.release) // before the pipeline stops (cleanups run last first)
	js, err := jetstream.New(h.p.TenantConn(t, "acme"))
	require.NoError(t, err)
	h.js = js
	return h
}

// publishAcmeOrder publishes data as acme's order_created event.
func publishAcmeOrder(t *testing.T, js jetstream.JetStream, data []byte) {
	t.Helper()
	m := nats.NewMsg("tenant.acme.orders.order_created")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = data
	_, err := js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}
