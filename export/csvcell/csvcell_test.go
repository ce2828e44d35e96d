package csvcell_test

import (
	"bytes"
	"encoding/csv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/export/csvcell"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		`=HYPERLINK("http://evil.example/x","open")`: `'=HYPERLINK("http://evil.example/x","open")`,
		"+cmd|' /C calc'!A0":                         "'+cmd|' /C calc'!A0",
		"-2+3":                                       "'-2+3",
		"@SUM(1)":                                    "'@SUM(1)",
		"\t=1":                                       "'\t=1",
		"\r=1":                                       "'\r=1",
		"-":                                          "'-",
		"+":                                          "'+",
		"-12.5":                                      "-12.5",
		"+3":                                         "+3",
		"-1e-3":                                      "-1e-3",
		"-.5":                                        "-.5",
		"-0x1p3":                                     "'-0x1p3",
		"-Inf":                                       "'-Inf",
		"acme":                                       "acme",
		"a=1":                                        "a=1",
		"":                                           "",
		"'=already":                                  "'=already",
	} {
		require.Equal(t, want, csvcell.Escape(in), "%q", in)
	}
}

func TestWriterRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w := csvcell.NewWriter(&b)
	require.NoError(t, w.WriteAll([][]string{{"a", "=1+1", "-5"}, {"x,\"y\"", "@me", "\n=2"}}))
	rows, err := csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Equal(t, [][]string{{"a", "'=1+1", "-5"}, {"x,\"y\"", "'@me", "\n=2"}}, rows)
}
