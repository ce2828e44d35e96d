// Package chdb binds the few calls of chDB's C API (libchdb, ClickHouse built
// as a library) that the embedded engine needs.
//
// It uses purego rather than cgo for two reasons. First, the library is loaded
// on first use with dlopen, never in an init function and never by the dynamic
// linker at start-up: a tenantscope binary pointed at a ClickHouse server runs
// on a machine that has no libchdb at all. Second, the binary stays a pure Go
// build (CGO_ENABLED=0 cross-compiles, no C toolchain in CI).
//
// Every call that takes a buffer uses the binary-safe "_n" variant, so SQL and
// insert bodies may hold NUL bytes. chDB's own signal handlers are disabled
// before the first connection: the Go runtime owns the process's signals.
package chdb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Version is the pinned chDB release that the Makefile fetches.
const Version = "26.7.3-stable.1"

// ErrLibraryMissing is returned when libchdb cannot be found or loaded.
var ErrLibraryMissing = errors.New("embedded ClickHouse library (libchdb) not found: run 'make chdb' to fetch it, or pass --chdb-lib / set TENANTSCOPE_CHDB_LIB")

// DefaultLibraryPath is where scripts/fetch-chdb.sh puts the library:
// $TENANTSCOPE_CHDB_LIB, else $TENANTSCOPE_CACHE/chdb/<version>/libchdb.so, else
// the user's cache directory.
func DefaultLibraryPath(getenv func(string) string) string {
	if p := getenv("TENANTSCOPE_CHDB_LIB"); p != "" {
		return p
	}
	cache := getenv("TENANTSCOPE_CACHE")
	if cache == "" {
		base := getenv("XDG_CACHE_HOME")
		if base == "" {
			home := getenv("HOME")
			if home == "" {
				home, _ = os.UserHomeDir() //nolint:errcheck // empty home gives a relative path that fails clearly on load
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "tenantscope")
	}
	return filepath.Join(cache, "chdb", Version, "libchdb.so")
}

// Lib is the loaded library. There is at most one per process.
type Lib struct {
	path string

	setSignalHandlersEnabled func(enabled int32)
	connect                  func(argc int32, argv unsafe.Pointer) unsafe.Pointer
	closeConn                func(conn unsafe.Pointer)
	queryN                   func(conn unsafe.Pointer, q unsafe.Pointer, qlen uintptr, f unsafe.Pointer, flen uintptr) unsafe.Pointer
	queryParamsN             paramsCall
	streamQueryParamsN       paramsCall
	streamFetch              func(conn unsafe.Pointer, res unsafe.Pointer) unsafe.Pointer
	streamCancel             func(conn unsafe.Pointer, res unsafe.Pointer)
	destroyResult            func(res unsafe.Pointer)
	resultBuffer             func(res unsafe.Pointer) unsafe.Pointer
	resultLength             func(res unsafe.Pointer) uintptr
	resultElapsed            func(res unsafe.Pointer) float64
	resultRowsRead           func(res unsafe.Pointer) uint64
	resultBytesRead          func(res unsafe.Pointer) uint64
	resultRowsWritten        func(res unsafe.Pointer) uint64
	resultBytesWritten       func(res unsafe.Pointer) uint64
	resultError              func(res unsafe.Pointer) unsafe.Pointer
	insertParamsN            paramsCall
	insertAppend             func(stream unsafe.Pointer, data unsafe.Pointer, n uintptr) int32
	insertDone               func(stream unsafe.Pointer) unsafe.Pointer
	insertCancel             func(stream unsafe.Pointer)
	insertError              func(stream unsafe.Pointer) unsafe.Pointer
	insertDestroy            func(stream unsafe.Pointer)
}

var (
	loadMu sync.Mutex
	loaded *Lib
)

// Load opens libchdb at path on the first call and returns the same Lib
// afterwards. A process can hold only one copy of the engine, so a second call
// with another path is an error.
func Load(path string) (*Lib, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != nil {
		if loaded.path != path {
			return nil, fmt.Errorf("chdb: library already loaded from %s, cannot load %s", loaded.path, path)
		}
		return loaded, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w (looked for %s)", ErrLibraryMissing, path)
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("%w: dlopen %s: %v", ErrLibraryMissing, path, err)
	}
	l := &Lib{path: path}
	syms := []struct {
		fn   any
		name string
	}{
		{&l.setSignalHandlersEnabled, "chdb_set_signal_handlers_enabled"},
		{&l.connect, "chdb_connect"},
		{&l.closeConn, "chdb_close_conn"},
		{&l.queryN, "chdb_query_n"},
		{&l.queryParamsN, "chdb_query_with_params_n"},
		{&l.streamQueryParamsN, "chdb_stream_query_with_params_n"},
		{&l.streamFetch, "chdb_stream_fetch_result"},
		{&l.streamCancel, "chdb_stream_cancel_query"},
		{&l.destroyResult, "chdb_destroy_query_result"},
		{&l.resultBuffer, "chdb_result_buffer"},
		{&l.resultLength, "chdb_result_length"},
		{&l.resultElapsed, "chdb_result_elapsed"},
		{&l.resultRowsRead, "chdb_result_rows_read"},
		{&l.resultBytesRead, "chdb_result_bytes_read"},
		{&l.resultRowsWritten, "chdb_result_rows_written"},
		{&l.resultBytesWritten, "chdb_result_bytes_written"},
		{&l.resultError, "chdb_result_error"},
		{&l.insertParamsN, "chdb_stream_insert_with_params_n"},
		{&l.insertAppend, "chdb_stream_append"},
		{&l.insertDone, "chdb_stream_done"},
		{&l.insertCancel, "chdb_stream_cancel_insert"},
		{&l.insertError, "chdb_stream_insert_error"},
		{&l.insertDestroy, "chdb_destroy_insert_stream"},
	}
	for _, s := range syms {
		addr, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("chdb: %s lacks %s (need chDB %s): %w", path, s.name, Version, err)
		}
		purego.RegisterFunc(s.fn, addr)
	}
	// The Go runtime handles signals; chDB's handlers would break it.
	l.setSignalHandlersEnabled(0)
	loaded = l
	return l, nil
}

