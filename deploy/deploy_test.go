// Package deploy holds the files docker-compose.yml mounts; its test checks
// the compose file without a Docker engine (none runs on CI machines).
package deploy

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/edge"
	"github.com/tenantscope/tenantscope/natsbus"
)

type compose struct {
	Services map[string]struct {
		Image       string         `yaml:"image"`
		Build       any            `yaml:"build"`
		Command     []string       `yaml:"command"`
		Environment map[string]any `yaml:"environment"`
		Volumes     []string       `yaml:"volumes"`
		DependsOn   any            `yaml:"depends_on"`
		Deploy      struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"deploy"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c compose
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	require.NoError(t, dec.Decode(&c))

	for _, name := range []string{"nats-1", "nats-2", "nats-3", "clickhouse", "grafana", "prometheus", "migrate", "collector", "ui"} {
		require.Contains(t, c.Services, name)
	}
	require.True(t, strings.HasPrefix(c.Services["clickhouse"].Image, "clickhouse/clickhouse-server:"))
	require.True(t, strings.HasPrefix(c.Services["nats-1"].Image, "nats:"))
	require.Equal(t, []string{"migrate", "up"}, c.Services["migrate"].Command)
	require.Equal(t, []string{"collector"}, c.Services["collector"].Command)
	require.GreaterOrEqual(t, c.Services["collector"].Deploy.Replicas, 2, "collectors scale out on one durable consumer")
	require.Equal(t, []string{"collector", "--audit-writer"}, c.Services["audit-writer"].Command)
	require.LessOrEqual(t, c.Services["audit-writer"].Deploy.Replicas, 1, "exactly one audit chain writer")
	// Every file a service mounts exists in the repository.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./deploy/nats-auth/") || src == "./deploy/secrets.json" || src == "./deploy/certs" {
				continue // written by 'tenantscope nats setup', 'secrets init' and 'make certs' (git ignores them)
			}
			if strings.HasPrefix(src, "./") {
				_, err := os.Stat(filepath.Join("..", src))
				require.NoError(t, err, "service %s mounts %s", name, src)
			} else {
				require.Contains(t, c.Volumes, src, "service %s uses an undeclared volume", name)
			}
		}
	}
	// Grafana is provisioned from dashboards/.
	require.Contains(t, c.Services["grafana"].Volumes, "./dashboards/provisioning:/etc/grafana/provisioning:ro")
	// Secrets are required from the environment, never written in the file.
	require.NotRegexp(t, regexp.MustCompile(`(?i)password:\s*["']?[a-z0-9]{4,}`), string(raw))
}

func TestTenantscopeConfigForCompose(t *testing.T) {
	cfg, err := config.Load("tenantscope.yaml")
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.False(t, cfg.Embedded())
	require.False(t, cfg.EmbeddedNATS())
}

// nats.conf, with the resolver 'tenantscope nats setup' writes, parses with
// nats-server's own parser into operator mode: the operator is trusted, the
// suite's account has JetStream, each configured tenant has an account, and
// no password or user is in the file.
func TestNATSConfig(t *testing.T) {
	cfg, err := config.Load("tenantscope.yaml")
	require.NoError(t, err)
	dir := t.TempDir()
	raw, err := os.ReadFile("nats.conf")
	require.NoError(t, err)
	// The certificates 'make certs' writes, where the test can put them.
	ca, err := edge.NewLocalCA(filepath.Join(dir, "certs"), time.Hour)
	require.NoError(t, err)
	_, _, err = ca.Issue(filepath.Join(dir, "certs"), "nats", []string{"nats-1", "nats-2", "nats-3"}, time.Hour)
	require.NoError(t, err)
	conf := strings.ReplaceAll(string(raw), "/etc/nats/certs/", filepath.Join(dir, "certs")+"/")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600))
	auth, err := natsbus.SetupAuth(filepath.Join(dir, "auth"), cfg)
	require.NoError(t, err)
	t.Setenv("NATS_SERVER_NAME", "nats-1")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	require.NoError(t, err)
	require.True(t, opts.JetStream)
	require.Equal(t, "nats-1", opts.ServerName)
	require.Equal(t, "tenantscope", opts.Cluster.Name)
	require.Len(t, opts.Routes, 3, "a three-node cluster")
	require.Equal(t, 3, cfg.NATS.Stream.Replicas, "the suite's streams have three replicas")
	require.NotNil(t, opts.TLSConfig, "clients speak TLS")
	require.NotNil(t, opts.Cluster.TLSConfig, "routes speak TLS")
	require.Equal(t, tls.RequireAndVerifyClientCert, opts.Cluster.TLSConfig.ClientAuth, "routes verify each other's certificates")
	require.True(t, strings.HasPrefix(cfg.NATS.URL, "tls://"))
	require.NotEmpty(t, cfg.NATS.CAFile)
	require.NotEmpty(t, cfg.HTTP.TLSCert, "the UI/API and metrics listeners speak TLS")
	require.Contains(t, cfg.ClickHouse.DSN, "secure=true")
	require.Equal(t, opts.JetStreamMaxStore, int64(cfg.NATS.JetStreamBudget), "the budget 'config validate' checks is the server's max_file_store")
	require.Len(t, opts.TrustedOperators, 1, "operator mode")
	require.Empty(t, opts.Users, "no users in the server's configuration")
	require.NotEmpty(t, opts.SystemAccount)
	for _, tn := range cfg.Tenants {
		_, err := auth.TenantCreds(tn.ID, tn.NATS.User)
		require.NoError(t, err, "tenant %s has an account", tn.ID)
	}
	require.NotRegexp(t, regexp.MustCompile(`(?i)password`), string(raw))
}

func TestClickHouseReaderForGrafana(t *testing.T) {
	ds, err := os.ReadFile("../dashboards/provisioning/datasources/datasources.yaml")
	require.NoError(t, err)
	require.Contains(t, string(ds), "username: reader", "Grafana queries ClickHouse as the read-only user")
	init, err := os.ReadFile("clickhouse-init.sh")
	require.NoError(t, err)
	require.Contains(t, string(init), "readonly = 1")
	prom, err := os.ReadFile("prometheus.yml")
	require.NoError(t, err)
	require.NotContains(t, string(prom), ":8080", "Prometheus scrapes the metrics listeners, not the public port")
	require.Contains(t, string(prom), "scheme: https")
	require.Contains(t, string(ds), "secure: true", "Grafana reaches ClickHouse over TLS")
	tlsXML, err := os.ReadFile("clickhouse-tls.xml")
	require.NoError(t, err)
	require.Contains(t, string(tlsXML), "<https_port>8443</https_port>")
}

func TestDashboardsUseRealMetrics(t *testing.T) {
	files, err := filepath.Glob("../dashboards/json/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	src := goSources(t)
	metricRe := regexp.MustCompile(`tenantscope_[a-z_]+`)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		require.NoError(t, json.Unmarshal(raw, &d), f)
		require.NotEmpty(t, d.UID)
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, m := range metricRe.FindAllString(tg.Expr, -1) {
					base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
					require.Contains(t, src, `"`+base+`"`, "panel %q of %s uses %s, which no code exports", p.Title, f, base)
				}
			}
		}
	}
}

func goSources(t *testing.T) string {
	var b strings.Builder
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b.Write(raw)
		}
		return nil
	})
	require.NoError(t, err)
	return b.String()
}
