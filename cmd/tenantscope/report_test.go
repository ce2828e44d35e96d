package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// The CLI's CSV reports neutralize formula cells (OWASP); numbers stay.
func TestWriteRowsNeutralizesFormulas(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeRows(&b, "csv", []string{"tenant", "note", "amount"}, func(yield func([]any)) {
		yield([]any{"=cmd|' /C calc'!A0", `=HYPERLINK("http://evil.example/x","open")`, -12.5})
		yield([]any{"acme", "+1+1", "-"})
	}))
	require.Equal(t, "tenant,note,amount\n'=cmd|' /C calc'!A0,\"'=HYPERLINK(\"\"http://evil.example/x\"\",\"\"open\"\")\",-12.5\nacme,'+1+1,'-\n", b.String())
}
