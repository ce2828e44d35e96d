package suite_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/metering"
)

// TestPrometheusScrapesTheSuite runs Debian's prometheus against serve (with
// demo traffic and the generated rules): the per-tenant series and the
// recording rules arrive, tenant label values stay the configured tenants,
// and every metric the dashboards' PromQL names is on /metrics.
func TestPrometheusScrapesTheSuite(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("TENANTSCOPE_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("no prometheus: run scripts/apt-install.sh prometheus (make test does)")
		}
		t.Skip("no prometheus: run scripts/apt-install.sh prometheus (make test does, and then requires it)")
	}
	e := newEnv(t)
	card := filepath.Join(e.data, "ratecard.yaml")
	require.NoError(t, os.WriteFile(card, []byte("versions:\n  - {version: v1, effective_from: 2026-01-01, currency: EUR, prices: [{meter: events, unit: 1000, price: 1}]}\n"), 0o644))
	e.cfgYAML += "metering: {rate_card: " + card + "}\n"
	e.start(t, "TENANTSCOPE_SUITE_DEMO=1", "TENANTSCOPE_METERING_EVERY=1s")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(metering.Rules()), 0o644))
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%s]
scrape_configs:
  - job_name: tenantscope
    static_configs: [{targets: ["%s"]}]
`, filepath.Join(dir, "rules.yml"), e.metricsAddr)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	addr := freePort(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	query := func(q string) []map[string]any {
		res, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil
		}
		defer res.Body.Close()
		var body struct {
			Data struct {
				Result []map[string]any `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(res.Body).Decode(&body) != nil {
			return nil
		}
		return body.Data.Result
	}
	labels := func(rs []map[string]any, name string) map[string]bool {
		out := map[string]bool{}
		for _, r := range rs {
			m, _ := r["metric"].(map[string]any)
			if v, ok := m[name].(string); ok {
				out[v] = true
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(query(`up{job="tenantscope"} == 1`)) == 1 }, 60*time.Second, 500*time.Millisecond, "prometheus scrapes the suite")
	require.Eventually(t, func() bool {
		return len(labels(query(`tenantscope_sla_requests_total`), "tenant")) == 2 &&
			len(labels(query(`tenantscope:sla_error_ratio:rate5m`), "tenant")) == 2 &&
			len(labels(query(`tenantscope_usage_period_to_date{meter="events"} > 0`), "tenant")) == 2 &&
			len(query(`tenantscope_slo_objective_ratio`)) == 2
	}, 60*time.Second, 500*time.Millisecond, "per-tenant series and recording rules arrive")
	// Bounded cardinality: the tenant label takes only configured tenants
	// (and the platform chain on the audit and ingest series).
	for _, m := range []string{"tenantscope_collector_rows_total", "tenantscope_sla_requests_total", "tenantscope_usage_period_to_date", "tenantscope_slo_burn_rate"} {
		for v := range labels(query(m), "tenant") {
			require.Contains(t, []string{"acme", "globex", "_platform"}, v, "%s tenant=%q", m, v)
		}
	}

	// Every metric a dashboard's PromQL names is exported.
	res, err := http.Get("http://" + e.metricsAddr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exported[strings.Fields(name)[0]] = true
		}
	}
	files, err := filepath.Glob("../dashboards/json/*.json")
	require.NoError(t, err)
	nameRe := regexp.MustCompile(`tenantscope_[a-z0-9_]+`)
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var d struct {
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		require.NoError(t, json.Unmarshal(raw, &d))
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, m := range nameRe.FindAllString(tg.Expr, -1) {
					base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
					require.True(t, exported[base], "%s: panel %q uses %s, which /metrics does not export", f, p.Title, base)
					checked++
				}
			}
		}
	}
	require.Greater(t, checked, 15)
}
