package config

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err == nil {
				err = cfg.Validate()
			}
			if strings.HasSuffix(f, ".good.yaml") {
				require.NoError(t, err)
				return
			}
			require.True(t, strings.HasSuffix(f, ".bad.yaml"), "fixture must be .good.yaml or .bad.yaml")
			want := wantLine(t, f)
			require.Error(t, err, "bad fixture accepted")
			require.Contains(t, err.Error(), want)
		})
	}
}

func wantLine(t *testing.T, path string) string {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	require.True(t, s.Scan())
	want, ok := strings.CutPrefix(s.Text(), "# want: ")
	require.True(t, ok, "a bad fixture starts with '# want: <text of the error>'")
	return want
}

func TestExampleConfigIsValid(t *testing.T) {
	cfg, err := Load("../examples/tenantscope.yaml")
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.GreaterOrEqual(t, len(cfg.Regions), 2)
	require.GreaterOrEqual(t, len(cfg.Tenants), 2)
	regions := map[string]bool{}
	for _, tn := range cfg.Tenants {
		regions[tn.Region] = true
	}
	require.GreaterOrEqual(t, len(regions), 2, "two tenants in two regions")
	for _, role := range Roles {
		var user, key bool
		for _, u := range cfg.Users {
			user = user || u.Role == role
		}
		for _, k := range cfg.APIKeys {
			key = key || k.Role == role
		}
		require.True(t, user, "example has a user with role %s", role)
		require.True(t, key, "example has an API key with role %s", role)
	}
}

func TestPrecedence(t *testing.T) {
	cfg, err := Parse([]byte("http: {listen: '127.0.0.1:9000'}\nnats: {listen: '127.0.0.1:5000'}"))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9000", cfg.HTTP.Listen) // file over default
	require.Equal(t, "127.0.0.1:8123", cfg.ClickHouse.EngineListen)
	env := map[string]string{"TENANTSCOPE_HTTP": "127.0.0.1:9100"}
	cfg.ApplyEnv(func(k string) string { return env[k] })
	require.Equal(t, "127.0.0.1:9100", cfg.HTTP.Listen) // env over file
	require.Equal(t, "127.0.0.1:5000", cfg.NATS.Listen)
}

func TestRedactedHidesSecrets(t *testing.T) {
	cfg, err := Load("testdata/distributed.good.yaml")
	require.NoError(t, err)
	b, err := yaml.Marshal(cfg.Redacted())
	require.NoError(t, err)
	out := string(b)
	require.NotContains(t, out, ": secret", "the NATS password in the file")
	require.NotContains(t, out, ":pw@")
	require.NotContains(t, out, "2c26b46b")
	require.Contains(t, out, "REDACTED")
}

func TestMemoryDefaultsAndOverrides(t *testing.T) {
	var none Memory
	require.Equal(t, int64(DefaultGoMemoryBase), Config{}.GoMemoryLimit())
	require.Equal(t, int64(DefaultGoMemoryBase+3*DefaultGoMemoryPerTenant), Config{Tenants: make([]Tenant, 3)}.GoMemoryLimit(), "the default grows with the tenants")
	require.Equal(t, DefaultEngineAllocator, none.EngineAllocatorOptions())
	require.Equal(t, DefaultGoGCPercent, none.GoGCPercentOrDefault())
	require.Equal(t, 50, Memory{GoGCPercent: 50}.GoGCPercentOrDefault())
	require.Equal(t, "", Memory{EngineAllocator: "-"}.EngineAllocatorOptions(), `"-" is the library's own allocator options`)

	cfg, err := Parse([]byte("data: ./data\nmemory: {go_limit: 512MiB, go_gc_percent: 120, engine_allocator: \"dirty_decay_ms:1000,muzzy_decay_ms:0\"}\n"))
	require.NoError(t, err)
	require.Equal(t, int64(512<<20), cfg.GoMemoryLimit())
	require.Equal(t, 120, cfg.Memory.GoGCPercentOrDefault())
	require.Equal(t, "dirty_decay_ms:1000,muzzy_decay_ms:0", cfg.Memory.EngineAllocatorOptions())
}
