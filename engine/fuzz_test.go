package engine

import (
	"bytes"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ClickHouse/ch-go/compress"
)

// FuzzParseRequest drives the request decoding of the HTTP interface (URL
// parameters, authentication, Content-Encoding, ClickHouse block
// decompression, statement and inline-data splitting) with arbitrary input.
// It needs no engine: decoding must never panic, hang or exceed the limit.
func FuzzParseRequest(f *testing.F) {
	lz4 := compress.NewWriter(compress.LevelZero, compress.LZ4)
	if err := lz4.Compress([]byte("1\ta\n")); err != nil {
		f.Fatal(err)
	}
	seeds := []struct {
		method, query, enc string
		body               []byte
	}{
		{"POST", "database=d&default_format=Native&client_protocol_version=54460", "", []byte("SELECT 1")},
		{"POST", "query=INSERT+INTO+t+FORMAT+Native", "", []byte("\x01\x01\x01a\x06UInt8\x07")},
		{"POST", "query=INSERT+INTO+t+FORMAT+TSV&decompress=1", "", lz4.Data},
		{"POST", "", "", []byte("INSERT INTO t FORMAT CSV\n1,2\n")},
		{"POST", "", "gzip", []byte("\x1f\x8b\x08\x00garbage")},
		{"POST", "", "br", []byte("\xff\xff")},
		{"POST", "", "zstd", []byte("(\xb5/\xfd")},
		{"POST", "", "deflate", []byte("x\x9c")},
		{"GET", "query=SELECT+%7Bx%3AUInt8%7D&param_x=1&session_id=s&session_timeout=99999", "", nil},
		{"POST", "max_threads=1&compress=1&network_compression_method=zstd&enable_http_compression=1", "", []byte("SELECT 'FORMAT' FORMAT JSON")},
		{"POST", "a%00b=1&user=x&password=y", "", []byte("/* FORMAT x */ INSERT INTO t VALUES (1)")},
	}
	for _, s := range seeds {
		f.Add(s.method, s.query, s.enc, s.body)
	}
	srv := &Server{eng: &Engine{Revision: 54513}, cfg: ServerConfig{MaxBodyBytes: 1 << 16, DefaultSessionTimeout: 1}}
	f.Fuzz(func(t *testing.T, method, rawQuery, enc string, body []byte) {
		if method != "GET" {
			method = "POST"
		}
		r := httptest.NewRequest(method, "/", bytes.NewReader(body))
		r.URL.RawQuery = rawQuery
		if _, err := url.ParseQuery(rawQuery); err == nil && enc != "" && !strings.ContainsAny(enc, "\r\n\x00") {
			r.Header.Set("Content-Encoding", enc)
		}
		req, ex := srv.parse(r)
		if ex != nil {
			if ex.Code == 0 || ex.Name == "" || !utf8.ValidString(ex.Name) {
				t.Fatalf("exception without code or name: %+v", ex)
			}
			return
		}
		if req.body != nil {
			n, err := io.Copy(io.Discard, req.body)
			if err == nil && n > srv.cfg.MaxBodyBytes {
				t.Fatalf("body of %d bytes passed a limit of %d", n, srv.cfg.MaxBodyBytes)
			}
		}
	})
}

// FuzzSQLText checks the statement lexer's invariants on arbitrary SQL.
func FuzzSQLText(f *testing.F) {
	for _, s := range []string{
		"SELECT 1 FORMAT JSON", "INSERT INTO t (a) FORMAT Native\n\x00\x01", "select 'FORMAT x' format TSV",
		"INSERT INTO t VALUES (1, 'a')", "/* c */ WITH 1 AS x SELECT x", "-- c\nSET a = 1", "SELECT `FORMAT` FROM t",
		"SELECT (SELECT 1 FORMAT TSV) FORMAT CSV", "INSERT INTO t SELECT * FROM s", "'unterminated", "/* unterminated",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind := statementKind(s)
		if kind != strings.ToUpper(kind) {
			t.Fatalf("kind %q not upper case", kind)
		}
		for _, insert := range []bool{true, false} {
			start, end, name, ok := formatClause(s, insert)
			if !ok {
				continue
			}
			if start < 0 || start >= end || end > len(s) || !strings.HasSuffix(s[:end], name) || name == "" {
				t.Fatalf("bad FORMAT clause %d..%d %q in %q", start, end, name, s)
			}
			if d := insertDataStart(s, end); d < end || d > len(s) {
				t.Fatalf("data start %d outside %d..%d", d, end, len(s))
			}
		}
		if start, end, ok := valuesClause(s); ok && (start >= end || end > len(s) || !strings.EqualFold(s[start:end], "VALUES")) {
			t.Fatalf("bad VALUES %d..%d in %q", start, end, s)
		}
	})
}
