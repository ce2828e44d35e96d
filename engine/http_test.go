package engine_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

func engineServerConfig() engine.ServerConfig { return engine.ServerConfig{} }

type httpResult struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, u string, body io.Reader, hdr map[string]string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if h, ok := hdr["Host"]; ok {
		req.Host = h
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return httpResult{res.StatusCode, res.Header, string(b)}
}

func q(db *enginetest.DB, params ...string) string {
	v := url.Values{}
	v.Set("database", db.Name)
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	return db.URL() + "/?" + v.Encode()
}

func TestPlainHTTP(t *testing.T) {
	db := enginetest.New(t)

	t.Run("ping and version", func(t *testing.T) {
		r := do(t, "GET", db.URL()+"/ping", nil, nil)
		require.Equal(t, "Ok.\n", r.body)
		r = do(t, "GET", db.URL()+"/?query=SELECT%20version()", nil, nil)
		require.Equal(t, 200, r.status)
		require.True(t, strings.HasPrefix(r.body, "26."), r.body)
		require.NotEmpty(t, r.header.Get("X-ClickHouse-Query-Id"))
		require.Equal(t, "TabSeparated", r.header.Get("X-ClickHouse-Format"))
		require.NotEmpty(t, r.header.Get("X-ClickHouse-Timezone"))
		require.Contains(t, r.header.Get("X-ClickHouse-Summary"), "read_rows")
	})

	t.Run("GET is readonly", func(t *testing.T) {
		r := do(t, "GET", q(db, "query", "CREATE TABLE ro (a UInt8) ENGINE = Memory"), nil, nil)
		require.Equal(t, 403, r.status)
		require.Equal(t, "164", r.header.Get("X-ClickHouse-Exception-Code"))
		require.Contains(t, r.body, "READONLY")
		// settings may still be changed on GET
		r = do(t, "GET", q(db, "query", "SELECT getSetting('max_threads')", "max_threads", "1"), nil, nil)
		require.Equal(t, "1\n", r.body)
	})

	t.Run("POST, formats, params, query id", func(t *testing.T) {
		r := do(t, "POST", q(db), strings.NewReader("CREATE TABLE ev (id UInt32, name String) ENGINE = MergeTree ORDER BY id"), nil)
		require.Equal(t, 200, r.status, r.body)
		// INSERT with inline data in the body
		r = do(t, "POST", q(db), strings.NewReader("INSERT INTO ev FORMAT CSV\n1,\"a\"\n2,\"b,c\"\n"), nil)
		require.Equal(t, 200, r.status, r.body)
		require.Contains(t, r.header.Get("X-ClickHouse-Summary"), `"written_rows":"2"`)
		// INSERT in the URL, data in the body, another format
		r = do(t, "POST", q(db, "query", "INSERT INTO ev FORMAT JSONEachRow"), strings.NewReader(`{"id":3,"name":"d"}`+"\n"+`{"id":4,"name":"e"}`), nil)
		require.Equal(t, 200, r.status, r.body)
		// INSERT without FORMAT takes TabSeparated
		r = do(t, "POST", q(db, "query", "INSERT INTO ev"), strings.NewReader("5\tf\n"), nil)
		require.Equal(t, 200, r.status, r.body)
		// VALUES in the body
		r = do(t, "POST", q(db), strings.NewReader("INSERT INTO ev VALUES (6, 'g')"), nil)
		require.Equal(t, 200, r.status, r.body)
		r = do(t, "GET", q(db, "query", "SELECT id, name FROM ev ORDER BY id", "default_format", "JSONCompactEachRow", "query_id", "my-query-1"), nil, nil)
		require.Equal(t, "[1, \"a\"]\n[2, \"b,c\"]\n[3, \"d\"]\n[4, \"e\"]\n[5, \"f\"]\n[6, \"g\"]\n", r.body)
		require.Equal(t, "my-query-1", r.header.Get("X-ClickHouse-Query-Id"))
		require.Equal(t, "JSONCompactEachRow", r.header.Get("X-ClickHouse-Format"))
		r = do(t, "GET", q(db, "query", "SELECT name FROM ev WHERE id = {id:UInt32} FORMAT CSV", "param_id", "2"), nil, nil)
		require.Equal(t, "\"b,c\"\n", r.body)
		require.Equal(t, "CSV", r.header.Get("X-ClickHouse-Format"))
		require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "text/csv"))
		r = do(t, "GET", q(db, "query", "SELECT count() AS n FROM ev FORMAT JSON"), nil, nil)
		require.Contains(t, r.body, `"n": 6`)
		// the query in the URL and its continuation in the body
		r = do(t, "POST", q(db, "query", "SELECT count()"), strings.NewReader("FROM ev WHERE id > 3"), nil)
		require.Equal(t, "3\n", r.body)
	})

	t.Run("sessions", func(t *testing.T) {
		r := do(t, "POST", q(db, "session_id", "s1", "session_timeout", "30"), strings.NewReader("SET max_threads = 1"), nil)
		require.Equal(t, 200, r.status, r.body)
		r = do(t, "POST", q(db, "session_id", "s1"), strings.NewReader("SELECT getSetting('max_threads')"), nil)
		require.Equal(t, "1\n", r.body)
		r = do(t, "POST", q(db, "session_id", "s1"), strings.NewReader("CREATE TEMPORARY TABLE tmp (a UInt8)"), nil)
		require.Equal(t, 200, r.status, r.body)
		r = do(t, "POST", q(db, "session_id", "s1"), strings.NewReader("INSERT INTO tmp VALUES (7)"), nil)
		require.Equal(t, 200, r.status, r.body)
		r = do(t, "POST", q(db, "session_id", "s1"), strings.NewReader("SELECT a FROM tmp"), nil)
		require.Equal(t, "7\n", r.body)
		// without the session, none of it is visible
		r = do(t, "POST", q(db), strings.NewReader("SELECT getSetting('max_threads')"), nil)
		require.NotEqual(t, "1\n", r.body)
		r = do(t, "POST", q(db, "session_id", "nope", "session_check", "1"), strings.NewReader("SELECT 1"), nil)
		require.Equal(t, 404, r.status)
		require.Equal(t, "372", r.header.Get("X-ClickHouse-Exception-Code"))
		// SET outside a session does not stick to a pooled connection
		for range 6 {
			r = do(t, "POST", q(db), strings.NewReader("SET max_threads = 1"), nil)
			require.Equal(t, 200, r.status)
		}
		for range 6 {
			r = do(t, "POST", q(db), strings.NewReader("SELECT getSetting('max_threads')"), nil)
			require.NotEqual(t, "1\n", r.body)
		}
	})

	t.Run("compressed request and response bodies", func(t *testing.T) {
		r := do(t, "POST", q(db), strings.NewReader("CREATE TABLE z (s String) ENGINE = MergeTree ORDER BY s"), nil)
		require.Equal(t, 200, r.status, r.body)
		data := strings.Repeat("hello\n", 1000)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write([]byte(data))
		require.NoError(t, zw.Close())
		r = do(t, "POST", q(db, "query", "INSERT INTO z FORMAT TSV"), &gz, map[string]string{"Content-Encoding": "gzip"})
		require.Equal(t, 200, r.status, r.body)
		var br bytes.Buffer
		bw := brotli.NewWriter(&br)
		_, _ = bw.Write([]byte(data))
		require.NoError(t, bw.Close())
		r = do(t, "POST", q(db, "query", "INSERT INTO z FORMAT TSV"), &br, map[string]string{"Content-Encoding": "br"})
		require.Equal(t, 200, r.status, r.body)
		// ClickHouse block framing, zstd inside
		cw := compress.NewWriter(compress.LevelZero, compress.ZSTD)
		require.NoError(t, cw.Compress([]byte(data)))
		r = do(t, "POST", q(db, "query", "INSERT INTO z FORMAT TSV", "decompress", "1"), bytes.NewReader(cw.Data), nil)
		require.Equal(t, 200, r.status, r.body)
		r = do(t, "GET", q(db, "query", "SELECT count() FROM z"), nil, nil)
		require.Equal(t, "3000\n", r.body)

		// gzip response only with enable_http_compression=1
		req, _ := http.NewRequest("GET", q(db, "query", "SELECT s FROM z LIMIT 100", "enable_http_compression", "1"), nil)
		req.Header.Set("Accept-Encoding", "zstd")
		pw, _ := req.URL.User.Password()
		req.SetBasicAuth(req.URL.User.Username(), pw) // a bare RoundTrip does not send the URL's credentials
		res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		require.NoError(t, err)
		require.Equal(t, "zstd", res.Header.Get("Content-Encoding"))
		zr, err := zstd.NewReader(res.Body)
		require.NoError(t, err)
		b, err := io.ReadAll(zr)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, strings.Repeat("hello\n", 100), string(b))
		// compress=1: ClickHouse block framing of the response
		res2 := do(t, "GET", q(db, "query", "SELECT s FROM z LIMIT 10", "compress", "1"), nil, nil)
		plain, err := io.ReadAll(compress.NewReader(strings.NewReader(res2.body)))
		if !errors.Is(err, io.EOF) {
			require.NoError(t, err)
		}
		require.Equal(t, strings.Repeat("hello\n", 10), string(plain))
	})

	t.Run("bad input gets a ClickHouse error", func(t *testing.T) {
		cases := []struct {
			name   string
			method string
			url    string
			body   string
			hdr    map[string]string
			status int
			code   string
		}{
			{"syntax", "POST", q(db), "SELEC 1", nil, 400, "62"},
			{"unknown setting", "POST", q(db, "no_such_setting", "1"), "SELECT 1", nil, 404, "115"},
			{"hostile setting name", "POST", q(db, "max_threads = 1; DROP", "1"), "SELECT 1", nil, 404, "115"},
			{"unknown database", "POST", q(db, "database", "nope"), "SELECT 1", nil, 404, "81"},
			{"bad gzip", "POST", q(db, "query", "INSERT INTO z FORMAT TSV"), "not gzip at all", map[string]string{"Content-Encoding": "gzip"}, 400, "271"},
			{"unknown content-encoding", "POST", q(db, "query", "INSERT INTO z FORMAT TSV"), "x", map[string]string{"Content-Encoding": "snappy-ish"}, 415, "36"},
			{"truncated compressed frame", "POST", q(db, "query", "INSERT INTO z FORMAT TSV", "decompress", "1"), strings.Repeat("\x01", 40), nil, 400, "33"},
			{"corrupted compressed frame", "POST", q(db, "query", "INSERT INTO z FORMAT TSV", "decompress", "1"), corruptFrame(t), nil, 400, "271"},
			{"truncated native", "POST", q(db, "query", "INSERT INTO z FORMAT Native"), "\x01\x05\x01s\x06String\x05hello", nil, 400, "33"},
			{"bad client_protocol_version", "GET", q(db, "query", "SELECT 1", "client_protocol_version", "x"), "", nil, 400, "36"},
			{"no handler", "GET", db.URL() + "/nope", "", nil, 404, "1002"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var body io.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				r := do(t, c.method, c.url, body, c.hdr)
				require.Equal(t, c.status, r.status, r.body)
				require.Equal(t, c.code, r.header.Get("X-ClickHouse-Exception-Code"), r.body)
				require.True(t, strings.HasPrefix(r.body, "Code: "+c.code+". DB::Exception: "), r.body)
			})
		}
		// the engine still works afterwards
		r := do(t, "GET", q(db, "query", "SELECT count() FROM z"), nil, nil)
		require.Equal(t, "3000\n", r.body)
	})
}