// Path is the file the library was loaded from.
func (l *Lib) Path() string { return l.path }

// Conn is one chDB connection. It runs one statement at a time; callers
// serialise use (the engine's pool does).
type Conn struct {
	lib    *Lib
	handle unsafe.Pointer // chdb_connection* as returned by chdb_connect
}

// Connect opens a connection with command-line style arguments, e.g.
// "--path=/data". Arguments that name query settings apply to this connection
// only.
func (l *Lib) Connect(args ...string) (*Conn, error) {
	argv := make([]*byte, 0, len(args)+2)
	keep := make([][]byte, 0, len(args)+1)
	for _, a := range append([]string{"tenantscope"}, args...) {
		b := append([]byte(a), 0)
		keep = append(keep, b)
		argv = append(argv, &b[0])
	}
	argv = append(argv, nil)
	h := l.connect(int32(len(argv)-1), unsafe.Pointer(&argv[0]))
	runtime.KeepAlive(keep)
	runtime.KeepAlive(argv)
	if h == nil {
		return nil, fmt.Errorf("chdb: connect %v failed", args)
	}
	return &Conn{lib: l, handle: h}, nil
}

func (c *Conn) conn() unsafe.Pointer { return *(*unsafe.Pointer)(c.handle) }

// Close closes the connection. Closing the last connection of the process
// shuts the engine down.
func (c *Conn) Close() {
	if c.handle == nil {
		return
	}
	c.lib.closeConn(c.handle)
	c.handle = nil
}

// Result is a complete query result (or one streamed chunk).
type Result struct {
	Data         []byte
	Elapsed      float64
	RowsRead     uint64
	BytesRead    uint64
	RowsWritten  uint64
	BytesWritten uint64
}

