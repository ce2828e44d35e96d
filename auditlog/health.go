package auditlog

import (
	"sync"
	"time"
)

// Health is the last verification result of one tenant's chain.
type Health struct {
	Tenant    string
	OK        bool
	Records   uint64
	Signed    uint64
	Problem   string
	CheckedAt time.Time
}

// HealthBoard keeps the latest Health per tenant; the scheduled verification
// writes it, the UI reads it.
type HealthBoard struct {
	mu sync.RWMutex
	m  map[string]Health
}

// NewHealthBoard returns an empty board.
func NewHealthBoard() *HealthBoard { return &HealthBoard{m: map[string]Health{}} }

// Set records a report.
func (b *HealthBoard) Set(rep Report, at time.Time) {
	h := Health{Tenant: rep.Tenant, OK: rep.OK(), Records: rep.Records, Signed: rep.Signed, CheckedAt: at}
	if rep.Problem != nil {
		h.Problem = rep.Problem.String()
	}
	b.mu.Lock()
	b.m[rep.Tenant] = h
	b.mu.Unlock()
}

// Get returns a tenant's latest health, if verified yet.
func (b *HealthBoard) Get(tenant string) (Health, bool) {
	if b == nil {
		return Health{}, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	h, ok := b.m[tenant]
	return h, ok
}
