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
	// User and Password are the read-write user every helper connects
	// with; Reader and ReaderPassword the read-only one. The engine, like
	// the suite's, answers no one without credentials.
	User, Password         string
	Reader, ReaderPassword string
	dir                    string
	local                  *engine.Local
}

// Test credentials: one password per test process (a child OtherServer
// inherits them through the environment).
const (
	passwordEnv = "TENANTSCOPE_ENGINE_TEST_PASSWORD"
	urlHostsEnv = "TENANTSCOPE_ENGINE_TEST_URL_HOSTS"
)

func testPassword() string {
	if p := os.Getenv(passwordEnv); p != "" {
		return p
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	p := hex.EncodeToString(b)
	_ = os.Setenv(passwordEnv, p) //nolint:errcheck // only the child's inheritance depends on it
	return p
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
	pw := testPassword()
	if cfg.Users == nil {
		cfg.Users = map[string]engine.User{"tenantscope": {Password: pw}, "reader": {Password: pw + "-ro", ReadOnly: true}}
	}
	if h := os.Getenv(urlHostsEnv); h != "" {
		cfg.URLHosts = append(cfg.URLHosts, strings.Split(h, ",")...)
	}
	l, err := engine.StartLocal(engine.Config{Dir: dir, Logger: log, PoolSize: 4}, cfg, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &Engine{Engine: l.Engine, Server: l.Server, Addr: l.Addr, dir: dir, local: l,
		User: "tenantscope", Password: pw, Reader: "reader", ReaderPassword: pw + "-ro"}, nil
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

// URL is the base HTTP URL of the interface, with the read-write user's
// credentials (net/http sends them as basic auth).
func (e *Engine) URL() string { return "http://" + e.User + ":" + e.Password + "@" + e.Addr }

// AnonymousURL is the base HTTP URL without credentials.
func (e *Engine) AnonymousURL() string { return "http://" + e.Addr }

// ReaderURL is the base HTTP URL with the read-only user's credentials.
func (e *Engine) ReaderURL() string {
	return "http://" + e.Reader + ":" + e.ReaderPassword + "@" + e.Addr
}

// Options are clickhouse-go options for this database over HTTP.
func (d *DB) Options() *clickhouse.Options {
	return &clickhouse.Options{
		Protocol: clickhouse.HTTP,
		Addr:     []string{d.Addr},
		Auth:     clickhouse.Auth{Database: d.Name, Username: d.User, Password: d.Password},
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
func (d *DB) DSN() string {
	return fmt.Sprintf("http://%s:%s@%s/%s", d.User, d.Password, d.Addr, d.Name)
}

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
// an engine on its own data directory, with the same credentials. It returns
// the server's user:password@host:port; the child stops at the test's end.
// Each of the two may read the other with url() (region moves).
func OtherServer(tb testing.TB) string {
	tb.Helper()
	parent := Shared(tb)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+tb.TempDir(), urlHostsEnv+"="+parent.Addr, passwordEnv+"="+parent.Password)
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
	addr := strings.TrimSpace(line)
	parent.Server.AllowURLHost(addr)
	return parent.User + ":" + parent.Password + "@" + addr
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
