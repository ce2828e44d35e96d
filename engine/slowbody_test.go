package engine_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

// stalledBody sends request (a POST announcing a 1000-byte body, sent in
// part) to an engine port with a 500 ms body idle time, and returns the
// answer (nil if none came in 10 s) and how long it took.
func stalledBody(t *testing.T, request string) (*http.Response, time.Duration, error) {
	t.Helper()
	db := enginetest.New(t)
	srv := engine.NewServer(db.Engine.Engine, engine.ServerConfig{BodyIdle: 500 * time.Millisecond,
		Users: map[string]engine.User{"alice": {Password: "s3cret"}}})
	t.Cleanup(func() { srv.Close() })
	ln, err := srv.Listen("127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // closed below
	t.Cleanup(func() { hs.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	start := time.Now()
	_, err = fmt.Fprintf(conn, request, ln.Addr())
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		res.Body.Close()
	}
	return res, time.Since(start), err
}

// A request that announces a body and never sends it is answered (and its
// connection freed) after the body idle time, on the engine's port too.
func TestEngineCutsOffAStalledBody(t *testing.T) {
	res, took, err := stalledBody(t, "POST /?user=alice&password=s3cret HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\nSELECT")
	if err == nil {
		require.NotEqual(t, http.StatusOK, res.StatusCode)
	}
	require.Less(t, took, 5*time.Second, "the stalled body held the connection")
	t.Logf("stalled body ended after %s (body idle 500ms)", took.Round(10*time.Millisecond))
}

// The same for a request refused before its body is read: wrong password.
func TestEngineCutsOffAStalledBodyOfARefusedRequest(t *testing.T) {
	res, took, err := stalledBody(t, "POST /?user=alice&password=wrong HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Less(t, took, 5*time.Second, "the refused request held the connection")
}
