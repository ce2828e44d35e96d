package natsbus

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A cluster in operator mode with the keys 'tenantscope nats setup' writes:
// the suite signs in with its creds and owns the streams; each tenant's
// creds file publishes its own subjects with acks and observes nothing of
// the suite or the other tenant; a user JWT of another operator is refused.
func TestDecentralizedAuthIsolatesTenants(t *testing.T) {
	cfg, _ := testConfig(t)
	dir := filepath.Join(t.TempDir(), "nats-auth")
	auth, err := SetupAuth(dir, cfg)
	require.NoError(t, err)
	_, err = SetupAuth(dir, cfg)
	require.NoError(t, err, "setup is idempotent")
	for _, f := range []string{"operator.nk", "accounts/TENANTSCOPE.nk", "accounts/TENANT_acme.nk", "suite.creds", "resolver.conf"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}

	resolver, err := os.ReadFile(filepath.Join(dir, "resolver.conf"))
	require.NoError(t, err)
	opts := &server.Options{}
	require.NoError(t, opts.ProcessConfigString(string(resolver)))
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	defer ns.Shutdown()

	suiteCreds, err := CredsOption(filepath.Join(dir, "suite.creds"))
	require.NoError(t, err)
	suite, err := nats.Connect(ns.ClientURL(), suiteCreds)
	require.NoError(t, err)
	defer suite.Close()

	conns := map[string][]*nats.Conn{}
	for _, tenant := range []string{"acme", "globex"} {
		creds, err := auth.TenantCreds(tenant, tenant+"-svc")
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), tenant+".creds")
		require.NoError(t, os.WriteFile(path, creds, 0o600))
		opt, err := CredsOption(path)
		require.NoError(t, err)
		nc, err := nats.Connect(ns.ClientURL(), opt, quiet())
		require.NoError(t, err, "%s signs in with its creds file", tenant)
		defer nc.Close()
		conns[tenant] = []*nats.Conn{nc}
	}
	assertIsolated(t, cfg, suite, conns)

	// Creds from another deployment's keys are refused.
	other, err := SetupAuth(filepath.Join(t.TempDir(), "other"), cfg)
	require.NoError(t, err)
	foreign, err := other.TenantCreds("acme", "intruder")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "foreign.creds")
	require.NoError(t, os.WriteFile(path, foreign, 0o600))
	opt, err := CredsOption(path)
	require.NoError(t, err)
	_, err = nats.Connect(ns.ClientURL(), opt)
	require.Error(t, err)

	// A tenant that is not configured has no account.
	loaded, err := LoadAuth(dir)
	require.NoError(t, err)
	_, err = loaded.TenantCreds("initech", "svc")
	require.ErrorContains(t, err, "has no account")
}
