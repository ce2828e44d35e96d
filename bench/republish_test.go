package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/internal/pubtest"
	"github.com/tenantscope/tenantscope/natsbus"
)

// The load generator used to wait for ever on an acknowledgement that
// never came (about one bench ingest run in ten hung), and took one meant
// for another publisher as its own. It now publishes both again: every
// message is stored once, and both are counted.
func TestRepublisherStoresWhatWasNotAcknowledged(t *testing.T) {
	srv, js, b := pubtest.Streams(t, "acme")
	proxy := &pubtest.Proxy{Upstream: strings.TrimPrefix(srv.ClientURL(), "nats://")}
	proxy.ToLose.Store(1)
	proxy.ToForge.Store(1)
	nc, err := nats.Connect(proxy.Start(t), nats.UserInfo("acme-svc", b.NATS["acme-svc"]))
	require.NoError(t, err)
	defer nc.Close()

	var acks lostAcks
	rp, err := newRepublisher(nc, streamOf, &acks, time.Second)
	require.NoError(t, err)
	const n = 50
	ids := map[string]bool{}
	for i := range n {
		m := nats.NewMsg("tenant.acme.orders.order_created")
		m.Header.Set("Tenant-Id", "acme")
		id := uuid.NewString()
		ids[id] = true
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = payload(i, time.Now())
		require.NoError(t, rp.publish(m))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, rp.complete(ctx))
	require.Zero(t, proxy.ToLose.Load()+proxy.ToForge.Load(), "the proxy lost or forged nothing: the test proves nothing")
	require.EqualValues(t, 1, acks.Lost.Load(), "one acknowledgement lost")
	require.EqualValues(t, 1, acks.Foreign.Load(), "one forged")

	st, err := js.Stream(ctx, natsbus.IngestStream("acme"))
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, n, info.State.Msgs, "every message stored once")
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		id := m.Header.Get(nats.MsgIdHdr)
		require.True(t, ids[id], "message %s stored twice or never published", id)
		delete(ids, id)
	}
	require.Empty(t, ids, "messages never stored")
}
