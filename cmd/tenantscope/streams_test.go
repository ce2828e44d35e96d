package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfigValidateComputesStorage: the compose configuration (two
// tenants, the defaults: 1 GiB backlogs) reserves 4 GiB on a node, ingest
// streams for acme, globex and the platform chain and the dead letters. On
// a 2 GB node that does not fit and validate says so, stream by stream; on
// the 10 GB of deploy/nats.conf it fits.
func TestConfigValidateComputesStorage(t *testing.T) {
	out, err := runCmd(t, "config", "validate", "--config", "../../deploy/tenantscope.yaml", "--jetstream-budget", "2GB")
	t.Logf("2GB:\n%s%v", out, err)
	require.ErrorContains(t, err, "nats.jetstream_budget: the streams reserve 4 GiB on each node that holds them (3 ingest backlogs and the dead letters), more than the budget of 2 GiB")
	for _, line := range []string{
		"INGEST_acme             1 GiB",
		"INGEST_globex           1 GiB",
		"INGEST__platform        1 GiB",
		"TENANTSCOPE_DEADLETTER  1 GiB",
		"total                   4 GiB",
		"budget  2 GiB: 2 GiB short: DOES NOT FIT",
	} {
		require.Contains(t, out, line)
	}

	out, err = runCmd(t, "config", "validate", "--config", "../../deploy/tenantscope.yaml", "--jetstream-budget", "10GB")
	t.Logf("10GB:\n%s", out)
	require.NoError(t, err)
	require.Contains(t, out, "configuration is valid")
	require.Contains(t, out, "budget  10 GiB: 40% reserved, 6 GiB left: fits")
	require.Contains(t, out, "with the collector stopped, publishing at its quota (32 MiB/s) fills it in 32s")

	_, err = runCmd(t, "config", "validate", "--config", "../../deploy/tenantscope.yaml", "--jetstream-budget", "lots")
	require.ErrorContains(t, err, `--jetstream-budget: "lots" is not a size`)
}
