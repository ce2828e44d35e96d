package natsbus

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

// bus is an embedded server with the suite's streams and one tenant's
// publisher, for the stream tests.
type bus struct {
	srv *Server
	js  jetstream.JetStream // the suite's
	pub jetstream.JetStream // acme's service user
}

func startBus(t *testing.T, cfg config.Config, pw map[string]string) *bus {
	t.Helper()
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	acme, err := nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", pw["acme-svc"]))
	require.NoError(t, err)
	t.Cleanup(acme.Close)
	pub, err := jetstream.New(acme)
	require.NoError(t, err)
	return &bus{srv: srv, js: js, pub: pub}
}

func (b *bus) publish(ctx context.Context, i int) error {
	m := nats.NewMsg("tenant.acme.orders.order_created")
	m.Header.Set("Tenant-Id", "acme")
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("msg-%06d", i))
	m.Data = []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", 1000)))
	_, err := b.pub.PublishMsg(ctx, m)
	return err
}

func (b *bus) state(t *testing.T, stream string) jetstream.StreamState {
	t.Helper()
	st, err := b.js.Stream(context.Background(), stream)
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State
}

// collect pulls acme's stream with the collectors' durable consumer and acks
// every message, as the collector does once the rows are stored. It returns
// a stop function that waits for the pulling to end.
func (b *bus) collect(t *testing.T, acked *atomic.Int64) func() {
	t.Helper()
	cons, err := b.js.Consumer(context.Background(), IngestStream("acme"), CollectorDurable)
	require.NoError(t, err)
	// Short pull expiry, as the collector's.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if m.DoubleAck(context.Background()) == nil {
			acked.Add(1)
		}
	}, jetstream.PullExpiry(time.Second))
	require.NoError(t, err)
	return func() { cc.Stop(); <-cc.Closed() }
}

// TestStreamsHoldOnlyWhatWaits: acme's backlog limit is 64 KiB. While the
// collector keeps up, acme publishes ten times that over time and is never
// refused. With the collector stopped it is refused at the limit with
// JetStream's "maximum bytes exceeded", and accepted again once the
// collector has drained the backlog.
func TestStreamsHoldOnlyWhatWaits(t *testing.T) {
	const backlog = 64 << 10
	cfg, pw := testConfig(t)
	cfg.Tenants[0].Quota.BacklogBytes = backlog
	b := startBus(t, cfg, pw)
	ctx := context.Background()
	require.NoError(t, EnsureStreams(ctx, b.js, cfg))

	// 1. The collector keeps up: 640 messages of ~1.1 KiB, about 10x the backlog.
	var acked atomic.Int64
	stop := b.collect(t, &acked)
	tick := time.NewTicker(2 * time.Millisecond)
	var accepted, refused int
	var firstRefusal error
	for i := range 640 {
		<-tick.C
		if err := b.publish(ctx, i); err != nil {
			refused++
			if firstRefusal == nil {
				firstRefusal = fmt.Errorf("message %d: %w", i, err)
			}
			continue
		}
		accepted++
	}
	tick.Stop()
	st := b.state(t, IngestStream("acme"))
	t.Logf("collector keeping up: %d accepted (%d bytes sent, %.1fx the backlog), %d refused (first: %v); stream holds %d msgs, %d bytes",
		accepted, accepted*1100, float64(accepted*1100)/backlog, refused, firstRefusal, st.Msgs, st.Bytes)
	require.Zero(t, refused, "a tenant whose collector keeps up is never refused")
	require.Eventually(t, func() bool { return b.state(t, IngestStream("acme")).Msgs == 0 }, 10*time.Second, 20*time.Millisecond,
		"stored and acked messages leave the stream")
	stop()

	// 2. The collector is stopped: refused at the limit, with a clear error.
	var err error
	n := 1000
	waiting := 0
	for ; n < 2000; n++ {
		if err = b.publish(ctx, n); err != nil {
			break
		}
		waiting++
	}
	st = b.state(t, IngestStream("acme"))
	t.Logf("collector stopped: %d accepted, then %v; stream holds %d msgs, %d of %d bytes", waiting, err, st.Msgs, st.Bytes, backlog)
	require.ErrorContains(t, err, "maximum bytes exceeded")
	require.LessOrEqual(t, st.Bytes, uint64(backlog))
	require.Greater(t, st.Bytes, uint64(backlog-2200), "refused only at the limit")
	require.Error(t, b.publish(ctx, n+1), "still refused while the backlog waits")

	// 3. The collector drains the backlog: accepted again. (Messages the
	// stopped collector's last pull request took come back after the ack
	// wait, 10 s.)
	acked.Store(0)
	restarted := time.Now()
	stop = b.collect(t, &acked)
	defer stop()
	require.Eventually(t, func() bool { return b.state(t, IngestStream("acme")).Msgs == 0 }, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, b.publish(ctx, n+2), "accepted again once the backlog drained")
	t.Logf("collector restarted: drained %d waiting messages in %v, acme accepted again", acked.Load(), time.Since(restarted).Round(100*time.Millisecond))
}

