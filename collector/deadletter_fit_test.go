package collector

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A dead letter with several oversized headers names every one it cut, cuts
// between characters (never inside a multi-byte one), and fits the server's
// payload.
func TestFitDeadLetterCutsEveryLongHeaderBetweenCharacters(t *testing.T) {
	out := nats.NewMsg("deadletter.acme.invalid_field")
	out.Header.Set("Deadletter-Subject", "tenant.acme.shop."+strings.Repeat("é", 2000))
	out.Header.Set("Correlation-Id", strings.Repeat("x", 5000))
	out.Header.Set("Short", "kept")
	out.Data = make([]byte, 64<<10)
	fitDeadLetter(out, 32<<10)
	require.Equal(t, "Correlation-Id,Deadletter-Subject", out.Header.Get("Deadletter-Truncated-Header"))
	for _, k := range []string{"Deadletter-Subject", "Correlation-Id"} {
		v := out.Header.Get(k)
		require.True(t, utf8.ValidString(v), "%s cut inside a character", k)
		require.LessOrEqual(t, len(v), maxDeadLetterHeader+len("…"))
	}
	require.Equal(t, "kept", out.Header.Get("Short"))
	require.Equal(t, "65536", out.Header.Get("Deadletter-Truncated"))
	size := len(out.Subject) + len(out.Data)
	for k, vs := range out.Header {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	require.Less(t, size, 32<<10)
}