// corruptFrame is a valid ClickHouse LZ4 frame with one checksum byte flipped.
func corruptFrame(t *testing.T) string {
	w := compress.NewWriter(compress.LevelZero, compress.LZ4)
	require.NoError(t, w.Compress([]byte("hello\n")))
	b := append([]byte(nil), w.Data...)
	b[3] ^= 0xff
	return string(b)
}

func TestBodyLimitAndAuth(t *testing.T) {
	db := enginetest.New(t)
	srv := engine.NewServer(db.Engine.Engine, engine.ServerConfig{MaxBodyBytes: 1000, Users: map[string]engine.User{"alice": {Password: "s3cret"}}})
	defer srv.Close()
	ln, err := srv.Listen("127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln) //nolint:errcheck // closed below
	defer hs.Close()
	base := "http://" + ln.Addr().String() + "/?database=" + db.Name

	r := do(t, "POST", base, strings.NewReader("SELECT 1"), nil)
	require.Equal(t, 401, r.status)
	require.Equal(t, "516", r.header.Get("X-ClickHouse-Exception-Code"))
	r = do(t, "POST", base+"&user=alice&password=wrong", strings.NewReader("SELECT 1"), nil)
	require.Equal(t, 401, r.status)
	r = do(t, "POST", base+"&user=alice&password=s3cret", strings.NewReader("SELECT 1"), nil)
	require.Equal(t, "1\n", r.body)
	r = do(t, "POST", base, strings.NewReader("SELECT 2"), map[string]string{"X-ClickHouse-User": "alice", "X-ClickHouse-Key": "s3cret"})
	require.Equal(t, "2\n", r.body)
	req, _ := http.NewRequest("POST", base, strings.NewReader("SELECT 3"))
	req.SetBasicAuth("alice", "s3cret")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, "3\n", string(b))

	auth := map[string]string{"X-ClickHouse-User": "alice", "X-ClickHouse-Key": "s3cret"}
	r = do(t, "POST", base, strings.NewReader("SELECT '"+strings.Repeat("a", 2000)+"'"), auth)
	require.Equal(t, 413, r.status)
	require.Contains(t, r.body, "limit of 1000 bytes")
	// a small gzip body that inflates past the limit is refused too
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(strings.Repeat("1\n", 100000)))
	require.NoError(t, zw.Close())
	require.Less(t, gz.Len(), 1000)
	do(t, "POST", base, strings.NewReader("CREATE TABLE n (a UInt8) ENGINE = Memory"), auth)
	hdr := map[string]string{"Content-Encoding": "gzip", "X-ClickHouse-User": "alice", "X-ClickHouse-Key": "s3cret"}
	r = do(t, "POST", base+"&query=INSERT%20INTO%20n%20FORMAT%20TSV", &gz, hdr)
	require.Equal(t, 413, r.status, r.body)

	// without users, nowhere: not even loopback
	open := engine.NewServer(db.Engine.Engine, engine.ServerConfig{})
	defer open.Close()
	_, err = open.Listen("127.0.0.1:0")
	require.ErrorIs(t, err, engine.ErrNoUsers)
}