// oldIngest is the ingest stream earlier versions created: limits retention,
// so acked messages stayed until max_age or max_bytes.
func oldIngest(cfg config.Config, tenant string) jetstream.StreamConfig {
	st := cfg.NATS.Stream
	return jetstream.StreamConfig{
		Name: IngestStream(tenant), Subjects: []string{"tenant." + tenant + ".>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, MaxAge: time.Duration(st.MaxAge),
		MaxBytes: cfg.QuotaOf(cfg.Tenants[0]).BacklogBytes, MaxMsgSize: st.MaxMsgSize, Discard: jetstream.DiscardNew,
		Duplicates: time.Duration(st.Duplicates), Replicas: st.Replicas,
	}
}

// TestUpgradeFromLimitsRetention starts on a data directory of an earlier
// version: acme's limits stream holds 50 messages the collector stored and
// acked; globex's holds 30 acked and 20 still waiting. After EnsureStreams
// acme's stream is a work queue (its acked messages gone), globex's drops
// the acked ones at once and keeps the 20 waiting, which the collector then
// gets; once drained, the next start makes it a work queue too. Nothing
// waiting is lost.
func TestUpgradeFromLimitsRetention(t *testing.T) {
	cfg, pw := testConfig(t)
	b := startBus(t, cfg, pw)
	ctx := context.Background()
	consumer := jetstream.ConsumerConfig{Durable: CollectorDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second, MaxAckPending: 20000, MaxDeliver: -1}
	for _, tenant := range []string{"acme", "globex"} {
		_, err := b.js.CreateStream(ctx, oldIngest(cfg, tenant))
		require.NoError(t, err)
		_, err = b.js.CreateOrUpdateConsumer(ctx, IngestStream(tenant), consumer)
		require.NoError(t, err)
	}
	pubTo := func(tenant string, from, n int) {
		for i := from; i < from+n; i++ {
			_, err := b.js.Publish(ctx, "tenant."+tenant+".orders.order_created", []byte(fmt.Sprint(i)), jetstream.WithMsgID(fmt.Sprint(tenant, i)))
			require.NoError(t, err)
		}
	}
	ack := func(tenant string, n int) []string {
		cons, err := b.js.Consumer(ctx, IngestStream(tenant), CollectorDurable)
		require.NoError(t, err)
		var got []string
		for len(got) < n {
			batch, err := cons.Fetch(n-len(got), jetstream.FetchMaxWait(2*time.Second))
			require.NoError(t, err)
			for m := range batch.Messages() {
				require.NoError(t, m.DoubleAck(ctx))
				got = append(got, string(m.Data()))
			}
			require.NoError(t, batch.Error())
		}
		return got
	}
	pubTo("acme", 0, 50)
	ack("acme", 50)
	pubTo("globex", 0, 50)
	ack("globex", 30)

	require.NoError(t, EnsureStreams(ctx, b.js, cfg))
	retention := func(tenant string) (jetstream.RetentionPolicy, jetstream.StreamState) {
		st, err := b.js.Stream(ctx, IngestStream(tenant))
		require.NoError(t, err)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		return info.Config.Retention, info.State
	}
	ar, as := retention("acme")
	gr, gs := retention("globex")
	t.Logf("after the first start: acme %v with %d msgs; globex %v with %d msgs", ar, as.Msgs, gr, gs.Msgs)
	require.Equal(t, jetstream.WorkQueuePolicy, ar, "a drained limits stream becomes a work queue")
	require.Zero(t, as.Msgs, "its stored and acked messages are gone")
	require.Equal(t, uint64(20), gs.Msgs, "acked messages leave at once; the 20 waiting stay")
	// The collector gets exactly the 20 that waited.
	got := ack("globex", 20)
	require.Equal(t, "30", got[0])
	require.Equal(t, "49", got[19])
	require.Eventually(t, func() bool { _, s := retention("globex"); return s.Msgs == 0 }, 5*time.Second, 20*time.Millisecond)

	require.NoError(t, EnsureStreams(ctx, b.js, cfg), "the next start")
	gr, _ = retention("globex")
	require.Equal(t, jetstream.WorkQueuePolicy, gr, "drained, it becomes a work queue")
	// Both streams take messages again and keep them for the collector.
	pubTo("acme", 100, 3)
	pubTo("globex", 100, 3)
	require.Len(t, ack("acme", 3), 3)
	require.Len(t, ack("globex", 3), 3)
}

// TestOtherProcessesDoNotRewriteStreams: the owner made INGEST_acme with a
// 64 KiB backlog; a collector process started with 128 KiB leaves it alone,
// logs a warning and sets tenantscope_nats_stream_drift.
func TestOtherProcessesDoNotRewriteStreams(t *testing.T) {
	cfg, pw := testConfig(t)
	cfg.Tenants[0].Quota.BacklogBytes = 64 << 10
	b := startBus(t, cfg, pw)
	ctx := context.Background()
	owner, err := NewStreams(b.js, cfg, zerolog.Nop(), prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, owner.Apply(ctx))

	other := cfg
	other.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	other.Tenants[0].Quota.BacklogBytes = 128 << 10
	var logged strings.Builder
	reg := prometheus.NewRegistry()
	collector, err := NewStreams(b.js, other, zerolog.New(&logged), reg)
	require.NoError(t, err)
	drift, err := collector.Check(ctx) // what a collector does at start
	require.NoError(t, err)
	st, serr := b.js.Stream(ctx, IngestStream("acme"))
	require.NoError(t, serr)
	info, serr := st.Info(ctx)
	require.NoError(t, serr)
	t.Logf("collector with backlog_bytes 128 KiB started: drift %v; INGEST_acme max_bytes now %d; log: %s", drift, info.Config.MaxBytes, logged.String())
	require.Equal(t, int64(64<<10), info.Config.MaxBytes, "another process does not change the stream")
	require.Equal(t, []Drift{{Stream: "INGEST_acme", Setting: "max_bytes", Want: "131072", Have: "65536"}}, drift)
	require.Contains(t, logged.String(), `"level":"warn"`)
	require.Contains(t, logged.String(), `"tenant_id":"acme","stream":"INGEST_acme","setting":"max_bytes","stream_has":"65536","configured":"131072"`)
	require.Equal(t, 1.0, gauge(t, reg, "tenantscope_nats_stream_drift", "acme"))
	require.Equal(t, 0.0, gauge(t, reg, "tenantscope_nats_stream_drift", "globex"))

	// A stream nobody created yet is an error that names its owner.
	_, err = NewStreams(b.js, cfg, zerolog.Nop(), nil)
	require.NoError(t, err)
	require.NoError(t, b.js.DeleteStream(ctx, IngestStream("globex")))
	_, err = CheckStreams(ctx, b.js, cfg)
	require.ErrorIs(t, err, ErrStreamMissing)
	require.ErrorContains(t, err, "migrate up")
}

func gauge(t *testing.T, reg *prometheus.Registry, name, tenant string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tenant {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{tenant=%q}", name, tenant)
	return 0
}

// manyTenants is a configuration of n tenants whose backlogs are each 4 MiB,
// as are the platform chain's and the dead letters', on a 64 MiB budget.
func manyTenants(t *testing.T, n int) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.JetStreamBudget = 64 << 20
	cfg.NATS.Stream.MaxBytes = 4 << 20
	for i := range n {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: fmt.Sprint("t", i), Region: "default", NATS: config.Credentials{User: fmt.Sprint("t", i, "-svc")}})
	}
	_, err := config.EnsureSecrets(&cfg)
	require.NoError(t, err)
	return cfg
}

