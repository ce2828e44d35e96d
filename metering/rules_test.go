package metering_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/metering"
)

// promtool finds Debian's promtool (scripts/apt-install.sh prometheus, run by
// make test, installs it when it is missing).
func promtool(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("TENANTSCOPE_REQUIRE_PROMETHEUS") != "" {
		t.Fatal("no promtool: run scripts/apt-install.sh prometheus (make test does)")
	}
	t.Skip("no promtool on this machine: run scripts/apt-install.sh prometheus (make test does, and then requires it)")
	return ""
}

const ruleTests = `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # acme: 10% of requests fail against a 99% objective (burn rate 10)
      - series: 'tenantscope_sla_requests_total{tenant="acme",service="api"}'
        values: '0+60x600'
      - series: 'tenantscope_sla_requests_total{tenant="acme",service="web"}'
        values: '0+40x600'
      - series: 'tenantscope_sla_errors_total{tenant="acme",service="api"}'
        values: '0+10x600'
      - series: 'tenantscope_slo_objective_ratio{tenant="acme"}'
        values: '0.99x600'
      # globex: no errors
      - series: 'tenantscope_sla_requests_total{tenant="globex",service="api"}'
        values: '0+100x600'
      - series: 'tenantscope_sla_errors_total{tenant="globex",service="api"}'
        values: '0+0x600'
      - series: 'tenantscope_slo_objective_ratio{tenant="globex"}'
        values: '0.999x600'
    promql_expr_test:
      - expr: tenantscope:sla_error_ratio:rate1h
        eval_time: 2h
        exp_samples:
          - labels: 'tenantscope:sla_error_ratio:rate1h{tenant="acme"}'
            value: 0.1
          - labels: 'tenantscope:sla_error_ratio:rate1h{tenant="globex"}'
            value: 0
    alert_rule_test:
      # After 7 hours: 10x burns past the 6h/30m (6x), 1d/2h (3x) and 3d/6h
      # (1x) pairs, not the 1h/5m one (14.4x).
      - eval_time: 7h
        alertname: TenantErrorBudgetBurn
        exp_alerts:
          - exp_labels: {tenant: acme, severity: page, long_window: 6h, short_window: 30m}
            exp_annotations:
              summary: "Tenant acme burns its error budget 6x too fast (6h and 30m windows)"
          - exp_labels: {tenant: acme, severity: ticket, long_window: 1d, short_window: 2h}
            exp_annotations:
              summary: "Tenant acme burns its error budget 3x too fast (1d and 2h windows)"
          - exp_labels: {tenant: acme, severity: ticket, long_window: 3d, short_window: 6h}
            exp_annotations:
              summary: "Tenant acme burns its error budget 1x too fast (3d and 6h windows)"
      # One minute in, the condition holds but has not held for 1m yet.
      - eval_time: 1m
        alertname: TenantErrorBudgetBurn
        exp_alerts: []
`

func TestGeneratedRulesPassPromtool(t *testing.T) {
	tool := promtool(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(metering.Rules()), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules_test.yml"), []byte(ruleTests), 0o644))
	out, err := exec.Command(tool, "check", "rules", filepath.Join(dir, "rules.yml")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SUCCESS: 11 rules found")
	cmd := exec.Command(tool, "test", "rules", "rules_test.yml")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	// The committed copy is what the generator writes.
	committed, err := os.ReadFile("../deploy/prometheus-rules.yml")
	require.NoError(t, err)
	require.Equal(t, metering.Rules(), string(committed), "deploy/prometheus-rules.yml is stale: run 'tenantscope slo rules > deploy/prometheus-rules.yml'")
}
