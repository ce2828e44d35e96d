package bench

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/migrations"
	"github.com/tenantscope/tenantscope/natsbus"
)

// pipeline is what the ingest benchmarks run on: the migrated "bench"
// database of the engine at local, and an embedded NATS server with sc's
// secrets and streams.
type pipeline struct {
	st *chstore.Store
	ns *natsbus.Server
	nc *nats.Conn
	js jetstream.JetStream
}

// startPipeline fills sc's secrets, migrates the database and starts NATS;
// close stops what it started.
func startPipeline(ctx context.Context, local *engine.Local, sc *config.Config) (p pipeline, closeAll func(), err error) {
	var closers []func()
	closeAll = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	if _, err = config.EnsureSecrets(sc); err != nil {
		return p, closeAll, err
	}
	if p.st, err = chstore.Open(ctx, chstore.Options{DSN: benchDSN(local.Addr), Database: "bench", Name: "bench", MaxOpenConns: 4}); err != nil {
		return p, closeAll, err
	}
	closers = append(closers, func() { _ = p.st.Close() }) //nolint:errcheck // benchmark teardown
	if _, err = migrations.Up(ctx, p.st, migrations.Params{Database: "bench"}, nil); err != nil {
		return p, closeAll, err
	}
	if p.ns, err = natsbus.Embedded(*sc, zerolog.Nop()); err != nil {
		return p, closeAll, err
	}
	closers = append(closers, p.ns.Shutdown)
	if p.nc, err = p.ns.Connect("bench"); err != nil {
		return p, closeAll, err
	}
	closers = append(closers, p.nc.Close)
	if p.js, err = jetstream.New(p.nc); err != nil {
		return p, closeAll, err
	}
	if err = natsbus.EnsureStreams(ctx, p.js, *sc); err != nil {
		return p, closeAll, err
	}
	return p, closeAll, nil
}
