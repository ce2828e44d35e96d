package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/migrations"
)

// migratedEngine starts an engine in dir (a temporary directory when
// empty) with a migrated database "bench"; stop closes everything and
// removes a temporary directory.
func migratedEngine(ctx context.Context, dir, lib, name string) (st *chstore.Store, stop func(), err error) {
	stores, _, stop, err := migratedDatabases(ctx, dir, lib, name, "bench")
	if err != nil {
		return nil, nil, err
	}
	return stores["bench"], stop, nil
}

// migratedDatabases is migratedEngine with a migrated store for each
// database named, all on the one engine, and the engine's HTTP address.
func migratedDatabases(ctx context.Context, dir, lib, name string, dbs ...string) (stores map[string]*chstore.Store, addr string, stop func(), err error) {
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
			return nil, "", nil, err
		}
		cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) }) //nolint:errcheck // benchmark teardown
	}
	local, err := engine.StartLocal(engine.Config{Dir: dir, LibPath: lib, Logger: zerolog.Nop()}, benchServerConfig(), "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	cleanups = append(cleanups, func() { _ = local.Close(context.Background()) }) //nolint:errcheck // benchmark teardown
	stores = map[string]*chstore.Store{}
	for _, db := range dbs {
		st, err := openMigrated(ctx, local.Addr, db)
		if err != nil {
			return nil, "", nil, err
		}
		cleanups = append(cleanups, func() { _ = st.Close() }) //nolint:errcheck // benchmark teardown
		stores[db] = st
	}
	return stores, local.Addr, stop, nil
}

// openMigrated opens database db on the server at http://addr and applies
// the migrations.
func openMigrated(ctx context.Context, addr, db string) (*chstore.Store, error) {
	st, err := chstore.Open(ctx, chstore.Options{DSN: benchDSN(addr), Database: db, Name: db})
	if err != nil {
		return nil, err
	}
	if _, err := migrations.Up(ctx, st, migrations.Params{Database: db}, nil); err != nil {
		_ = st.Close() //nolint:errcheck // already failing
		return nil, err
	}
	return st, nil
}

// otherServer starts "tenantscope engine" (binary) on a temporary directory
// as a second ClickHouse server and returns its HTTP address.
func otherServer(ctx context.Context, binary, lib, peer string) (addr string, stop func(), err error) {
	c, err := startEngineChild(ctx, binary, lib, peer)
	if err != nil {
		return "", nil, err
	}
	return c.addr, c.stop, nil
}

// engineChild is "tenantscope engine" running in a child process.
type engineChild struct {
	addr string
	pid  int
	// stop interrupts it, waits for it and removes its data directory.
	stop func()
}

// startEngineChild starts "tenantscope engine" (binary) on a temporary
// directory, with the benchmark's users; url() may read urlHosts.
func startEngineChild(ctx context.Context, binary, lib string, urlHosts ...string) (engineChild, error) {
	dir, err := os.MkdirTemp("", "tenantscope-bench-other-")
	if err != nil {
		return engineChild{}, err
	}
	args := []string{"engine", "--data", dir, "--listen", "127.0.0.1:0", "--chdb-lib", lib,
		"--user", benchUser, "--password", benchPassword, "--reader-password", benchPassword + "-ro"}
	for _, h := range urlHosts {
		args = append(args, "--allow-url-host", h)
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		_ = os.RemoveAll(dir) //nolint:errcheck // already failing
		return engineChild{}, err
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir) //nolint:errcheck // already failing
		return engineChild{}, err
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt) //nolint:errcheck // benchmark teardown
		_ = cmd.Wait()                       //nolint:errcheck // benchmark teardown
		_ = os.RemoveAll(dir)                //nolint:errcheck // benchmark teardown
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	_, rest, ok := strings.Cut(line, " at http://")
	if err != nil || !ok {
		stop()
		return engineChild{}, fmt.Errorf("second engine did not start (%q): %v", line, err)
	}
	addr, _, _ := strings.Cut(rest, " ")
	return engineChild{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}
