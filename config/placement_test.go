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
		p.Pause("a")
		paused.Store(true)
	}()
	require.Never(t, paused.Load, 200*time.Millisecond, 10*time.Millisecond, "the pause waits for the write in progress")
	release()
	require.Eventually(t, paused.Load, 5*time.Second, 5*time.Millisecond)
	_, ok = p.Write("a")
	require.False(t, ok)
	_, blocked := p.WriteAll([]string{"b", "a"})
	require.Equal(t, "a", blocked)
	p.Pause("b") // returns at once: WriteAll released b
	p.Set("b", "", false)

	copied := cfg
	p.Set("a", "us", false)
	r, _ := copied.RegionOf("a")
	require.Equal(t, "us", r.Name, "a copy sees the move")
	release, ok = copied.Placement().Write("a")
	require.True(t, ok)
	release()
	r, _ = cfg.RegionOf("b")
	require.Equal(t, "eu", r.Name)
}
