package metering

import (
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

func TestSplitAddsUpExactly(t *testing.T) {
	d := decimal.RequireFromString
	for _, c := range []struct {
		total   string
		weights []string
		want    []string
	}{
		{"10", []string{"1", "1", "1"}, []string{"3.3334", "3.3333", "3.3333"}},
		{"30", []string{"333", "217"}, []string{"18.1636", "11.8364"}},
		{"0.0002", []string{"1", "1", "1"}, []string{"0.0001", "0.0001", "0"}},
		{"1", []string{"1", "2", "0"}, []string{"0.3333", "0.6667", "0"}},
		{"5", []string{"0", "0"}, []string{"0", "0"}},
	} {
		var ws []decimal.Decimal
		for _, w := range c.weights {
			ws = append(ws, d(w))
		}
		got := split(d(c.total), ws)
		sum := decimal.Zero
		for i, g := range got {
			require.True(t, d(c.want[i]).Equal(g), "%s by %v: share %d is %s, want %s", c.total, c.weights, i, g, c.want[i])
			sum = sum.Add(g)
		}
		if c.weights[0] != "0" {
			require.True(t, sum.Equal(d(c.total)), "%s by %v adds up to %s", c.total, c.weights, sum)
		}
	}
}
