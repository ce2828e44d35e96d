// Package sessionstest gives tests a session store on a real, embedded NATS
// server with JetStream (no mock).
package sessionstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/sessions"
)

// JetStream starts an embedded NATS server (random port, JetStream stored
// in a temporary directory) for the test and connects to it.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second), "embedded NATS server did not start")
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// Store opens a session store with cfg on js.
func Store(t testing.TB, js jetstream.JetStream, cfg sessions.Config) *sessions.Store {
	t.Helper()
	st, err := sessions.Open(context.Background(), js, cfg)
	require.NoError(t, err)
	return st
}
