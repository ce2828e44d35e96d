package natsbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// BenchmarkPublishThroughTenantAccount measures what the per-tenant accounts
// cost a publisher: JetStream publishes with acks from the suite's own
// account (no import) and from a tenant's account (through its service
// import), into the same work-queue stream.
func BenchmarkPublishThroughTenantAccount(b *testing.B) {
	cfg, pw := testConfig(b)
	cfg.NATS.Stream.MaxBytes = 1 << 30
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(b, err)
	defer srv.Shutdown()
	suite, err := srv.Connect("suite")
	require.NoError(b, err)
	defer suite.Close()
	sjs, err := jetstream.New(suite)
	require.NoError(b, err)
	ctx := context.Background()
	require.NoError(b, EnsureStreams(ctx, sjs, cfg))
	tenant, err := nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", pw["acme-svc"]))
	require.NoError(b, err)
	defer tenant.Close()
	payload := []byte(`{"actor":"u1","entity":"order","amount":12.5,"currency":"EUR","note":"a typical domain event"}`)
	for _, c := range []struct {
		name string
		nc   *nats.Conn
	}{{"suite-account", suite}, {"tenant-account", tenant}} {
		b.Run(c.name, func(b *testing.B) {
			js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(4096))
			require.NoError(b, err)
			b.ResetTimer()
			for i := range b.N {
				m := nats.NewMsg("tenant.acme.orders.order_created")
				m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%d-%d", c.name, b.N, i))
				m.Data = payload
				if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			st, err := sjs.Stream(ctx, IngestStream("acme"))
			require.NoError(b, err)
			require.NoError(b, st.Purge(ctx))
		})
	}
}
