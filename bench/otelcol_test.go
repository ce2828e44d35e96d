package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tenantscope/tenantscope/config"
)

// TestOTelColYAML checks the Collector's configuration: one traces
// pipeline otlp -> batch -> clickhouse, the receiver on the given address
// over HTTP only, the exporter on the engine's HTTP interface with the
// benchmark's user, its own database and the exporter's schema, no metrics
// listener of the Collector's own, and values quoted so YAML keeps them as
// strings.
func TestOTelColYAML(t *testing.T) {
	for _, tc := range []struct {
		name, compress string
		wantCompress   any
	}{
		{"exporter's default compression", "", nil},
		{"compress none", "none", "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := otelcolYAML(otelcolSettings{OTLPAddr: "127.0.0.1:4318", EngineAddr: "127.0.0.1:8123", User: "u", Password: "p: #1", DB: "otel", Compress: tc.compress})
			var conf map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(text), &conf), text)
			at := func(path ...string) any {
				var v any = conf
				for _, k := range path {
					m, ok := v.(map[string]any)
					require.True(t, ok, "%v in %s", path, text)
					v = m[k]
				}
				return v
			}
			require.Equal(t, "127.0.0.1:4318", at("receivers", "otlp", "protocols", "http", "endpoint"))
			require.Nil(t, at("receivers", "otlp", "protocols", "grpc"))
			require.Equal(t, map[string]any{}, at("processors", "batch"))
			require.Equal(t, "http://127.0.0.1:8123", at("exporters", "clickhouse", "endpoint"))
			require.Equal(t, "u", at("exporters", "clickhouse", "username"))
			require.Equal(t, "p: #1", at("exporters", "clickhouse", "password"))
			require.Equal(t, "otel", at("exporters", "clickhouse", "database"))
			require.Equal(t, true, at("exporters", "clickhouse", "create_schema"))
			require.Equal(t, tc.wantCompress, at("exporters", "clickhouse", "compress"))
			require.Equal(t, "none", at("service", "telemetry", "metrics", "level"))
			require.Equal(t, map[string]any{"receivers": []any{"otlp"}, "processors": []any{"batch"}, "exporters": []any{"clickhouse"}},
				at("service", "pipelines", "traces"))
		})
	}
}

func TestParseProcStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		// Fields 14 and 15 are utime 250 and stime 130 ticks.
		{"plain", "4242 (otelcol-bench) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 12 0 100 1000000 5000", 3800 * time.Millisecond, false},
		{"name with spaces and parentheses", "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1", 70 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 7 7", 0, true},
		{"no name", "garbage", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatCPU(tc.stat)
			if tc.wantErr {
				require.ErrorIs(t, err, errProcFormat)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	got, err := parseStatusMiB("Name:\totelcol\nVmPeak:\t  999 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  1024 kB\n", "VmHWM")
	require.NoError(t, err)
	require.InDelta(t, 200.0, got, 1e-9)
	_, err = parseStatusMiB("Name:\tx\n", "VmHWM")
	require.ErrorIs(t, err, errProcFormat)
	// This process's own, read the way the children's are.
	self, err := procPeakRSSMiB(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, self)
	cpu, err := procCPU(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpu, time.Duration(0))
}

func TestFindOTelColDir(t *testing.T) {
	root := t.TempDir()
	mod := filepath.Join(root, "bench", "otelcol")
	require.NoError(t, os.MkdirAll(mod, 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module x\n"), 0o600))
	deep := filepath.Join(root, "cmd", "tenantscope")
	require.NoError(t, os.MkdirAll(deep, 0o750))
	for _, from := range []string{root, deep} {
		got, err := FindOTelColDir(from)
		require.NoError(t, err)
		require.Equal(t, mod, got)
	}
	_, err := FindOTelColDir(t.TempDir())
	require.ErrorContains(t, err, "--peer-dir")
}

// TestBuildOTelColUpToDate checks that a built Collector newer than every
// file of its module is kept, and that one older is rebuilt (here with a
// module that does not compile, so the go command's failure shows that a
// build was attempted, without building the real Collector).
func TestBuildOTelColUpToDate(t *testing.T) {
	mod := t.TempDir()
	src := filepath.Join(mod, "main.go")
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/broken\n\ngo 1.22\n"), 0o600))
	require.NoError(t, os.WriteFile(src, []byte("package main\n\nfunc main() { undefined() }\n"), 0o600))
	bin := filepath.Join(t.TempDir(), "otelcol-bench")
	require.NoError(t, os.WriteFile(bin, []byte("built"), 0o700))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(src, old, old))
	require.NoError(t, os.Chtimes(filepath.Join(mod, "go.mod"), old, old))

	var progress bytes.Buffer
	require.NoError(t, BuildOTelCol(context.Background(), mod, bin, &progress))
	require.Contains(t, progress.String(), "up to date")

	require.NoError(t, os.Chtimes(bin, old.Add(-time.Hour), old.Add(-time.Hour)))
	progress.Reset()
	err := BuildOTelCol(context.Background(), mod, bin, &progress)
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "%v\n%s", err, progress.String())
	require.Contains(t, progress.String(), "  go build: ")
	require.Contains(t, progress.String(), "undefined")
}

// The configuration bench otlp gives its serve child is one serve accepts:
// every listener where the benchmark looks for it, the tenant and its key.
func TestServeYAMLIsAValidConfiguration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "serve.yaml")
	require.NoError(t, os.WriteFile(path, []byte(serveYAML(filepath.Join(dir, "data"), "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003", "127.0.0.1:1004", "secret", []string{"acme"}, config.HashAPIKey("k"))), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, "127.0.0.1:1001", cfg.HTTP.Listen)
	require.Equal(t, "127.0.0.1:1002", cfg.HTTP.MetricsListen)
	require.Equal(t, "127.0.0.1:1003", cfg.NATS.Listen)
	require.Equal(t, "127.0.0.1:1004", cfg.ClickHouse.EngineListen)
	require.Equal(t, "secret", cfg.ClickHouse.ReaderPassword)
	require.Equal(t, []config.Region{{Name: "bench", Database: "bench"}}, cfg.Regions)
	require.Len(t, cfg.Tenants, 1)
	require.Equal(t, "acme", cfg.Tenants[0].ID)
	require.Equal(t, []config.APIKey{{Name: "acme-otlp", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("k")}}, cfg.APIKeys)
}

func TestRoundsTakeTheMedianOfEachRatio(t *testing.T) {
	round := func(suiteFirst bool, spans, colSpans float64, cpu, colCPU, colEngineCPU time.Duration, rss, colRSS, colEngineRSS float64) SideBySide {
		return SideBySide{
			SuiteFirst: suiteFirst,
			Suite:      OTLPResult{SpansPerSec: spans, CPUPerSpan: cpu, PeakRSSMiB: rss},
			Collector:  OTelColResult{SpansPerSec: colSpans, CollectorCPUPerSpan: colCPU, EngineCPUPerSpan: colEngineCPU, CollectorPeakRSSMiB: colRSS, EnginePeakRSSMiB: colEngineRSS},
		}
	}
	rs := Rounds{
		round(false, 90, 100, 12*time.Microsecond, 4*time.Microsecond, 6*time.Microsecond, 600, 200, 400),  // 0.90, 1.20, 1.00
		round(true, 120, 100, 9*time.Microsecond, 4*time.Microsecond, 6*time.Microsecond, 540, 200, 400),   // 1.20, 0.90, 0.90
		round(false, 100, 100, 10*time.Microsecond, 4*time.Microsecond, 6*time.Microsecond, 660, 200, 400), // 1.00, 1.00, 1.10
	}
	spans, cpu, rss := rs.Medians()
	require.InDelta(t, 1.00, spans, 1e-9)
	require.InDelta(t, 1.00, cpu, 1e-9)
	require.InDelta(t, 1.00, rss, 1e-9)
	_, _, rssOfTwo := rs[:2].Medians()
	require.InDelta(t, 0.95, rssOfTwo, 1e-9, "an even count takes the mean of the middle two")

	var b strings.Builder
	rs.Table(&b)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 2+3+1)
	require.Equal(t, "| 2 (tenantscope) | 120 / 100 | 1.20 | 9.0 / 10.0 | 0.90 | 540 / 600 | 0.90 |", lines[3])
	require.Equal(t, "| median of 3 rounds | | 1.00 | | 1.00 | | 1.00 |", lines[5])
}
