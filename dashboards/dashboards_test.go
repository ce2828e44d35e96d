// Package dashboards_test checks the Grafana dashboards against the real
// engine and Prometheus' own tooling: every ClickHouse panel query (and
// template variable query), with the plugin's macros and the variables
// expanded, runs on the embedded engine over demo data and returns rows;
// every PromQL expression parses (promtool). That the PromQL names metrics
// the suite exports is checked against a running suite in package suite.
package dashboards_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/demo"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// Target is a panel or variable query.
type Target struct {
	Panel, Ref string
	Datasource struct {
		Type, UID string
	}
	Expr, RawSQL string
}

// Dashboard is what the test reads of a dashboard file.
type Dashboard struct {
	File    string
	UID     string
	Title   string
	Targets []Target
	Vars    []Target
}

func load(t *testing.T) []Dashboard {
	files, err := filepath.Glob("json/*.json")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 4)
	var out []Dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var raw struct {
			UID, Title string
			Panels     []struct {
				Title   string
				Targets []struct {
					RefID      string `json:"refId"`
					Datasource struct{ Type, UID string }
					Expr       string
					RawSQL     string `json:"rawSql"`
				}
			}
			Templating struct {
				List []struct {
					Name, Type string
					Query      any
					Datasource *struct{ Type, UID string }
				}
			}
		}
		require.NoError(t, json.Unmarshal(b, &raw), f)
		d := Dashboard{File: f, UID: raw.UID, Title: raw.Title}
		for _, p := range raw.Panels {
			require.NotEmpty(t, p.Targets, "%s: panel %q has no query", f, p.Title)
			for _, tg := range p.Targets {
				x := Target{Panel: p.Title, Ref: tg.RefID, Expr: tg.Expr, RawSQL: tg.RawSQL}
				x.Datasource.Type, x.Datasource.UID = tg.Datasource.Type, tg.Datasource.UID
				d.Targets = append(d.Targets, x)
			}
		}
		for _, v := range raw.Templating.List {
			if v.Type == "query" {
				require.NotNil(t, v.Datasource, "%s: variable %s has no datasource", f, v.Name)
				x := Target{Panel: "variable " + v.Name, RawSQL: fmt.Sprint(v.Query)}
				x.Datasource.Type, x.Datasource.UID = v.Datasource.Type, v.Datasource.UID
				d.Vars = append(d.Vars, x)
			}
		}
		out = append(out, d)
	}
	return out
}

// TestEveryPanelUsesAProvisionedDatasource: the uids in the panels are the
// provisioned ones, and the compose file provisions them into Grafana.
func TestEveryPanelUsesAProvisionedDatasource(t *testing.T) {
	b, err := os.ReadFile("provisioning/datasources/datasources.yaml")
	require.NoError(t, err)
	var prov struct {
		Datasources []struct{ UID, Type string }
	}
	require.NoError(t, yaml.Unmarshal(b, &prov))
	uids := map[string]string{}
	for _, d := range prov.Datasources {
		uids[d.UID] = d.Type
	}
	for _, d := range load(t) {
		for _, tg := range append(d.Targets, d.Vars...) {
			require.Equal(t, uids[tg.Datasource.UID], tg.Datasource.Type, "%s: %s uses datasource %q", d.File, tg.Panel, tg.Datasource.UID)
			require.True(t, (tg.Expr != "") != (tg.RawSQL != ""), "%s: %s has one query", d.File, tg.Panel)
		}
	}
	compose, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	require.Contains(t, string(compose), "./dashboards/provisioning:/etc/grafana/provisioning")
	require.Contains(t, string(compose), "./dashboards/json:/var/lib/grafana/dashboards")
}

// expand replaces the Grafana ClickHouse plugin's macros and the dashboard
// variables, as Grafana would for the last 24 hours.
func expand(sql string, vars map[string][]string, from, to time.Time) string {
	quote := func(vs []string) string {
		q := make([]string, len(vs))
		for i, v := range vs {
			q[i] = "'" + strings.ReplaceAll(v, "'", "\\'") + "'"
		}
		return strings.Join(q, ",")
	}
	sql = regexp.MustCompile(`\$__timeFilter\(([^)]+)\)`).ReplaceAllString(sql, fmt.Sprintf("$1 >= toDateTime(%d) AND $1 <= toDateTime(%d)", from.Unix(), to.Unix()))
	sql = regexp.MustCompile(`\$__timeInterval\(([^)]+)\)`).ReplaceAllString(sql, "toStartOfInterval(toDateTime($1), INTERVAL 60 second)")
	sql = strings.NewReplacer("$__fromTime", fmt.Sprintf("toDateTime(%d)", from.Unix()), "$__toTime", fmt.Sprintf("toDateTime(%d)", to.Unix())).Replace(sql)
	for name, vs := range vars {
		sql = strings.ReplaceAll(sql, "${"+name+":singlequote}", quote(vs))
		sql = strings.ReplaceAll(sql, "${"+name+"}", strings.Join(vs, ","))
		sql = strings.ReplaceAll(sql, "$"+name, strings.Join(vs, ","))
	}
	return sql
}

