package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

// CLI commands pointed at a data directory without secrets say so; they
// never write a bootstrap file with keys of their own (which made verify
// report every chain as unsigned: a false tamper alarm).
func TestCLIRefusesToInventSecrets(t *testing.T) {
	data := t.TempDir()
	_, err := runCmd(t, "verify", "--data", data)
	require.ErrorContains(t, err, "no checkpoint verifier key")
	_, err = runCmd(t, "deadletter", "list", "--data", data)
	require.ErrorContains(t, err, "no NATS password of the suite's user")
	_, err = runCmd(t, "export", "--data", data, "--tenant", "x")
	require.Error(t, err)
	_, err = runCmd(t, "nats", "creds", "--data", data, "--tenant", "x", "--out", filepath.Join(t.TempDir(), "x.creds"))
	require.Error(t, err)
	entries, err := os.ReadDir(data)
	require.NoError(t, err)
	require.Empty(t, entries, "no command wrote into the data directory")
}

// 'secrets init' writes one set for a distributed deployment; every
// process reads the same values from it and refuses to start without it.
func TestSecretsInitGivesADeploymentOneSet(t *testing.T) {
	dir := t.TempDir()
	cfgPath := "../../config/testdata/distributed.good.yaml"
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)
	cfg.SecretsFile = filepath.Join(dir, "missing.json")
	err = config.ApplySecrets(&cfg)
	require.ErrorIs(t, err, config.ErrMissingSecrets)
	require.Contains(t, err.Error(), "audit signer key")
	_, statErr := os.Stat(cfg.SecretsFile)
	require.ErrorIs(t, statErr, os.ErrNotExist, "a process that may not generate writes nothing")

	out := filepath.Join(dir, "secrets.json")
	msg, err := runCmd(t, "secrets", "init", "--config", cfgPath, "--out", out)
	require.NoError(t, err, msg)
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	creds, err := os.ReadFile(out + ".credentials")
	require.NoError(t, err)
	require.NotContains(t, string(creds), "nats ", "no tenant NATS passwords a cluster does not know")

	// Two processes of the deployment read the same secrets.
	var sessions []string
	for range 2 {
		c, err := config.Load(cfgPath)
		require.NoError(t, err)
		c.SecretsFile = out
		require.NoError(t, config.ApplySecrets(&c))
		b, err := config.LoadSecrets(c)
		require.NoError(t, err)
		require.NotEmpty(t, b.AuditSignerKey)
		sessions = append(sessions, b.SessionKey+b.AuditVerifierKey)
	}
	require.Equal(t, sessions[0], sessions[1])
	again, err := runCmd(t, "secrets", "init", "--config", cfgPath, "--out", out)
	require.NoError(t, err)
	require.Contains(t, again, "already holds every secret")

	show, err := runCmd(t, "config", "show", "--config", cfgPath)
	require.NoError(t, err)
	for _, field := range []string{"kek:", "pii_salt:", "password:", "metrics_token:"} {
		for _, line := range strings.Split(show, "\n") {
			if strings.Contains(line, field) {
				v := strings.TrimSpace(strings.SplitN(line, field, 2)[1])
				require.Contains(t, []string{"", `""`, "REDACTED"}, v, "config show prints %s", line)
			}
		}
	}
}
