package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/bench"
	"github.com/tenantscope/tenantscope/config"
)

// TestBenchSDKThroughServe runs 'bench sdk' at a small size against a real
// serve child (this test binary, run as the command) and checks that every
// number in its table was measured: events stored once each (RunSDK
// counts them with FINAL), carried in batch messages, serve's CPU, memory,
// Go memory limit and collections read from it, and its heap profile at
// the peak taken from its metrics listener.
func TestBenchSDKThroughServe(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	var progress bytes.Buffer
	dir := t.TempDir()
	heap := filepath.Join(dir, "heap.pprof")
	res, err := bench.RunSDK(context.Background(), bench.SDKConfig{Dir: dir, Tenants: 2, Events: 3000, Binary: exe, HeapProfile: heap,
		ServeEnv: []string{asBinary + "=1", "GOMEMLIMIT=300MiB"}}, &progress)
	require.NoError(t, err, progress.String())
	require.Positive(t, res.EventsPerSec)
	require.Positive(t, res.Messages)
	require.Less(t, res.Messages, uint64(2*3000), "the SDK batches events: fewer messages than events")
	require.Positive(t, res.CPUPerEvent)
	require.Positive(t, res.RSSStartMiB)
	require.GreaterOrEqual(t, res.PeakRSSMiB, res.RSSStartMiB)
	require.Positive(t, res.HeapPeakMiB)
	require.InDelta(t, 300, res.GoLimitMiB, 0.5, "serve's Go memory limit is read from it: GOMEMLIMIT wins")
	require.Equal(t, float64(config.DefaultGoGCPercent), res.GCPercent, "serve applies memory.go_gc_percent's default")
	var table bytes.Buffer
	res.Table(&table)
	require.Equal(t, 11, strings.Count(table.String(), "\n"), table.String())
	require.Contains(t, table.String(), "300 MiB")
	profile, err := os.ReadFile(heap)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(profile, []byte{0x1f, 0x8b}), "serve's heap profile at its peak, gzipped protobuf")

	// The other way round: GOGC wins, memory.go_limit's default applies
	// (its base and 4 MiB for each of the 2 tenants).
	res, err = bench.RunSDK(context.Background(), bench.SDKConfig{Dir: t.TempDir(), Tenants: 2, Events: 500, Binary: exe,
		ServeEnv: []string{asBinary + "=1", "GOGC=120"}}, &progress)
	require.NoError(t, err, progress.String())
	require.Equal(t, float64(120), res.GCPercent, "GOGC wins")
	require.InDelta(t, float64(config.DefaultGoMemoryBase+2*config.DefaultGoMemoryPerTenant)/(1<<20), res.GoLimitMiB, 0.5, "serve applies memory.go_limit's default")
}
