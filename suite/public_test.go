package suite_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// With both tenants' traffic flowing (demo) and metering running, the
// public routes of the main listener show no tenant id, tenant name,
// region, count or amount of money; the per-tenant series are on the
// metrics listener only, behind its token.
func TestPublicRoutesCarryNothingOfATenant(t *testing.T) {
	e := newEnv(t)
	e.cfgYAML = strings.Replace(e.cfgYAML, `metrics_listen: "`, `metrics_token: "scrape-secret", metrics_listen: "`, 1)
	e.start(t, "TENANTSCOPE_SUITE_DEMO=1", "TENANTSCOPE_METERING_EVERY=1s")

	require.Eventually(t, func() bool {
		code, body := get(t, "http://"+e.metricsAddr+"/metrics", "Authorization", "Bearer scrape-secret")
		return code == http.StatusOK && strings.Contains(body, `tenantscope_collector_rows_total{signal="events",tenant="acme"}`) &&
			strings.Contains(body, `tenantscope_usage_period_to_date{`)
	}, 60*time.Second, 500*time.Millisecond, "per-tenant series on the metrics listener")

	code, _ := get(t, "http://"+e.metricsAddr+"/metrics")
	require.Equal(t, http.StatusUnauthorized, code, "the metrics listener wants its token")
	code, _ = get(t, "http://"+e.metricsAddr+"/metrics", "Authorization", "Bearer wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = get(t, "http://"+e.metricsAddr+"/debug/pprof/heap", "Authorization", "Bearer scrape-secret")
	require.Equal(t, http.StatusNotFound, code, "profiles are served only when http.metrics_pprof is on")

	tenantish := regexp.MustCompile(`(?i)acme|globex|tenant=|_cost_|_usage_|invoice|EUR`)
	for _, path := range []string{"/", "/metrics", "/healthz", "/readyz", "/ui/login", "/api/v1/tenants/acme/audit-events"} {
		code, body := get(t, "http://"+e.httpAddr+path)
		require.NotContains(t, []int{http.StatusInternalServerError}, code, path)
		if loc := tenantish.FindStringIndex(body); loc != nil {
			t.Errorf("%s without credentials shows %q in %q", path, body[loc[0]:loc[1]], body[max(0, loc[0]-120):min(len(body), loc[1]+40)])
		}
	}
	_, home := get(t, "http://"+e.httpAddr+"/")
	require.NotContains(t, home, "arrive with their issues", "the stale text is gone")
	require.Contains(t, home, `data-testid="sign-in"`)
	_, pub := get(t, "http://"+e.httpAddr+"/metrics")
	require.Contains(t, pub, "go_goroutines", "process series stay public")
	require.Contains(t, pub, "tenantscope_collector_dead_letters_total", "pipeline series without tenant labels stay public")
}

// TestProfilesOnTheMetricsListener turns http.metrics_pprof on and reads
// Go's profiles as an SRE would, and as callers without the token, on the
// wrong listener, or after the command line (a flag may carry a secret).
func TestProfilesOnTheMetricsListener(t *testing.T) {
	e := newEnv(t)
	e.cfgYAML = strings.Replace(e.cfgYAML, `metrics_listen: "`, `metrics_pprof: true, metrics_token: "scrape-secret", metrics_listen: "`, 1)
	e.start(t)
	metrics := "http://" + e.metricsAddr
	token := []string{"Authorization", "Bearer scrape-secret"}

	code, heap := get(t, metrics+"/debug/pprof/heap", token...)
	require.Equal(t, http.StatusOK, code, heap)
	require.True(t, strings.HasPrefix(heap, "\x1f\x8b"), "a heap profile is gzipped protobuf")
	code, goroutines := get(t, metrics+"/debug/pprof/goroutine?debug=1", token...)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, goroutines, "collector.(*Service).Run", "the suite's own goroutines are in the dump")
	code, cpu := get(t, metrics+"/debug/pprof/profile?seconds=1", token...)
	require.Equal(t, http.StatusOK, code, cpu)
	require.True(t, strings.HasPrefix(cpu, "\x1f\x8b"), "a CPU profile is gzipped protobuf")

	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/"} {
		code, _ = get(t, metrics+path)
		require.Equal(t, http.StatusUnauthorized, code, "%s without the token", path)
		code, _ = get(t, metrics+path, "Authorization", "Bearer wrong")
		require.Equal(t, http.StatusUnauthorized, code, "%s with a wrong token", path)
	}
	code, body := get(t, metrics+"/debug/pprof/cmdline", token...)
	require.Equal(t, http.StatusNotFound, code, "the command line is not served: %s", body)
	require.NotContains(t, body, "--config")
	code, _ = get(t, "http://"+e.httpAddr+"/debug/pprof/heap")
	require.NotEqual(t, http.StatusOK, code, "the main listener serves no profile")
	code, _ = get(t, "http://"+e.httpAddr+"/debug/pprof/heap", token...)
	require.NotEqual(t, http.StatusOK, code, "the main listener serves no profile, with the metrics token either")
}
