package edge_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/edge"
	"github.com/tenantscope/tenantscope/edge/edgetest"
)

func serve(t *testing.T, h http.Handler, cfg edge.Config, tlsCfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := edge.Server(edge.Wrap(h, cfg))
	srv.TLSConfig = tlsCfg
	go func() {
		if tlsCfg != nil {
			_ = srv.ServeTLS(ln, "", "") //nolint:errcheck // closed below
		} else {
			_ = srv.Serve(ln) //nolint:errcheck // closed below
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestEveryAnswerCarriesTheSecurityHeaders(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	addr := serve(t, mux, edge.Config{Logger: zerolog.Nop()}, nil)
	for path, status := range map[string]int{"/ok": 200, "/missing": 404, "/boom": 500} {
		res, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, status, res.StatusCode, path)
		for h, want := range map[string]string{
			"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
		} {
			require.Equal(t, want, res.Header.Get(h), "%s on %s", h, path)
		}
		csp := res.Header.Get("Content-Security-Policy")
		require.Contains(t, csp, "frame-ancestors 'none'", path)
		require.NotContains(t, strings.SplitN(strings.SplitN(csp, "script-src", 2)[1], ";", 2)[0], "unsafe-inline", "no inline script")
		require.NotEmpty(t, res.Header.Get("X-Correlation-Id"), path)
		require.Empty(t, res.Header.Get("Strict-Transport-Security"), "no HSTS over plain HTTP")
		if path == "/boom" {
			require.Contains(t, string(body), `"correlation_id"`, "a panic answers the one error body")
		}
	}
}

// A request that announces a body and never sends it is ended after the
// body idle time, instead of holding the connection for as long as the
// client likes; a body that keeps flowing is read whole.
func TestSlowBodyIsCutOff(t *testing.T) {
	read := make(chan error, 4)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		read <- err
	}), edge.Config{BodyIdle: 500 * time.Millisecond, Logger: zerolog.Nop()}, nil)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	select {
	case err := <-read:
		require.Error(t, err, "the stalled body fails")
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled body held the handler for 5 s")
	}
	took := time.Since(start)
	require.Less(t, took, 3*time.Second)
	t.Logf("stalled body ended after %s (body idle 500ms)", took.Round(10*time.Millisecond))

	// A slow but steady upload (a chunk every 200 ms, 3 s in all) passes.
	pr, pw := io.Pipe()
	go func() {
		for range 15 {
			_, _ = pw.Write([]byte(strings.Repeat("x", 100))) //nolint:errcheck // pipe to the request
			time.Sleep(200 * time.Millisecond)
		}
		_ = pw.Close() //nolint:errcheck // end of body
	}()
	res, err := http.Post("http://"+addr+"/x", "text/plain", pr)
	require.NoError(t, err)
	res.Body.Close()
	require.NoError(t, <-read, "a body that keeps flowing is read whole")
}

func TestHSTSOnlyBehindTLSOrATrustedProxy(t *testing.T) {
	addr := serve(t, http.NotFoundHandler(), edge.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Logger: zerolog.Nop()}, nil)
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Empty(t, res.Header.Get("Strict-Transport-Security"), "127.0.0.1 is not a trusted proxy")
	addr = serve(t, http.NotFoundHandler(), edge.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: zerolog.Nop()}, nil)
	req, _ = http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, "max-age=31536000", res.Header.Get("Strict-Transport-Security"))
}

// Over TLS: plain HTTP gets nowhere, HSTS is sent, and a renewed
// certificate is served without a restart.
func TestTLSListenerReloadsItsCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := edgetest.NewCA(t, dir)
	certFile, keyFile := ca.Issue(t, dir, "tls", 100)
	certs, err := edge.LoadCertificates(certFile, keyFile)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /secret", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "tenant data") })
	addr := serve(t, mux, edge.Config{Logger: zerolog.Nop()}, certs.TLSConfig())

	// Plain HTTP on the TLS port.
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = fmt.Fprintf(conn, "GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // test
	plain, _ := io.ReadAll(bufio.NewReader(conn))
	conn.Close()
	require.NotContains(t, string(plain), "tenant data")
	require.Contains(t, string(plain), "400", "Go's TLS server answers a plain request with 400 and closes")

	client := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true}}
	}
	res, err := client().Get("https://" + addr + "/secret")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, "tenant data", string(body))
	require.Equal(t, "max-age=31536000", res.Header.Get("Strict-Transport-Security"))
	require.Contains(t, res.TLS.PeerCertificates[0].DNSNames, "cert-100.test")

	// Renew: the new pair is picked up by new connections.
	time.Sleep(1100 * time.Millisecond) // the files' mtime must move past the last check
	ca.Issue(t, dir, "tls", 200)
	require.Eventually(t, func() bool {
		res, err := client().Get("https://" + addr + "/secret")
		if err != nil {
			return false
		}
		res.Body.Close()
		return slices.Contains(res.TLS.PeerCertificates[0].DNSNames, "cert-200.test")
	}, 10*time.Second, 200*time.Millisecond, "the renewed certificate is served")
}

// A guard stands in front of every route: a handler that forgot its own
// check is still not reached without the guard's consent.
func TestGuardStandsBeforeEveryRoute(t *testing.T) {
	reached := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /forgot-its-check", func(http.ResponseWriter, *http.Request) { reached++ })
	guard := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == "Bearer good" {
			return true
		}
		http.Error(w, "sign in", http.StatusUnauthorized)
		return false
	}
	addr := serve(t, mux, edge.Config{Guard: guard, Logger: zerolog.Nop()}, nil)
	res, err := http.Get("http://" + addr + "/forgot-its-check")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"), "a refusal carries the headers too")
	require.Zero(t, reached)
	req, _ := http.NewRequest("GET", "http://"+addr+"/forgot-its-check", nil)
	req.Header.Set("Authorization", "Bearer good")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 1, reached)
}

// A request refused before anyone reads its body (the guard, a 401) that
// announced a body and never sends it is answered, and its connection let
// go, within the body idle time too.
func TestStalledBodyOfARefusedRequestIsCutOff(t *testing.T) {
	guard := func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "sign in", http.StatusUnauthorized)
		return false
	}
	addr := serve(t, http.NotFoundHandler(), edge.Config{Guard: guard, BodyIdle: 500 * time.Millisecond, Logger: zerolog.Nop()}, nil)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	rest, _ := io.ReadAll(conn) // the answer, then the server closes
	took := time.Since(start)
	require.Contains(t, string(rest), "401")
	require.Less(t, took, 5*time.Second, "the refused request held the connection")
	t.Logf("refused request with a stalled body: answered and closed after %s", took.Round(10*time.Millisecond))
}
