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

// A request that announces a body and never sends it is answered (and its
// connection freed) after the body idle time, on the engine's port too.
func TestEngineCutsOffAStalledBody(t *testing.T) {
	db := enginetest.New(t)
	srv := engine.NewServer(db.Engine.Engine, engine.ServerConfig{BodyIdle: 500 * time.Millisecond,
		Users: map[string]engine.User{"alice": {Password: "s3cret"}}})
	defer srv.Close()
	ln, err := srv.Listen("127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // closed below
	defer hs.Close()

	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST /?user=alice&password=s3cret HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\nSELECT", ln.Addr())
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	took := time.Since(start)
	if err == nil {
		res.Body.Close()
		require.NotEqual(t, http.StatusOK, res.StatusCode)
	}
	require.Less(t, took, 5*time.Second, "the stalled body held the connection")
	t.Logf("stalled body ended after %s (body idle 500ms)", took.Round(10*time.Millisecond))
}

// The same for a request refused before its body is read: wrong password.
func TestEngineCutsOffAStalledBodyOfARefusedRequest(t *testing.T) {
	db := enginetest.New(t)
	srv := engine.NewServer(db.Engine.Engine, engine.ServerConfig{BodyIdle: 500 * time.Millisecond,
		Users: map[string]engine.User{"alice": {Password: "s3cret"}}})
	defer srv.Close()
	ln, err := srv.Listen("127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // closed below
	defer hs.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST /?user=alice&password=wrong HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n", ln.Addr())
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Less(t, time.Since(start), 5*time.Second, "the refused request held the connection")
}
