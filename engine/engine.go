// Package engine runs the embedded ClickHouse engine (chDB) in-process and
// serves it through ClickHouse's HTTP interface, so that the application, and
// Grafana, curl or any ClickHouse client, talk to it exactly as to a server.
//
// An Engine owns one data directory. It keeps a pool of read-write
// connections, a pool of read-only ones (readonly=2, for GET requests) and one
// control connection that is never pooled: it issues KILL QUERY for cancelled
// requests and keeps the engine booted while pools shrink and grow.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/engine/chdb"
)

// Config configures an Engine.
type Config struct {
	// Dir is the data directory. Required.
	Dir string
	// LibPath is the path of libchdb; empty means chdb.DefaultLibraryPath.
	LibPath string
	// PoolSize is the number of read-write connections (and of read-only
	// ones); 0 means the number of CPUs.
	PoolSize int
	Logger   zerolog.Logger
	// Allocator is the engine allocator's options (jemalloc's, as
	// JE_MALLOC_CONF takes them), set before the library is first loaded
	// in this process. Empty: the library's own. JE_MALLOC_CONF in the
	// environment wins.
	Allocator string
}

// Validate names every missing or wrong field.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("engine: Dir (data directory) is required"))
	}
	if c.PoolSize < 0 {
		errs = append(errs, fmt.Errorf("engine: PoolSize must be >= 0, got %d", c.PoolSize))
	}
	return errors.Join(errs...)
}

// ErrClosed is returned by Acquire after Close started.
var ErrClosed = errors.New("engine: closed")

// The engine boots once per process for one path; a second Engine in the same
// process would silently share or reboot it.
var openMu sync.Mutex
var openEngine *Engine

// Engine is the embedded ClickHouse engine of one data directory.
type Engine struct {
	cfg  Config
	lib  *chdb.Lib
	dir  string
	log  zerolog.Logger
	ctrl *chdb.Conn
	cmu  sync.Mutex // serialises the control connection

	rw, ro *pool

	inflight sync.WaitGroup
	closed   atomic.Bool
	closeMu  sync.Mutex

	// facts read at open, served in headers and the handshake
	Version     string
	Revision    uint64
	Timezone    string
	DisplayName string
}

// allocatorEnv is where libchdb's jemalloc (built with the je_ prefix)
// reads its options.
const allocatorEnv = "JE_MALLOC_CONF"

// Open loads the library if needed, boots the engine on cfg.Dir and opens the
// control connection. Pool connections open on demand.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = runtime.NumCPU()
	}
	if cfg.LibPath == "" {
		cfg.LibPath = chdb.DefaultLibraryPath(os.Getenv)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("engine: data directory %q: %w", cfg.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("engine: create data directory: %w", err)
	}
	openMu.Lock()
	defer openMu.Unlock()
	if openEngine != nil {
		return nil, fmt.Errorf("engine: %s is already open in this process; one process opens one engine", openEngine.dir)
	}
	if cfg.Allocator != "" && os.Getenv(allocatorEnv) == "" {
		// Read by the library's allocator when it is loaded (the binary
		// links libc, so this reaches the C environment).
		if err := os.Setenv(allocatorEnv, cfg.Allocator); err != nil {
			return nil, fmt.Errorf("engine: allocator options: %w", err)
		}
	}
	lib, err := chdb.Load(cfg.LibPath)
	if err != nil {
		return nil, err
	}
	ctrl, err := lib.Connect("--path=" + dir)
	if err != nil {
		return nil, fmt.Errorf("engine: open %s (is another process using it?): %w", dir, err)
	}
	e := &Engine{cfg: cfg, lib: lib, dir: dir, log: cfg.Logger, ctrl: ctrl}
	e.rw = newPool(cfg.PoolSize, func() (*chdb.Conn, error) { return lib.Connect("--path=" + dir) })
	e.ro = newPool(cfg.PoolSize, func() (*chdb.Conn, error) { return lib.Connect("--path="+dir, "--readonly=2") })
	res, err := ctrl.Query([]byte("SELECT version(), revision(), timezone(), displayName()"), "TSV", nil)
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("engine: read version: %w", err)
	}
	var rev uint64
	if _, err := fmt.Sscanf(string(res.Data), "%s\t%d\t%s\t%s", &e.Version, &rev, &e.Timezone, &e.DisplayName); err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("engine: parse version %q: %w", res.Data, err)
	}
	e.Revision = rev
	openEngine = e
	e.log.Info().Str("dir", dir).Str("version", e.Version).Int("pool", cfg.PoolSize).Msg("embedded ClickHouse engine open")
	return e, nil
}

// Dir is the absolute data directory.
func (e *Engine) Dir() string { return e.dir }

// Conn is a leased connection with the state the HTTP layer applied to it.
type Conn struct {
	*chdb.Conn
	readonly bool
	database string            // current database ("" = default)
	settings map[string]string // settings set on it by requests
	dirty    bool              // state unknown: close instead of reuse
}

// MarkDirty makes Release close the connection instead of pooling it.
func (c *Conn) MarkDirty() { c.dirty = true }