// Error is an error reported by the engine; Message is ClickHouse's text,
// usually "Code: N. DB::Exception: ... (NAME)".
type Error struct{ Message string }

func (e *Error) Error() string { return e.Message }

// Param is a {name:Type} query parameter value, in ClickHouse's escaped text form.
type Param struct{ Name, Value string }

type paramArrays struct {
	names, nameLens, values, valueLens unsafe.Pointer
	n                                  uintptr
	keep                               []any
}

func makeParams(ps []Param) paramArrays {
	if len(ps) == 0 {
		return paramArrays{}
	}
	names := make([]*byte, len(ps))
	values := make([]*byte, len(ps))
	nl := make([]uintptr, len(ps))
	vl := make([]uintptr, len(ps))
	keep := []any{names, values, nl, vl}
	for i, p := range ps {
		nb := append([]byte(p.Name), 0)
		vb := append([]byte(p.Value), 0)
		keep = append(keep, nb, vb)
		names[i], values[i] = &nb[0], &vb[0]
		nl[i], vl[i] = uintptr(len(p.Name)), uintptr(len(p.Value))
	}
	return paramArrays{unsafe.Pointer(&names[0]), unsafe.Pointer(&nl[0]), unsafe.Pointer(&values[0]), unsafe.Pointer(&vl[0]), uintptr(len(ps)), keep}
}

func bytesPtr(b []byte) (unsafe.Pointer, uintptr) {
	if len(b) == 0 {
		return unsafe.Pointer(&zero[0]), 0
	}
	return unsafe.Pointer(&b[0]), uintptr(len(b))
}

var zero = []byte{0}

// readResult copies a result out of the engine and frees it. A nil result
// pointer is an engine failure.
func (l *Lib) readResult(r unsafe.Pointer) (*Result, error) {
	if r == nil {
		return nil, &Error{Message: "Code: 1001. DB::Exception: chdb returned no result. (STD_EXCEPTION)"}
	}
	defer l.destroyResult(r)
	return l.peekResult(r)
}

func (l *Lib) peekResult(r unsafe.Pointer) (*Result, error) {
	if e := l.resultError(r); e != nil {
		msg := cString(e)
		if msg != "" {
			return nil, &Error{Message: msg}
		}
	}
	res := &Result{
		Elapsed:      l.resultElapsed(r),
		RowsRead:     l.resultRowsRead(r),
		BytesRead:    l.resultBytesRead(r),
		RowsWritten:  l.resultRowsWritten(r),
		BytesWritten: l.resultBytesWritten(r),
	}
	if n := l.resultLength(r); n > 0 {
		buf := l.resultBuffer(r)
		res.Data = make([]byte, n)
		copy(res.Data, unsafe.Slice((*byte)(buf), n))
	}
	return res, nil
}

func cString(p unsafe.Pointer) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(p, n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(p), n))
}

// Query runs one statement and returns its whole output in format (the
// default output format; a FORMAT clause in the SQL wins).
func (c *Conn) Query(sql []byte, format string, params []Param) (*Result, error) {
	var r unsafe.Pointer
	if len(params) == 0 {
		q, ql := bytesPtr(sql)
		fb := []byte(format)
		f, fl := bytesPtr(fb)
		r = c.lib.queryN(c.conn(), q, ql, f, fl)
		runtime.KeepAlive(sql)
		runtime.KeepAlive(fb)
	} else {
		r = c.callWithParams(c.lib.queryParamsN, sql, format, params)
	}
	return c.lib.readResult(r)
}

type paramsCall func(conn, q unsafe.Pointer, qlen uintptr, f unsafe.Pointer, flen uintptr, names, nameLens, values, valueLens unsafe.Pointer, n uintptr) unsafe.Pointer

// callWithParams passes sql, format and params to one of the engine's
// binary-safe *_with_params_n calls, keeping the buffers alive across it.
func (c *Conn) callWithParams(fn paramsCall, sql []byte, format string, params []Param) unsafe.Pointer {
	q, ql := bytesPtr(sql)
	fb := []byte(format)
	f, fl := bytesPtr(fb)
	p := makeParams(params)
	r := fn(c.conn(), q, ql, f, fl, p.names, p.nameLens, p.values, p.valueLens, p.n)
	runtime.KeepAlive(p.keep)
	runtime.KeepAlive(sql)
	runtime.KeepAlive(fb)
	return r
}