func TestStreamingKeepsMemoryBounded(t *testing.T) {
	db := enginetest.New(t)
	// 10M rows of ~40 bytes in TSV is ~400 MB of output; the server must not
	// hold it. Sample the heap while the body is read.
	res, err := http.Get(q(db, "query", "SELECT number, toString(cityHash64(number)) FROM system.numbers LIMIT 10000000"))
	require.NoError(t, err)
	defer res.Body.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	buf := make([]byte, 1<<20)
	var total int64
	lines := 0
	for i := 0; ; i++ {
		n, err := res.Body.Read(buf)
		total += int64(n)
		lines += bytes.Count(buf[:n], []byte{'\n'})
		if i%200 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, 10_000_000, lines)
	require.Greater(t, total, int64(200<<20))
	growth := int64(peak) - int64(base)
	t.Logf("streamed %d MB; heap grew by at most %d MB", total>>20, growth>>20)
	require.Less(t, growth, int64(total/4), "heap grew with the result size: not streaming")
}

// TestSmallStatementsTakeNoMegabyte sends statements in request bodies, as
// clickhouse-go does, and counts what the process allocates: each used to
// take a 1 MiB read-ahead buffer, whatever its size (the collector sends a
// DESCRIBE before every insert). An INSERT with inline data and a
// compressed statement still work (their read-ahead stays 1 MiB).
func TestSmallStatementsTakeNoMegabyte(t *testing.T) {
	db := enginetest.New(t)
	const n = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		res := do(t, http.MethodPost, q(db), strings.NewReader(fmt.Sprintf("SELECT %d", i)), nil)
		require.Equal(t, http.StatusOK, res.status, res.body)
		require.Equal(t, fmt.Sprintf("%d\n", i), res.body)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d small statements allocated %d KiB", n, allocated>>10)
	require.Less(t, allocated, uint64(n<<20)/2, "a small statement takes a read-ahead of its own size, not 1 MiB")

	res := do(t, http.MethodPost, q(db), strings.NewReader("CREATE TABLE t (n UInt32) ENGINE = Memory"), nil)
	require.Equal(t, http.StatusOK, res.status, res.body)
	res = do(t, http.MethodPost, q(db), strings.NewReader("INSERT INTO t FORMAT TSV\n1\n2\n3\n"), nil)
	require.Equal(t, http.StatusOK, res.status, res.body)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err := zw.Write([]byte("SELECT sum(n) FROM t"))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	res = do(t, http.MethodPost, q(db), &gz, map[string]string{"Content-Encoding": "gzip"})
	require.Equal(t, http.StatusOK, res.status, res.body)
	require.Equal(t, "6\n", res.body)
}

