// Package enginetest gives tests a real embedded ClickHouse engine served
// over its HTTP interface, with a fresh database per test.
//
// The engine boots once per process (chDB cannot host two data directories
// at once), in a temporary directory removed when the test binary exits.
// Every call of New creates and later drops its own database, so tests do
// not see each other's tables. A missing library fails the test with the
// make target to run; it never skips.
package enginetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/engine"
)

// Engine is the process-wide engine under test.
type Engine struct {
	Engine *engine.Engine
	Server *engine.Server
	Addr   string // host:port of the HTTP interface
	dir    string
	local  *engine.Local
}

var (
	once    sync.Once
	shared  *Engine
	errOpen error
)

// Shared boots (once) and returns the process-wide engine.
func Shared(tb testing.TB) *Engine {
	tb.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "tenantscope-engine-test-")
		if err != nil {
			errOpen = err
			return
		}
		shared, errOpen = Start(dir, engine.ServerConfig{})
	})
	if errOpen != nil {
		tb.Fatalf("embedded ClickHouse engine: %v", errOpen)
	}
	return shared
}

// Start opens an engine on dir and serves it on a free loopback port.
func Start(dir string, cfg engine.ServerConfig) (*Engine, error) {
	log := zerolog.Nop()
	if os.Getenv("TENANTSCOPE_TEST_LOG") != "" {
		log = zerolog.New(os.Stderr).With().Timestamp().Logger()
	}
	cfg.Logger = log
	l, err := engine.StartLocal(engine.Config{Dir: dir, Logger: log, PoolSize: 4}, cfg, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &Engine{Engine: l.Engine, Server: l.Server, Addr: l.Addr, dir: dir, local: l}, nil
}

// Stop shuts the server and the engine down (data stays in its directory).
func (e *Engine) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.local.Close(ctx)
}

// Cleanup stops the shared engine and removes its directory; call it from
// TestMain after m.Run.
func Cleanup() {
	if shared != nil {
		_ = shared.Stop()            //nolint:errcheck // process is exiting
		_ = os.RemoveAll(shared.dir) //nolint:errcheck // temp dir
	}
}

// DB is a fresh database in the shared engine.
type DB struct {
	*Engine
	Name string
}

// New creates a fresh database for this test, dropped at its end.
func New(tb testing.TB) *DB {
	tb.Helper()
	e := Shared(tb)
	b := make([]byte, 6)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	name := "t_" + hex.EncodeToString(b)
	if _, err := e.Engine.Control("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := e.Engine.Control("DROP DATABASE IF EXISTS " + name + " SYNC"); err != nil {
			tb.Errorf("drop test database: %v", err)
		}
	})
	return &DB{Engine: e, Name: name}
}

// URL is the base HTTP URL of the interface.
func (e *Engine) URL() string { return "http://" + e.Addr }

// Options are clickhouse-go options for this database over HTTP.
func (d *DB) Options() *clickhouse.Options {
	return &clickhouse.Options{
		Protocol: clickhouse.HTTP,
		Addr:     []string{d.Addr},
		Auth:     clickhouse.Auth{Database: d.Name},
	}
}

// Conn opens a clickhouse-go connection, closed at the end of the test.
func (d *DB) Conn(tb testing.TB, mutate ...func(*clickhouse.Options)) clickhouse.Conn {
	tb.Helper()
	opt := d.Options()
	for _, m := range mutate {
		m(opt)
	}
	c, err := clickhouse.Open(opt)
	if err != nil {
		tb.Fatalf("clickhouse.Open: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() }) //nolint:errcheck // test teardown
	return c
}

// DSN is a clickhouse-go DSN for this database.
func (d *DB) DSN() string { return fmt.Sprintf("http://%s/%s", d.Addr, d.Name) }

// Main runs a package's tests and then stops the shared engine; use it as
// TestMain.
func Main(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(serveChild(dir))
	}
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// childEnv makes the test binary serve an engine of its own (OtherServer).
const childEnv = "TENANTSCOPE_ENGINE_TEST_CHILD_DIR"

// OtherServer starts a second ClickHouse server for the test: the test
// binary again, in a child process (one process holds one engine), serving
// an engine on its own data directory. It returns the server's host:port;
// the child stops at the test's end.
func OtherServer(tb testing.TB) string {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+tb.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close() //nolint:errcheck // the child stops when its stdin closes
		_ = cmd.Wait()    //nolint:errcheck // its exit status does not matter
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("second engine did not start: %v", err)
	}
	return strings.TrimSpace(line)
}

// serveChild serves an engine on dir, prints its address and runs until
// stdin closes.
func serveChild(dir string) int {
	e, err := Start(dir, engine.ServerConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine:", err)
		return 1
	}
	fmt.Println(e.Addr)
	_, _ = io.Copy(io.Discard, os.Stdin) //nolint:errcheck // returns when the parent closes stdin
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "engine stop:", err)
		return 1
	}
	return 0
}
