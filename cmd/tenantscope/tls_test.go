package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/edge/edgetest"
	"github.com/tenantscope/tenantscope/suite"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Every hop over TLS, with a CA made in the test: the UI/API listener,
// NATS and the engine's HTTP port refuse plain text; a tenant's service
// publishes over TLS and the collector stores; the CLI reaches the suite.
func TestEveryHopSpeaksTLS(t *testing.T) {
	dir := t.TempDir()
	ca := edgetest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "suite", 2)
	httpAddr, metricsAddr, natsAddr, engineAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfgFile := filepath.Join(dir, "tenantscope.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`data: %s
http: {listen: "%s", metrics_listen: "%s", tls_cert: %s, tls_key: %s}
nats: {listen: "%s", tls_cert: %s, tls_key: %s, ca_file: %s}
clickhouse: {engine_listen: "%s", engine_tls_cert: %s, engine_tls_key: %s, ca_file: %s}
tenants:
  - {id: acme, name: Acme, region: default, nats: {user: acme-svc}}
users:
  - {name: carol, role: compliance}
`, filepath.Join(dir, "data"), httpAddr, metricsAddr, cert, key, natsAddr, cert, key, ca.File, engineAddr, cert, key, ca.File)), 0o600))
	cfg, err := config.Load(cfgFile)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	finished := make(chan struct{})
	var runErr error
	go func() {
		defer close(finished)
		runErr = suite.Run(ctx, suite.Options{Config: cfg, Components: suite.All, Log: zerolog.Nop(), Out: io.Discard,
			Ready: func(*suite.Suite) { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
		require.NoError(t, runErr)
	})
	select {
	case <-ready:
	case <-finished:
		t.Fatalf("suite: %v", runErr)
	case <-time.After(90 * time.Second):
		t.Fatal("suite not ready")
	}

	// The UI/API listener: plain HTTP gets nowhere, HTTPS with the CA works.
	res, err := http.Get("http://" + httpAddr + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusBadRequest, res.StatusCode)
		require.NotContains(t, string(body), "ok")
	}
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	for _, u := range []string{"https://" + httpAddr + "/readyz", "https://" + metricsAddr + "/metrics"} {
		require.Eventually(t, func() bool {
			res, err := tlsClient.Get(u)
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK && res.Header.Get("Strict-Transport-Security") != ""
		}, 30*time.Second, 200*time.Millisecond, u)
	}
	_, err = http.Get("https://" + httpAddr + "/healthz")
	require.Error(t, err, "a client that does not trust the CA is refused")

	// NATS: plain text is refused; the tenant publishes over TLS.
	b, err := config.LoadBootstrap(cfg.Data)
	require.NoError(t, err)
	pw := b.NATS["acme-svc"]
	_, err = nats.Connect("nats://"+natsAddr, nats.UserInfo("acme-svc", pw), nats.MaxReconnects(0))
	require.Error(t, err, "a client without the CA does not connect")
	nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo("acme-svc", pw), nats.RootCAs(ca.File))
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, nc.TLSRequired())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	m := nats.NewMsg("tenant.acme.orders.order_created")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = []byte(`{"actor":"u1","over":"tls"}`)
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)

	// The engine: plain HTTP is refused; over https with the CA the event
	// is there.
	if res, err := http.Get("http://" + engineAddr + "/?query=SELECT+version()"); err == nil {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusBadRequest, res.StatusCode, "plain HTTP on the engine's TLS port")
		require.NotContains(t, string(body), "26.")
	}
	st, err := chstore.Open(ctx, chstore.Options{DSN: "https://" + config.EngineReader + ":" + b.EnginePasswords[config.EngineReader] + "@" + engineAddr,
		Database: "tenantscope", Name: "t", CAFile: ca.File})
	require.NoError(t, err)
	defer st.Close()
	require.Eventually(t, func() bool {
		var n uint64
		return st.QueryRow(ctx, []any{&n}, "SELECT count() FROM events WHERE tenant_id = 'acme'") == nil && n == 1
	}, 30*time.Second, 200*time.Millisecond, "the event published over TLS is stored")

	// The CLI reaches the TLS suite: the engine over https, NATS over TLS.
	out, err := runCmd(t, "verify", "--config", cfgFile)
	require.NoError(t, err, out)
	require.Contains(t, out, "acme")
	out, err = runCmd(t, "deadletter", "list", "--config", cfgFile)
	require.NoError(t, err, out)
}