func TestDataSurvivesCloseAndReopen(t *testing.T) {
	dir := t.TempDir()
	for _, step := range []struct{ mode, want string }{{"write", "written"}, {"read", "5000 12497500"}, {"read", "5000 12497500"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "TENANTSCOPE_HELPER="+step.mode, "TENANTSCOPE_HELPER_DIR="+dir)
		out, err := cmd.Output()
		cancel()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s: %v\n%s", step.mode, err, ee.Stderr)
		}
		require.NoError(t, err)
		require.Equal(t, step.want, strings.TrimSpace(string(out)))
	}
}

func TestCloseKillsRunningQueries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TENANTSCOPE_HELPER=closekill", "TENANTSCOPE_HELPER_DIR="+t.TempDir())
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("%v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err)
	t.Log(strings.TrimSpace(string(out)))
	var before, after int
	_, err = fmt.Sscanf(strings.TrimSpace(string(out))[strings.Index(string(out), "goroutines"):], "goroutines %d -> %d", &before, &after)
	require.NoError(t, err)
	require.LessOrEqual(t, after, before, "goroutines leaked by Close")
}

func TestSecondEngineInProcessIsRefused(t *testing.T) {
	enginetest.Shared(t)
	_, err := engine.Open(engine.Config{Dir: t.TempDir()})
	require.ErrorContains(t, err, "already open in this process")
}