func TestEveryClickHouseQueryReturnsRowsOnDemoData(t *testing.T) {
	p := collectortest.Start(t, nil, "acme", "globex")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var tenants []demo.Tenant
	for _, tn := range p.Config.Tenants {
		tenants = append(tenants, demo.Tenant{ID: tn.ID, User: tn.NATS.User, Password: p.Passwords[tn.ID]})
	}
	require.NoError(t, demo.Run(ctx, demo.Options{URL: p.URL, Tenants: tenants, Rate: 400, Count: 200}))
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM events") == 400 && p.Count(t, "SELECT count() FROM audit_records") > 0 &&
			p.Count(t, "SELECT sum(valid) FROM sla_minutely") == 400
	}, 30*time.Second, 100*time.Millisecond)

	db := p.Config.Regions[0].Database
	to := time.Now().Add(time.Minute)
	from := to.Add(-24 * time.Hour)
	vars := map[string][]string{"region": {db}}
	run := func(d Dashboard, tg Target) [][]any {
		sql := expand(tg.RawSQL, vars, from, to)
		require.NotContains(t, sql, "$", "%s: %s: unexpanded macro or variable in %s", d.File, tg.Panel, sql)
		rows, err := p.Store.Conn().Query(ctx, sql)
		require.NoError(t, err, "%s: %s:\n%s", d.File, tg.Panel, sql)
		defer rows.Close()
		var out [][]any
		for rows.Next() {
			vals := make([]any, len(rows.ColumnTypes()))
			for i, c := range rows.ColumnTypes() {
				vals[i] = newOf(c.ScanType())
			}
			require.NoError(t, rows.Scan(vals...))
			out = append(out, vals)
		}
		require.NoError(t, rows.Err())
		return out
	}
	queries := 0
	for _, d := range load(t) {
		vars = map[string][]string{"region": {db}}
		// Variables first, in order: later ones use earlier ones.
		for _, v := range d.Vars {
			rows := run(d, v)
			require.NotEmpty(t, rows, "%s: %s returns no values", d.File, v.Panel)
			var vals []string
			for _, r := range rows {
				vals = append(vals, fmt.Sprint(deref(r[0])))
			}
			sort.Strings(vals)
			vars[strings.TrimPrefix(v.Panel, "variable ")] = vals
			queries++
		}
		for _, tg := range d.Targets {
			if tg.Datasource.Type != "grafana-clickhouse-datasource" {
				continue
			}
			require.NotEmpty(t, run(d, tg), "%s: panel %q returns no rows", d.File, tg.Panel)
			queries++
		}
	}
	t.Logf("%d ClickHouse queries returned rows", queries)
	require.GreaterOrEqual(t, queries, 15)
}

func TestEveryPromQLExpressionParses(t *testing.T) {
	tool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("TENANTSCOPE_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("no promtool: run scripts/apt-install.sh prometheus (make test does)")
		}
		t.Skip("no promtool: run scripts/apt-install.sh prometheus (make test does, and then requires it)")
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	n := 0
	for _, d := range load(t) {
		for _, tg := range d.Targets {
			if tg.Datasource.Type != "prometheus" {
				continue
			}
			expr := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$tenant", "acme|globex").Replace(tg.Expr)
			require.NotContains(t, expr, "$", "%s: %s", d.File, tg.Panel)
			b, _ := json.Marshal(expr)
			fmt.Fprintf(&rules, "      - record: dashboard_query_%d\n        expr: %s\n", n, b)
			n++
		}
	}
	f := filepath.Join(t.TempDir(), "rules.yml")
	require.NoError(t, os.WriteFile(f, []byte(rules.String()), 0o644))
	out, err := exec.Command(tool, "check", "rules", f).CombinedOutput()
	require.NoError(t, err, "%s\n%s", out, rules.String())
	require.Contains(t, string(out), fmt.Sprintf("SUCCESS: %d rules found", n))
}