// Acquire leases a connection, waiting for a free one until ctx ends.
func (e *Engine) Acquire(ctx context.Context, readonly bool) (*Conn, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	e.inflight.Add(1)
	p := e.rw
	if readonly {
		p = e.ro
	}
	c, err := p.get(ctx)
	if err != nil {
		e.inflight.Done()
		return nil, err
	}
	c.readonly = readonly
	return c, nil
}

// Release returns a leased connection.
func (e *Engine) Release(c *Conn) {
	p := e.rw
	if c.readonly {
		p = e.ro
	}
	p.put(c, c.dirty || e.closed.Load())
	e.inflight.Done()
}

// openDedicated opens a connection outside the pools (a session's).
func (e *Engine) openDedicated(readonly bool) (*Conn, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	e.inflight.Add(1)
	args := []string{"--path=" + e.dir}
	if readonly {
		args = append(args, "--readonly=2")
	}
	c, err := e.lib.Connect(args...)
	if err != nil {
		e.inflight.Done()
		return nil, err
	}
	return &Conn{Conn: c, settings: map[string]string{}}, nil
}

func (e *Engine) closeDedicated(c *Conn) {
	c.Close()
	e.inflight.Done()
}

// callables lists the engine's table functions, table engines and database
// engines, for the sandbox; nil when the engine cannot say.
func (e *Engine) callables() []string {
	if e.ctrl == nil {
		return nil
	}
	r, err := e.Control("SELECT name FROM system.table_functions UNION ALL SELECT name FROM system.table_engines UNION ALL SELECT name FROM system.database_engines")
	if err != nil {
		e.log.Warn().Err(err).Msg("engine: listing table functions and engines; refusing the known outside ones only")
		return nil
	}
	return strings.Split(strings.TrimSpace(string(r.Data)), "\n")
}

// Control runs a statement on the control connection (KILL QUERY, admin).
func (e *Engine) Control(sql string) (*chdb.Result, error) {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.ctrl == nil {
		return nil, ErrClosed
	}
	return e.ctrl.Query([]byte(sql), "TSV", nil)
}

// Kill asks the engine to stop every running statement whose text holds tag.
func (e *Engine) Kill(tag string) error {
	// The pattern is split so the KILL statement does not match itself.
	_, err := e.Control(fmt.Sprintf("KILL QUERY WHERE query LIKE concat('%%', '%s', '%%') AND query NOT LIKE 'KILL QUERY%%' ASYNC FORMAT Null", tag))
	return err
}

// Running counts statements in the engine's system.processes, excluding the
// counting statement itself.
func (e *Engine) Running() (int, error) {
	r, err := e.Control("SELECT count() FROM system.processes WHERE query NOT LIKE '%system.processes%'")
	if err != nil {
		return 0, err
	}
	var n int
	_, err = fmt.Sscan(string(r.Data), &n)
	return n, err
}

// Close stops leasing, waits for leased connections until ctx ends, then
// kills what still runs, closes every connection and shuts the engine down.
// Data written before Close is on disk when it returns.
func (e *Engine) Close(ctx context.Context) error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.closed.Swap(true) {
		return nil
	}
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.log.Warn().Msg("engine: close deadline reached, killing running queries")
		if _, err := e.Control("KILL QUERY WHERE query NOT LIKE 'KILL QUERY%' ASYNC FORMAT Null"); err != nil {
			e.log.Error().Err(err).Msg("engine: kill running queries")
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return errors.New("engine: queries still running 10s after KILL; connections left open")
		}
	}
	e.rw.close()
	e.ro.close()
	e.cmu.Lock()
	e.ctrl.Close()
	e.ctrl = nil
	e.cmu.Unlock()
	openMu.Lock()
	openEngine = nil
	openMu.Unlock()
	e.log.Info().Str("dir", e.dir).Msg("embedded ClickHouse engine closed")
	return nil
}

// pool is a bounded set of connections opened on demand.
type pool struct {
	slots chan struct{} // one token per connection that may exist
	idle  chan *Conn
	open  func() (*chdb.Conn, error)
	mu    sync.Mutex
	all   map[*Conn]struct{}
}

func newPool(size int, open func() (*chdb.Conn, error)) *pool {
	p := &pool{slots: make(chan struct{}, size), idle: make(chan *Conn, size), open: open, all: map[*Conn]struct{}{}}
	for range size {
		p.slots <- struct{}{}
	}
	return p
}

func (p *pool) get(ctx context.Context) (*Conn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case <-p.slots:
		cc, err := p.open()
		if err != nil {
			p.slots <- struct{}{}
			return nil, fmt.Errorf("engine: open connection: %w", err)
		}
		c := &Conn{Conn: cc, settings: map[string]string{}}
		p.mu.Lock()
		p.all[c] = struct{}{}
		p.mu.Unlock()
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: wait for a connection: %w", ctx.Err())
	}
}

func (p *pool) put(c *Conn, discard bool) {
	if discard {
		p.mu.Lock()
		delete(p.all, c)
		p.mu.Unlock()
		c.Close()
		p.slots <- struct{}{}
		return
	}
	p.idle <- c
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.all {
		c.Close()
	}
	p.all = map[*Conn]struct{}{}
}