// Stream is a streaming SELECT. Next returns chunks until io.EOF-like
// (nil, nil). Close must be called.
type Stream struct {
	c   *Conn
	res unsafe.Pointer
	// stats of the last chunk
	RowsRead, BytesRead uint64
}

// StreamQuery starts a streaming query (SELECT or WITH only: the engine
// refuses others, DESCRIBE among them).
func (c *Conn) StreamQuery(sql []byte, format string, params []Param) (*Stream, error) {
	r := c.callWithParams(c.lib.streamQueryParamsN, sql, format, params)
	if r == nil {
		return nil, &Error{Message: "Code: 1001. DB::Exception: chdb returned no stream. (STD_EXCEPTION)"}
	}
	if e := c.lib.resultError(r); e != nil {
		if msg := cString(e); msg != "" {
			c.lib.destroyResult(r)
			return nil, &Error{Message: msg}
		}
	}
	return &Stream{c: c, res: r}, nil
}

// Next returns the next chunk, or (nil, nil) at the end.
func (s *Stream) Next() ([]byte, error) {
	r := s.c.lib.streamFetch(s.c.conn(), s.res)
	res, err := s.c.lib.readResult(r)
	if err != nil {
		return nil, err
	}
	s.RowsRead += res.RowsRead
	s.BytesRead += res.BytesRead
	return res.Data, nil
}

// Cancel stops the query in the engine.
func (s *Stream) Cancel() { s.c.lib.streamCancel(s.c.conn(), s.res) }

// Close frees the stream handle.
func (s *Stream) Close() {
	if s.res != nil {
		s.c.lib.destroyResult(s.res)
		s.res = nil
	}
}

// Insert is a streaming INSERT: the statement without FORMAT, then data
// appended in chunks of any size in the stream's input format.
type Insert struct {
	c      *Conn
	stream unsafe.Pointer
}

// InsertStream starts a streaming INSERT. sql has no FORMAT clause.
func (c *Conn) InsertStream(sql []byte, format string, params []Param) (*Insert, error) {
	h := c.callWithParams(c.lib.insertParamsN, sql, format, params)
	if h == nil {
		return nil, &Error{Message: "Code: 1001. DB::Exception: chdb returned no insert stream. (STD_EXCEPTION)"}
	}
	if msg := cString(c.lib.insertError(h)); msg != "" {
		c.lib.insertDestroy(h)
		return nil, &Error{Message: msg}
	}
	return &Insert{c: c, stream: h}, nil
}

// Append pushes one chunk; it may block while the engine applies backpressure.
func (in *Insert) Append(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if in.c.lib.insertAppend(in.stream, unsafe.Pointer(&data[0]), uintptr(len(data))) != 0 {
		runtime.KeepAlive(data)
		return in.err("append failed")
	}
	runtime.KeepAlive(data)
	return nil
}

func (in *Insert) err(fallback string) error {
	if msg := cString(in.c.lib.insertError(in.stream)); msg != "" {
		return &Error{Message: msg}
	}
	return &Error{Message: "Code: 1001. DB::Exception: insert stream: " + fallback + ". (STD_EXCEPTION)"}
}

// Done commits the insert and returns its statistics. The stream must still
// be closed.
func (in *Insert) Done() (*Result, error) {
	r := in.c.lib.insertDone(in.stream)
	return in.c.lib.readResult(r)
}

// Cancel aborts the insert without committing what was not yet written.
func (in *Insert) Cancel() { in.c.lib.insertCancel(in.stream) }

// Close frees the stream handle (cancelling it if not finished).
func (in *Insert) Close() {
	if in.stream != nil {
		in.c.lib.insertDestroy(in.stream)
		in.stream = nil
	}
}
