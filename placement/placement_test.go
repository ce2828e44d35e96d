package placement

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

// A move's pause waits for the writes in progress, then refuses new ones;
// WriteAll holds nothing when one tenant is paused; ending the move lets
// writers in again; a tenant's region follows its moves, while the
// configuration keeps saying where it is configured.
func TestPlacementPauseWaitsForWrites(t *testing.T) {
	cfg := config.Default()
	cfg.Tenants = []config.Tenant{{ID: "a", Region: "eu"}, {ID: "b", Region: "eu"}}
	cfg.Regions = []config.Region{{Name: "eu", Database: "eu"}, {Name: "us", Database: "us"}}
	p := New()
	release, ok := p.Write("a")
	require.True(t, ok)
	var paused atomic.Bool
	go func() {
		p.Pause("a", 1)
		paused.Store(true)
	}()
	require.Never(t, paused.Load, 200*time.Millisecond, 10*time.Millisecond, "the pause waits for the write in progress")
	release()
	require.Eventually(t, paused.Load, 5*time.Second, 5*time.Millisecond)
	_, ok = p.Write("a")
	require.False(t, ok)
	_, blocked := p.WriteAll([]string{"b", "a"})
	require.Equal(t, "a", blocked)
	p.Pause("b", 2) // returns at once: WriteAll released b
	p.Set("b", "", false, 3)

	p.Set("a", "us", false, 4)
	r, _ := p.RegionOf(cfg, "a")
	require.Equal(t, "us", r.Name, "the placement follows the move")
	r, _ = cfg.RegionOf("a")
	require.Equal(t, "eu", r.Name, "the configuration is a plain value")
	release, ok = p.Write("a")
	require.True(t, ok)
	release()
	r, _ = p.RegionOf(cfg, "b")
	require.Equal(t, "eu", r.Name)
	r, _ = p.RegionOf(cfg, config.PlatformTenant)
	require.Equal(t, "eu", r.Name, "the platform chain lives in the first region")
	_, ok = p.RegionOf(cfg, "nobody")
	require.False(t, ok)

	// A reload that read the moves before the latest save changes nothing.
	p.Set("a", "eu", true, 3)
	require.False(t, p.Moving("a"))
	r, _ = p.RegionOf(cfg, "a")
	require.Equal(t, "us", r.Name)

	// A process that cannot reload its placement stops writing.
	p.FailClosedAfter(time.Millisecond)
	require.Eventually(t, func() bool { _, ok := p.Write("b"); return !ok }, time.Second, time.Millisecond)
	p.Loaded()
	p.FailClosedAfter(time.Hour)
	release, ok = p.Write("b")
	require.True(t, ok)
	release()
}

// A nil placement has no moves: every tenant is where it is configured and
// may be written.
func TestNilPlacementHasNoMoves(t *testing.T) {
	cfg := config.Default()
	cfg.Tenants = []config.Tenant{{ID: "a", Region: "default"}}
	var p *Placement
	r, ok := p.RegionOf(cfg, "a")
	require.True(t, ok)
	require.Equal(t, "default", r.Name)
	release, ok := p.Write("a")
	require.True(t, ok)
	release()
	require.False(t, p.Moving("a"))
	require.False(t, p.Stale())
}
