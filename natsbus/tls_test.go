package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/edge/edgetest"
)

// The embedded listener with mutual TLS: a client without a certificate
// signed by the CA is refused even with the right password; one with a
// certificate publishes; the suite's own connections present theirs.
func TestMutualTLS(t *testing.T) {
	cfg, pw := testConfig(t)
	dir := t.TempDir()
	ca := edgetest.NewCA(t, dir)
	serverCert, serverKey := ca.Issue(t, dir, "server", 1)
	clientCert, clientKey := ca.Issue(t, dir, "client", 2)
	cfg.NATS.TLSCert, cfg.NATS.TLSKey, cfg.NATS.CAFile, cfg.NATS.TLSVerifyClients = serverCert, serverKey, ca.File, true
	cfg.NATS.ClientCert, cfg.NATS.ClientKey = clientCert, clientKey
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	defer srv.Shutdown()
	suite, err := srv.Connect("suite")
	require.NoError(t, err, "the suite presents its certificate")
	defer suite.Close()
	js, err := jetstream.New(suite)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, EnsureStreams(ctx, js, cfg))

	_, err = nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", pw["acme-svc"]), nats.RootCAs(ca.File), nats.MaxReconnects(0))
	require.Error(t, err, "no client certificate: refused")
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("acme-svc", pw["acme-svc"]), nats.RootCAs(ca.File),
		nats.ClientCert(clientCert, clientKey))
	require.NoError(t, err)
	defer nc.Close()
	tjs, err := jetstream.New(nc)
	require.NoError(t, err)
	ack, err := tjs.Publish(ctx, "tenant.acme.orders.created", []byte(`{"over":"mtls"}`))
	require.NoError(t, err)
	require.Equal(t, IngestStream("acme"), ack.Stream)
}
