package auditlog_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/chstore/chstoretest"
)

// candidate is one process that may write audit chains: its own NATS
// connection, its lease and its writer, and a worker that takes records
// from the shared queue (as collectors share one consumer) and puts back
// those it may not chain (a nak).
type candidate struct {
	name   string
	nc     *nats.Conn
	lease  *auditlog.Lease
	w      *auditlog.Writer
	cancel context.CancelFunc
	done   chan struct{}
}

func startCandidate(t *testing.T, name, url string, st *chstore.Store, skey string, queue chan auditlog.Record, chained *atomic.Int64) *candidate {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(0))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	lease, err := auditlog.NewLease(ctx, js, name, 2*time.Second, 1, zerolog.Nop())
	require.NoError(t, err)
	w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return st, nil }, skey, 50)
	require.NoError(t, err)
	w.Lease = lease
	c := &candidate{name: name, nc: nc, lease: lease, w: w, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = lease.Run(ctx) }() //nolint:errcheck // Run returns nil
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case r := <-queue:
				if _, err := w.Append(ctx, "acme", []auditlog.Record{r}); err != nil {
					if !errors.Is(err, auditlog.ErrNotWriter) && ctx.Err() == nil {
						t.Logf("%s: %v", name, err)
					}
					queue <- r // redelivered to whoever holds the lease
					select {
					case <-ctx.Done():
						return
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				chained.Add(1)
			}
		}
	}()
	go func() { wg.Wait(); close(c.done) }()
	return c
}

func (c *candidate) holds() bool { _, _, ok := c.lease.Held(); return ok }

// Two writers share a stream of records; the holder is cut off from NATS
// (as kill -9 or a partition would), then a rolling restart starts a new
// writer before stopping the old one. Every record is chained once, the
// sequence has no gap and no duplicate, and the chain verifies.
func TestOneAuditWriterAtATime(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	defer ns.Shutdown()
	st := chstoretest.Migrated(t)
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)

	const total = 300
	queue := make(chan auditlog.Record, total)
	var chained atomic.Int64
	a := startCandidate(t, "writer-a", ns.ClientURL(), st, skey, queue, &chained)
	b := startCandidate(t, "writer-b", ns.ClientURL(), st, skey, queue, &chained)
	require.Eventually(t, func() bool { return a.holds() != b.holds() }, 10*time.Second, 20*time.Millisecond, "exactly one takes the lease")

	feed := func(from, to int) {
		for i := from; i < to; i++ {
			r := sample(i)
			r.RecordID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprint("lease-", i)))
			queue <- r
		}
	}
	waitChained := func(n int64) {
		require.Eventually(t, func() bool { return chained.Load() >= n }, 30*time.Second, 20*time.Millisecond, "chained %d of %d", chained.Load(), n)
	}
	feed(0, 100)
	waitChained(100)

	// The holder loses NATS: its lease cannot be renewed, it stops chaining
	// before the key expires, and the other takes over within the TTL.
	holder, other := a, b
	if b.holds() {
		holder, other = b, a
	}
	holder.nc.Close()
	cut := time.Now()
	feed(100, 200)
	require.Eventually(t, other.holds, 10*time.Second, 20*time.Millisecond, "the other writer takes over")
	takeover := time.Since(cut)
	waitChained(200)
	require.False(t, holder.holds())
	holder.cancel()
	<-holder.done
	t.Logf("takeover after the holder was cut off: %s (lease TTL 2s)", takeover.Round(10*time.Millisecond))
	require.Less(t, takeover, 5*time.Second)

	// Rolling restart: the new writer starts first, then the old one stops
	// (and gives the lease up at once).
	c := startCandidate(t, "writer-c", ns.ClientURL(), st, skey, queue, &chained)
	feed(200, 250)
	stop := time.Now()
	other.cancel()
	<-other.done
	require.Eventually(t, c.holds, 10*time.Second, 20*time.Millisecond, "the new writer takes over")
	t.Logf("takeover in the rolling restart: %s", time.Since(stop).Round(10*time.Millisecond))
	feed(250, total)
	waitChained(total)
	c.cancel()
	<-c.done

	ctx := context.Background()
	var n, distinct, maxSeq uint64
	require.NoError(t, st.QueryRow(ctx, []any{&n, &distinct, &maxSeq},
		"SELECT count(), uniqExact(record_id), max(seq) FROM audit_records FINAL WHERE tenant_id = 'acme'"))
	require.EqualValues(t, total, n, "every record stored once")
	require.EqualValues(t, total, distinct)
	require.EqualValues(t, total, maxSeq, "no sequence number handed out twice or skipped")
	rep, err := auditlog.Verify(ctx, st, "acme", 1, vkey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
}

// Without a lease (the old shape: two writers each believing it is the one),
// the same records lose half and break the chain: the reason for the lease.
func TestTwoWritersWithoutALeaseBreakTheChain(t *testing.T) {
	st := chstoretest.Migrated(t)
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	ctx := context.Background()
	var ws []*auditlog.Writer
	for range 2 {
		w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return st, nil }, skey, 50)
		require.NoError(t, err)
		ws = append(ws, w)
	}
	for i := range 40 {
		r := sample(i)
		r.RecordID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprint("nolease-", i)))
		_, err := ws[i%2].Append(ctx, "acme", []auditlog.Record{r})
		require.NoError(t, err)
	}
	var n uint64
	require.NoError(t, st.QueryRow(ctx, []any{&n}, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'"))
	require.Less(t, n, uint64(40), "records sharing a sequence number collapse")
	rep, err := auditlog.Verify(ctx, st, "acme", 1, vkey)
	require.NoError(t, err)
	require.False(t, rep.OK())
}
