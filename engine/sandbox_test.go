package engine_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/engine/enginetest"
)

// The attacks of issue 12 against the engine's port, for the anonymous
// caller and for both users, each tried with the attack itself.
func TestEngineAnswersNoOneWithoutCredentialsAndNothingOutside(t *testing.T) {
	db := enginetest.New(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "bootstrap.json")
	require.NoError(t, os.WriteFile(secret, []byte(`{"audit_signer_key":"PRIVATE"}`), 0o600))
	planted := filepath.Join(dir, "planted.txt")

	post := func(base, sql string, hdr map[string]string) httpResult {
		return do(t, "POST", base+"/?database="+db.Name, strings.NewReader(sql), hdr)
	}
	users := map[string]string{"read-write": db.URL(), "read-only": db.ReaderURL()}

	t.Run("no credentials", func(t *testing.T) {
		r := post(db.AnonymousURL(), "SELECT 1", nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		require.Equal(t, "516", r.header.Get("X-ClickHouse-Exception-Code"))
		require.Contains(t, r.body, "AUTHENTICATION_FAILED")
		r = post(db.AnonymousURL(), "SELECT * FROM file('"+secret+"', 'LineAsString')", nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		require.NotContains(t, r.body, "PRIVATE")
		r = do(t, "GET", db.AnonymousURL()+"/?query=SELECT+1&user=default", nil, nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		r = do(t, "GET", db.AnonymousURL()+"/ping", nil, nil)
		require.Equal(t, "Ok.\n", r.body, "ping stays open, as on a server")
	})

	attacks := []struct{ name, sql string }{
		{"file() reads the bootstrap file", "SELECT * FROM file('" + secret + "', 'LineAsString')"},
		{"file() quoted as an identifier", "SELECT * FROM `file`('" + secret + "', 'LineAsString')"},
		{"file() with a comment before its parenthesis", "SELECT * FROM FILE /* x */ ('" + secret + "', 'LineAsString')"},
		{"file() as a scalar function", "SELECT file('" + secret + "')"},
		{"INSERT INTO FUNCTION file() writes a file", "INSERT INTO FUNCTION file('" + planted + "', 'LineAsString') SELECT 'x'"},
		{"INTO OUTFILE writes a file", "SELECT 'x' INTO OUTFILE '" + planted + "'"},
		{"the File engine reads a file", "CREATE TABLE stolen (s String) ENGINE = File(LineAsString, '" + secret + "')"},
		{"url() fetches any address", "SELECT * FROM url('http://169.254.169.254/latest/meta-data/', 'LineAsString')"},
		{"url() with a computed address", "SELECT * FROM url(concat('http://', '127.0.0.1:9'), 'LineAsString')"},
		{"s3()", "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'LineAsString')"},
		{"remote()", "SELECT * FROM remote('127.0.0.1:9000', system.one)"},
		{"executable()", "SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 's String')"},
		{"a dictionary with a file source", "CREATE DICTIONARY d (k UInt64, v String) PRIMARY KEY k SOURCE(FILE(path '" + secret + "' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)"},
		{"a database on the filesystem", "CREATE DATABASE fsdb ENGINE = Filesystem('/')"},
		{"a disk on any path", "CREATE TABLE d2 (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '" + dir + "/')"},
		{"format_schema names a file", "SELECT 1 SETTINGS format_schema = '" + secret + ":M'"},
		{"BACKUP writes files", "BACKUP TABLE system.one TO File('" + planted + "')"},
	}
	for who, base := range users {
		for _, a := range attacks {
			t.Run(who+": "+a.name, func(t *testing.T) {
				r := post(base, a.sql, nil)
				require.NotEqual(t, http.StatusOK, r.status, r.body)
				require.Contains(t, r.body, "ACCESS_DENIED", r.body)
				require.NotContains(t, r.body, "PRIVATE")
			})
		}
		t.Run(who+": streamed Values rows are data, not expressions", func(t *testing.T) {
			post(db.URL(), "CREATE TABLE IF NOT EXISTS vals (s String) ENGINE = MergeTree ORDER BY s", nil)
			r := do(t, "POST", base+"/?database="+db.Name+"&query="+url.QueryEscape("INSERT INTO vals FORMAT Values"),
				strings.NewReader("(file('"+secret+"'))"), nil)
			require.NotEqual(t, http.StatusOK, r.status, r.body)
		})
		t.Run(who+": a setting naming a file in the URL", func(t *testing.T) {
			r := do(t, "GET", base+"/?database="+db.Name+"&format_schema="+url.QueryEscape(secret+":M")+"&query=SELECT+1", nil, nil)
			require.Equal(t, http.StatusForbidden, r.status, r.body)
		})
		t.Run(who+": a browser origin is refused", func(t *testing.T) {
			// A page on another site POSTs text/plain (no CORS preflight).
			r := post(base, "CREATE TABLE from_browser (a UInt8) ENGINE = Memory", map[string]string{
				"Origin": "https://evil.example", "Content-Type": "text/plain"})
			require.Equal(t, http.StatusForbidden, r.status, r.body)
			require.Contains(t, r.body, "origin")
		})
		t.Run(who+": DNS rebinding by Host is refused", func(t *testing.T) {
			r := post(base, "SELECT 1", map[string]string{"Host": "evil.example:8123"})
			require.Equal(t, http.StatusForbidden, r.status, r.body)
		})
	}
	_, err := os.Stat(planted)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing was written outside the engine")

	t.Run("the read-only user cannot write", func(t *testing.T) {
		for _, sql := range []string{
			"CREATE TABLE ro_attempt (a UInt8) ENGINE = Memory",
			"INSERT INTO vals VALUES ('x')",
			"SET readonly = 0",
		} {
			r := post(db.ReaderURL(), sql, nil)
			require.NotEqual(t, http.StatusOK, r.status, sql)
		}
		r := do(t, "POST", db.ReaderURL()+"/?database="+db.Name+"&session_id=ro1&readonly=0", strings.NewReader("CREATE TABLE ro_session (a UInt8) ENGINE = Memory"), nil)
		require.NotEqual(t, http.StatusOK, r.status, "not in a session either: %s", r.body)
		r = post(db.ReaderURL(), "SELECT count() FROM vals", nil)
		require.Equal(t, http.StatusOK, r.status, r.body)
	})

	t.Run("the suite's own work still runs", func(t *testing.T) {
		for _, sql := range []string{
			"CREATE TABLE ok (a UInt8, m Map(LowCardinality(String), String)) ENGINE = MergeTree ORDER BY a",
			"INSERT INTO ok SELECT number, map('file', 'url') FROM numbers(3)",
			"SELECT count() FROM merge(currentDatabase(), '^ok$')",
		} {
			r := post(db.URL(), sql, nil)
			require.Equal(t, http.StatusOK, r.status, "%s: %s", sql, r.body)
		}
	})
}
