package bench

import (
	"bytes"
	"context"
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
