package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestConfigValidateNamesTheFieldOfEveryBadFixture(t *testing.T) {
	files, err := filepath.Glob("../../config/testdata/*.bad.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			fh, err := os.Open(f)
			require.NoError(t, err)
			s := bufio.NewScanner(fh)
			s.Scan()
			fh.Close()
			want := strings.TrimPrefix(s.Text(), "# want: ")
			_, err = runCmd(t, "config", "validate", "--config", f)
			require.Error(t, err)
			require.Contains(t, err.Error(), want)
		})
	}
	out, err := runCmd(t, "config", "validate", "--config", "../../examples/tenantscope.yaml")
	require.NoError(t, err)
	require.Contains(t, out, "configuration is valid: 2 regions, 2 tenants, 5 users, 5 API keys, 2 meters; rate card ../../examples/ratecard.yaml: 2 versions")
}

func TestConfigShowRedactsAndFlagsWin(t *testing.T) {
	out, err := runCmd(t, "config", "show", "--config", "../../config/testdata/distributed.good.yaml", "--http", "127.0.0.1:9999")
	require.NoError(t, err)
	require.Contains(t, out, "listen: 127.0.0.1:9999")
	require.NotContains(t, out, ": secret", "the password in the file is not shown")
	require.Contains(t, out, "REDACTED")
}

func TestDispatch(t *testing.T) {
	out, err := runCmd(t, "version")
	require.NoError(t, err)
	require.Contains(t, out, "tenantscope ")
	out, err = runCmd(t, "help")
	require.NoError(t, err)
	for _, c := range []string{"serve", "engine", "migrate", "config", "collector", "ui", "version", "verify", "deadletter", "demo", "bench"} {
		require.Contains(t, out, "  "+c+" ")
	}
	_, err = runCmd(t, "nope")
	require.ErrorContains(t, err, `unknown command "nope"`)
	_, err = runCmd(t, "migrate", "sideways")
	require.ErrorIs(t, err, errUsage)
}

func TestWriteRowsQuotesCSV(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeRows(&b, "csv", []string{"tenant", "note"}, func(yield func([]any)) {
		yield([]any{"acme", `a, "quoted" value`})
	}))
	require.Equal(t, "tenant,note\nacme,\"a, \"\"quoted\"\" value\"\n", b.String())
}