// TestStorageReservations measures what nats-server reserves on a 64 MiB
// budget (max_file_store): exactly what config computes, one max_bytes per
// stream. 14 tenants fit (14 x 4 + 4 + 4 = 64 MiB); a second process
// started with a larger backlog for one tenant does not fail (it only
// checks); 15 tenants do not fit, which Validate says before anything
// starts, and the owner's start says with the arithmetic.
func TestStorageReservations(t *testing.T) {
	ctx := context.Background()
	cfg := manyTenants(t, 14)
	require.NoError(t, cfg.Validate())
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	defer srv.Shutdown()
	nc, err := srv.Connect("test")
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, EnsureStreams(ctx, js, cfg))
	jsz, err := srv.ns.Jsz(nil)
	require.NoError(t, err)
	t.Logf("14 tenants: config computes %d bytes, the server reserved %d of %d", cfg.ReservedStreamBytes(), jsz.ReservedStore, jsz.Config.MaxStore)
	require.Equal(t, int64(64<<20), jsz.Config.MaxStore, "the embedded server's max_file_store is nats.jetstream_budget")
	require.Equal(t, uint64(cfg.ReservedStreamBytes()), jsz.ReservedStore, "nats-server reserves exactly max_bytes per stream")
	require.NoError(t, EnsureStreams(ctx, js, cfg), "the owner's next start, on a full budget")

	// A second process, whose configuration gives t0 8 MiB, starts: it
	// checks, warns and reserves nothing.
	other := cfg
	other.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	other.Tenants[0].Quota.BacklogBytes = 8 << 20
	s, err := NewStreams(js, other, zerolog.Nop(), nil)
	require.NoError(t, err)
	drift, err := s.Check(ctx)
	require.NoError(t, err, "a second process never fails at start because the first created the streams")
	require.Len(t, drift, 1)
	jsz, err = srv.ns.Jsz(nil)
	require.NoError(t, err)
	require.Equal(t, uint64(64<<20), jsz.ReservedStore)

	// 15 tenants: 68 MiB.
	cfg15 := manyTenants(t, 15)
	err = cfg15.Validate()
	t.Logf("15 tenants: Validate: %v", err)
	require.ErrorContains(t, err, "nats.jetstream_budget: the streams reserve 68 MiB on each node that holds them (16 ingest backlogs and the dead letters), more than the budget of 64 MiB")
	srv15, err := Embedded(cfg15, zerolog.Nop())
	require.NoError(t, err)
	defer srv15.Shutdown()
	nc15, err := srv15.Connect("test")
	require.NoError(t, err)
	defer nc15.Close()
	js15, err := jetstream.New(nc15)
	require.NoError(t, err)
	err = EnsureStreams(ctx, js15, cfg15)
	t.Logf("15 tenants: owner's start: %v", err)
	require.ErrorIs(t, err, ErrStorageExhausted)
	require.ErrorContains(t, err, "reserve 68 MiB")
}
