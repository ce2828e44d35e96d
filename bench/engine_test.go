package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunEngine runs the engine benchmark at a small size and checks that
// every number in its table was measured.
func TestRunEngine(t *testing.T) {
	var progress bytes.Buffer
	res, err := RunEngine(context.Background(), EngineConfig{Dir: t.TempDir(), Rows: 2000, Rounds: 2, Clients: 2, QueryFor: 300 * time.Millisecond}, &progress)
	require.NoError(t, err)
	require.Positive(t, res.HTTPSendRowsPerSec)
	require.Positive(t, res.InProcRowsPerSec)
	require.Positive(t, res.SmallQueriesPerSec)
	require.Positive(t, res.SmallInProcPerSec)
	require.Positive(t, res.RSSAfterStartMiB)
	require.Contains(t, progress.String(), "round 2/2")
	var table bytes.Buffer
	res.Table(&table)
	require.Equal(t, 12, strings.Count(table.String(), "\n"), table.String())
}

// BenchmarkEngineInsert reports rows/s of one 100k-row batch through the HTTP
// interface and through the in-process streaming insert, in one run.
func BenchmarkEngineInsert(b *testing.B) {
	res, err := RunEngine(context.Background(), EngineConfig{Dir: b.TempDir(), Rounds: b.N, QueryFor: time.Second}, &bytes.Buffer{})
	require.NoError(b, err)
	b.ReportMetric(res.HTTPSendRowsPerSec, "http-rows/s")
	b.ReportMetric(res.InProcRowsPerSec, "inproc-rows/s")
	b.ReportMetric(res.Ratio, "http/inproc")
	b.ReportMetric(res.ScanSeconds*1000, "scan-ms")
	b.ReportMetric(res.RSSAfterStartMiB, "rss-start-MiB")
}

// TestPayloadIsUnchanged holds bench ingest's payload to the fmt version it
// replaced, so numbers before and after compare the same events.
func TestPayloadIsUnchanged(t *testing.T) {
	sent := time.Date(2026, 11, 30, 5, 4, 3, 120456789, time.UTC)
	for _, i := range []int{0, 1, 9, 10, 99, 100, 996, 997, 9999, 10000, 123456, 50_000_000} {
		want := fmt.Appendf(nil, `{"time":%q,"actor":{"id":"user-%d","type":"user"},"entity":"order-%d","amount":%d.%02d,"currency":"EUR","items":[{"sku":"A-%d","qty":%d}],"note":"%s"}`,
			sent.Format(time.RFC3339Nano), i%997, i, i%10000, i%100, i%50, i%7+1, strings.Repeat("x", 120))
		require.Equal(t, string(want), string(payload(i, sent)), "event %d", i)
	}
	require.Len(t, payload(0, sent), 291, "the 291-byte payloads the READMEs report")
}
