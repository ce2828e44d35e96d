// Package edge is the one HTTP edge of every tenantscope listener: the
// middleware chain each route passes (panic recovery, correlation id,
// security headers, no caching of tenant data, body limits and a body read
// deadline) and the http.Server settings (header, idle and body timeouts,
// TLS with certificates reloaded when their files change). A route added to
// a mux wrapped here cannot forget any of it.
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/identity"
)

// Config sets the edge's limits.
type Config struct {
	// MaxBody bounds every request body (a route may bound it lower);
	// 0 means 32 MiB.
	MaxBody int64
	// BodyIdle is how long a request body may send nothing before the
	// connection is closed (a slow or stalled upload); 0 means 10s.
	BodyIdle time.Duration
	// TrustedProxies are the load balancers whose X-Forwarded-Proto is
	// believed: a request they forward as https gets HSTS and Secure cookies.
	TrustedProxies []netip.Prefix
	// Guard, when set, decides whether a request reaches the routes at all
	// (it authenticates; false: it has answered). The suite's guard lets
	// only public paths through without credentials, so a route added
	// without its own check is still behind one.
	Guard  func(w http.ResponseWriter, r *http.Request) bool
	Logger zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxBody == 0 {
		c.MaxBody = 32 << 20
	}
	if c.BodyIdle == 0 {
		c.BodyIdle = 10 * time.Second
	}
	return c
}

// CSP allows the UI's own resources and inline styles (templ components
// carry <style>), and no script, frame or plugin from anywhere.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Wrap puts h behind the edge chain.
func Wrap(h http.Handler, cfg Config) http.Handler {
	cfg = cfg.withDefaults()
	guarded := h
	if cfg.Guard != nil {
		guarded = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if cfg.Guard(w, r) {
				h.ServeHTTP(w, r)
			}
		})
	}
	routes := identity.WithCorrelation(guarded)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel is compared by identity, as net/http does
					panic(v)
				}
				cfg.Logger.Error().Str("correlation_id", identity.CorrelationID(r.Context())).Str("path", r.URL.Path).
					Interface("panic", v).Msg("handler panicked")
				identity.WriteError(w, r, http.StatusInternalServerError, "internal", "internal error")
			}
		}()
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		// Every page and API answer may hold tenant data or evidence.
		hd.Set("Cache-Control", "no-store")
		if Secure(r, cfg.TrustedProxies) {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
			r = r.WithContext(withSecure(r.Context()))
		}
		if r.Body != nil && r.Body != http.NoBody {
			// Also when nobody reads the body (a refusal): net/http drains
			// an unread body before it answers, so without a deadline a
			// stalled one would hold the connection.
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(cfg.BodyIdle)) //nolint:errcheck // unsupported writers keep the server's timeouts
			r.Body = &idleBody{ReadCloser: http.MaxBytesReader(w, r.Body, cfg.MaxBody), rc: rc, idle: cfg.BodyIdle}
		}
		routes.ServeHTTP(w, r)
	})
}

// idleBody extends the connection's read deadline before each read of the
// body, so a body that stalls (Content-Length announced, bytes never sent)
// ends the request after BodyIdle, while a large upload that keeps flowing
// is not cut off.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle)) //nolint:errcheck // unsupported writers keep the server's timeouts
	return b.ReadCloser.Read(p)
}

// Secure reports whether the browser speaks TLS to us: directly, or to a
// trusted proxy that says so.
func Secure(r *http.Request, trusted []netip.Prefix) bool {
	if r.TLS != nil {
		return true
	}
	if len(trusted) == 0 || !strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// Server returns an http.Server with the edge's timeouts: headers within
// 10 s, idle keep-alive connections closed after 2 min, bodies bounded by
// Wrap's idle deadline (not by a whole-request timeout, which would cut
// long exports and large uploads).
func Server(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}

// Certificates serves a certificate and key from files, reading them again
// when either file changes (checked at most once a second), so a renewed
// certificate is used without a restart.
type Certificates struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	mod     time.Time
	checked time.Time
}

// LoadCertificates reads the pair once, failing early on a bad one.
func LoadCertificates(certFile, keyFile string) (*Certificates, error) {
	c := &Certificates{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Certificates) modTime() (time.Time, error) {
	var latest time.Time
	for _, f := range []string{c.certFile, c.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if st.ModTime().After(latest) {
			latest = st.ModTime()
		}
	}
	return latest, nil
}

func (c *Certificates) reload() error {
	mod, err := c.modTime()
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	c.cert, c.mod = &cert, mod
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *Certificates) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) > time.Second {
		c.checked = now
		if mod, err := c.modTime(); err == nil && mod.After(c.mod) {
			// A half-written pair fails to load: keep serving the old one.
			if err := c.reload(); err != nil && c.cert == nil {
				return nil, err
			}
		}
	}
	if c.cert == nil {
		return nil, errors.New("tls: no certificate")
	}
	return c.cert, nil
}

// TLSConfig is the server TLS configuration for these certificates.
func (c *Certificates) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate}
}

type secureKey struct{}

func withSecure(ctx context.Context) context.Context {
	return context.WithValue(ctx, secureKey{}, true)
}

// IsSecure reports whether the edge found the request to come over TLS
// (directly or through a trusted proxy): cookies set on it are Secure.
func IsSecure(ctx context.Context) bool {
	v, _ := ctx.Value(secureKey{}).(bool) //nolint:errcheck // absent is false
	return v
}
