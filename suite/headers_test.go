package suite_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every route of both listeners, answered or refused, passes the one edge:
// its security headers, no caching, a correlation id.
func TestEveryRouteCarriesTheEdgeHeaders(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	routes := []struct{ method, url string }{
		{"GET", "/"}, {"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/metrics"}, {"GET", "/ui/login"}, {"GET", "/ui/"},
		{"GET", "/ui/tenants/acme/audit"}, {"GET", "/ui/sessions"}, {"GET", "/api/v1/tenants/acme/audit-events"},
		{"POST", "/api/v1/tenants/acme/audit-events"}, {"GET", "/api/v1/tenants/acme/cost"}, {"GET", "/api/v1/tenants/acme/export"},
		{"GET", "/api/v1/tenants/acme/api-keys"}, {"GET", "/api/v1/tenants/acme/retention"}, {"POST", "/v1/traces"},
		{"POST", "/v1/logs"}, {"GET", "/no-such-route"},
	}
	check := func(method, url string) {
		req, err := http.NewRequest(method, url, strings.NewReader("{}"))
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			require.Equal(t, want, res.Header.Get(h), "%s %s (%d): %s", method, url, res.StatusCode, h)
		}
		require.Contains(t, res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'", "%s %s", method, url)
		require.NotEmpty(t, res.Header.Get("X-Correlation-Id"), "%s %s", method, url)
	}
	for _, r := range routes {
		check(r.method, "http://"+e.httpAddr+r.url)
	}
	check("GET", "http://"+e.metricsAddr+"/metrics")
}