// TestAllocatorOptionsReachTheEngine opens the engine in a child process
// with allocator options that jemalloc refuses (abort_conf makes a refused
// option fatal): the child must die, so the options reach the engine's
// allocator. The default options are accepted, and JE_MALLOC_CONF in the
// environment wins over the configured ones.
func TestAllocatorOptionsReachTheEngine(t *testing.T) {
	run := func(allocator, env string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "JE_MALLOC_CONF=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "TENANTSCOPE_HELPER=allocator", "TENANTSCOPE_HELPER_DIR="+t.TempDir(), "TENANTSCOPE_HELPER_ALLOCATOR="+allocator)
		if env != "" {
			cmd.Env = append(cmd.Env, "JE_MALLOC_CONF="+env)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("abort_conf:true,not_an_option:1", "")
	require.Error(t, err, "a refused allocator option did not stop the engine: it never reached the allocator\n%s", out)
	require.Contains(t, out, "SIGABRT", "the engine did not abort on a refused allocator option")

	out, err = run("abort_conf:true,"+config.DefaultEngineAllocator, "")
	require.NoError(t, err, out)
	require.Contains(t, out, "opened")

	out, err = run("abort_conf:true,not_an_option:1", "dirty_decay_ms:1000")
	require.NoError(t, err, "JE_MALLOC_CONF did not win over the configured options\n%s", out)
	require.Contains(t, out, "opened")
}
