// Package placement holds where tenants live now: the region a move put
// each tenant in, which tenants are paused while they move, and whether
// this process could read the moves lately. It is runtime state, kept out
// of config (a plain value): a process makes one Placement and hands it to
// every component that writes tenant data or looks up a tenant's store, so
// each of them sees a move at once.
package placement

import (
	"sync"
	"time"

	"github.com/tenantscope/tenantscope/config"
)

// Placement is where tenants live now. A region move (the retention
// engine's job, recorded in the platform store) overrides the region a
// tenant is configured with, and a tenant being moved is paused: nothing
// writes its data until the move ends. A nil *Placement has no moves:
// every tenant lives where it is configured and may always be written.
//
// Each entry carries the version of the move record it comes from: a
// reload that read the records before the move's latest save cannot undo
// what the process running the move set since.
type Placement struct {
	mu      sync.Mutex
	region  map[string]string        // tenant -> region after a move
	moving  map[string]bool          // tenants being moved
	version map[string]uint64        // tenant -> version of the move record behind its entry
	locks   map[string]*sync.RWMutex // writers of a tenant's data hold it for reading
	// maxStale, when set, makes Write refuse every tenant while the last
	// successful reload (Loaded) is older: a process that cannot read the
	// moves stops writing rather than write into a region being left.
	maxStale time.Duration
	loaded   time.Time
}

// New is a placement with no moves.
func New() *Placement {
	return &Placement{region: map[string]string{}, moving: map[string]bool{}, version: map[string]uint64{}, locks: map[string]*sync.RWMutex{}}
}

// FailClosedAfter makes Write refuse while the placement has not been
// reloaded (Loaded) for longer than d, counting from now.
func (p *Placement) FailClosedAfter(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxStale, p.loaded = d, time.Now()
}

// Loaded records a successful reload of the moves.
func (p *Placement) Loaded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loaded = time.Now()
}

// blocked reports whether tenant's data may not be written now: it is
// being moved, or the placement is stale.
func (p *Placement) blocked(tenant string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.moving[tenant] || p.staleLocked()
}

// Stale reports whether the placement has not been reloaded for longer
// than FailClosedAfter allows: Write refuses every tenant, because the
// platform store (where the moves are recorded) cannot be read, not because
// of a move.
func (p *Placement) Stale() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.staleLocked()
}

func (p *Placement) staleLocked() bool { return p.maxStale > 0 && time.Since(p.loaded) > p.maxStale }

func (p *Placement) lock(tenant string) *sync.RWMutex {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.locks[tenant]
	if l == nil {
		l = &sync.RWMutex{}
		p.locks[tenant] = l
	}
	return l
}

// Moved returns the region a move put tenant in, if any.
func (p *Placement) Moved(tenant string) (string, bool) {
	if p == nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.region[tenant]
	return r, ok
}

// Moving reports whether tenant is being moved.
func (p *Placement) Moving(tenant string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.moving[tenant]
}

// Write is called before writing tenant's data: ok is false while the
// tenant is being moved, or while the placement is stale (the caller leaves
// the data for later); otherwise release must be called when the write is
// done, and a move waits for it. Do not call it again for the same tenant
// before releasing: a pending pause would block the second call.
func (p *Placement) Write(tenant string) (release func(), ok bool) {
	if p == nil {
		return func() {}, true
	}
	l := p.lock(tenant)
	l.RLock()
	if p.blocked(tenant) {
		l.RUnlock()
		return nil, false
	}
	return l.RUnlock, true
}

// WriteAll is Write for several tenants at once: blocked names a tenant
// being moved (and nothing is held); otherwise release ends every write.
func (p *Placement) WriteAll(tenants []string) (release func(), blocked string) {
	var held []func()
	release = func() {
		for _, r := range held {
			r()
		}
	}
	for _, t := range tenants {
		r, ok := p.Write(t)
		if !ok {
			release()
			return nil, t
		}
		held = append(held, r)
	}
	return release, ""
}

// Pause marks tenant as being moved (by the move record of this version),
// after the writes in progress in this process end.
func (p *Placement) Pause(tenant string, version uint64) {
	l := p.lock(tenant)
	l.Lock()
	defer l.Unlock()
	p.Set(tenant, "", true, version)
}

// Set records what the move record of this version says: where tenant
// lives (region, when not empty) and whether it is being moved. A record
// older than the one behind the tenant's entry changes nothing.
func (p *Placement) Set(tenant, region string, moving bool, version uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if version < p.version[tenant] {
		return
	}
	p.version[tenant] = version
	if region != "" {
		p.region[tenant] = region
	}
	if moving {
		p.moving[tenant] = true
	} else {
		delete(p.moving, tenant)
	}
}

// TenantRegion is the name of the region tenant t lives in: where a move put
// it, else its configured region.
func (p *Placement) TenantRegion(t config.Tenant) string {
	if r, ok := p.Moved(t.ID); ok {
		return r
	}
	return t.Region
}

// RegionOf returns a tenant's region as cfg.RegionOf does, after the moves:
// the platform chain's is the first region, a configured tenant's is where
// a move put it, else its configured one.
func (p *Placement) RegionOf(cfg config.Config, tenant string) (config.Region, bool) {
	for _, t := range cfg.Tenants {
		if t.ID == tenant {
			return cfg.Region(p.TenantRegion(t))
		}
	}
	return cfg.RegionOf(tenant)
}
