package bench

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantscope/tenantscope/identity/sessions"
)

// sessionStore gives a benchmarked UI its session store, as serve does: a
// NATS server with JetStream in this process (a temporary directory), and
// the sessions bucket on it. stop shuts it down.
func sessionStore(ctx context.Context) (st *sessions.Store, stop func(), err error) {
	dir, err := os.MkdirTemp("", "tenantscope-bench-sessions-")
	if err != nil {
		return nil, nil, err
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		_ = os.RemoveAll(dir) //nolint:errcheck // benchmark teardown
		return nil, nil, err
	}
	go ns.Start()
	var nc *nats.Conn
	stop = func() {
		if nc != nil {
			nc.Close()
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(dir) //nolint:errcheck // benchmark teardown
	}
	if !ns.ReadyForConnections(10 * time.Second) {
		stop()
		return nil, nil, errors.New("bench: the sessions' NATS server did not start")
	}
	if nc, err = nats.Connect(ns.ClientURL()); err == nil {
		var js jetstream.JetStream
		if js, err = jetstream.New(nc); err == nil {
			st, err = sessions.Open(ctx, js, sessions.Config{})
		}
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return st, stop, nil
}
