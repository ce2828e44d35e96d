package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// An oidc section without local_users keeps password sign-in (break-glass);
// the client secret comes from its file and is never printed.
func TestOIDCDefaultsAndSecret(t *testing.T) {
	cfg, err := Load("testdata/oidc.good.yaml")
	require.NoError(t, err)
	require.True(t, cfg.OIDC.LocalUsers, "local users stay unless switched off")
	require.Equal(t, "groups", cfg.OIDC.ClaimOfRole())
	require.Equal(t, "preferred_username", cfg.OIDC.ClaimOfName())
	require.Equal(t, "Example SSO", cfg.OIDC.DisplayName())

	off, err := Load("testdata/oidc-local-off.good.yaml")
	require.NoError(t, err)
	require.False(t, off.OIDC.LocalUsers)
	require.Equal(t, "127.0.0.1", off.OIDC.DisplayName(), "the issuer's host by default")
	require.Equal(t, []string{"openid", "profile", "email"}, off.OIDC.ScopeList())

	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cr3t-value\n"), 0o600))
	cfg.OIDC.ClientSecretFile = secret
	require.NoError(t, cfg.ReadSecretFiles())
	require.Equal(t, "s3cr3t-value", cfg.OIDC.ClientSecret)
	b, err := yaml.Marshal(cfg.Redacted())
	require.NoError(t, err)
	require.NotContains(t, string(b), "s3cr3t-value")

	env := map[string]string{"TENANTSCOPE_OIDC_CLIENT_SECRET": "from-env"}
	cfg.ApplyEnv(func(k string) string { return env[k] })
	require.Equal(t, "from-env", cfg.OIDC.ClientSecret)
}
