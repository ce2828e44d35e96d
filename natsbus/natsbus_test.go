package natsbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

func testConfig(t testing.TB) (config.Config, map[string]string) {
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Tenants = []config.Tenant{
		{ID: "acme", Region: "default", NATS: config.Credentials{User: "acme-svc"}},
		{ID: "globex", Region: "default", NATS: config.Credentials{User: "globex-svc"}},
	}
	_, err := config.EnsureSecrets(&cfg)
	require.NoError(t, err)
	b, err := config.LoadBootstrap(cfg.Data)
	require.NoError(t, err)
	return cfg, b.NATS
}

func TestTenantCredentialsStayInTheirSubjects(t *testing.T) {
	cfg, pw := testConfig(t)
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	defer srv.Shutdown()
	ctx := context.Background()
	nc, err := srv.Connect("test")
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, EnsureStreams(ctx, js, cfg))
	require.NoError(t, EnsureStreams(ctx, js, cfg), "idempotent")

	errs := make(chan error, 10)
	acme, err := nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", pw["acme-svc"]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	require.NoError(t, err)
	defer acme.Close()
	ajs, err := jetstream.New(acme)
	require.NoError(t, err)

	ack, err := ajs.Publish(ctx, "tenant.acme.billing.invoice_created", []byte(`{"id":1}`))
	require.NoError(t, err, "own subjects are allowed")
	require.Equal(t, IngestStream("acme"), ack.Stream)

	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = ajs.Publish(tctx, "tenant.globex.billing.invoice_created", []byte(`{"id":2}`))
	require.Error(t, err, "another tenant's subjects are refused")
	select {
	case perr := <-errs:
		require.ErrorContains(t, perr, "Permissions Violation")
	case <-time.After(5 * time.Second):
		t.Fatal("no permissions violation reported")
	}
	// Nor may a tenant read the stream or the bus.
	_, err = acme.SubscribeSync("tenant.>")
	require.NoError(t, err) // the violation arrives asynchronously
	select {
	case perr := <-errs:
		require.ErrorContains(t, perr, "Permissions Violation")
	case <-time.After(5 * time.Second):
		t.Fatal("subscribe to tenant.> was not refused")
	}
	_, err = ajs.Stream(tctx, IngestStream("acme"))
	require.Error(t, err)

	// Exactly one message is in the streams: the allowed one.
	gst, err := js.Stream(ctx, IngestStream("globex"))
	require.NoError(t, err)
	ginfo, err := gst.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, ginfo.State.Msgs)
	st, err := js.Stream(ctx, IngestStream("acme"))
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)
	require.Equal(t, jetstream.DiscardNew, info.Config.Discard)
	require.Equal(t, cfg.NATS.Stream.MaxBytes, info.Config.MaxBytes, "backlog limit defaults to nats.stream.max_bytes")

	// Wrong password is refused.
	_, err = nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", "wrong"))
	require.True(t, errors.Is(err, nats.ErrAuthorization) || err != nil)
}

func TestStreamSurvivesRestart(t *testing.T) {
	cfg, _ := testConfig(t)
	ctx := context.Background()
	for round := range 2 {
		srv, err := Embedded(cfg, zerolog.Nop())
		require.NoError(t, err)
		nc, err := srv.Connect("test")
		require.NoError(t, err)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		require.NoError(t, EnsureStreams(ctx, js, cfg))
		_, err = js.Publish(ctx, "tenant.acme.svc.act", []byte("x"), jetstream.WithMsgID("same-id"))
		require.NoError(t, err)
		st, err := js.Stream(ctx, IngestStream("acme"))
		require.NoError(t, err)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(1), info.State.Msgs, "round %d: stored once, deduplicated by Nats-Msg-Id", round)
		nc.Close()
		srv.Shutdown()
	}
}
