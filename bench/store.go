package bench

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/migrations"
)

// migratedEngine starts an engine in dir (a temporary directory when
// empty) with a migrated database "bench"; stop closes everything and
// removes a temporary directory.
func migratedEngine(ctx context.Context, dir, lib, name string) (st *chstore.Store, stop func(), err error) {
	stores, stop, err := migratedDatabases(ctx, dir, lib, name, "bench")
	if err != nil {
		return nil, nil, err
	}
	return stores["bench"], stop, nil
}

// migratedDatabases is migratedEngine with a migrated store for each
// database named, all on the one engine.
func migratedDatabases(ctx context.Context, dir, lib, name string, dbs ...string) (stores map[string]*chstore.Store, stop func(), err error) {
	var cleanups []func()
	stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tenantscope-bench-"+name+"-"); err != nil {
			return nil, nil, err
		}
		cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) }) //nolint:errcheck // benchmark teardown
	}
	local, err := engine.StartLocal(engine.Config{Dir: dir, LibPath: lib, Logger: zerolog.Nop()}, engine.ServerConfig{Logger: zerolog.Nop()}, "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	cleanups = append(cleanups, func() { _ = local.Close(context.Background()) }) //nolint:errcheck // benchmark teardown
	stores = map[string]*chstore.Store{}
	for _, db := range dbs {
		st, err := chstore.Open(ctx, chstore.Options{DSN: "http://" + local.Addr, Database: db, Name: db})
		if err != nil {
			return nil, nil, err
		}
		cleanups = append(cleanups, func() { _ = st.Close() }) //nolint:errcheck // benchmark teardown
		if _, err = migrations.Up(ctx, st, migrations.Params{Database: db}, nil); err != nil {
			return nil, nil, err
		}
		stores[db] = st
	}
	return stores, stop, nil
}
