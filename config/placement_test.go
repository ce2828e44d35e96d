package config

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A move's pause waits for the writes in progress, then refuses new ones;
// WriteAll holds nothing when one tenant is paused; ending the move lets
// writers in again; copies of a Config share the placement.
func TestPlacementPauseWaitsForWrites(t *testing.T) {
	cfg := Default()
	cfg.Tenants = []Tenant{{ID: "a", Region: "eu"}, {ID: "b", Region: "eu"}}
	cfg.Regions = []Region{{Name: "eu", Database: "eu"}, {Name: "us", Database: "us"}}
	p := cfg.Placement()
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

	copied := cfg
	p.Set("a", "us", false, 4)
	r, _ := copied.RegionOf("a")
	require.Equal(t, "us", r.Name, "a copy sees the move")
	release, ok = copied.Placement().Write("a")
	require.True(t, ok)
	release()
	r, _ = cfg.RegionOf("b")
	require.Equal(t, "eu", r.Name)

	// A reload that read the moves before the latest save changes nothing.
	p.Set("a", "eu", true, 3)
	require.False(t, p.Moving("a"))
	r, _ = cfg.RegionOf("a")
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
