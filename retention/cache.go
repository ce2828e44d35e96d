package retention

import (
	"context"
	"sync"
	"time"
)

// Cache answers the collector's question for every new row, "how many days
// is this kept?", from the policies and tenant-wide holds, refreshed every
// refresh (rows of subject and time-range holds are marked by purge runs).
type Cache struct {
	svc  *Service
	mu   sync.RWMutex
	days map[[2]string]uint16
}

// NewCache loads the current policies.
func (s *Service) NewCache(ctx context.Context) (*Cache, error) {
	c := &Cache{svc: s, days: map[[2]string]uint16{}}
	return c, c.Load(ctx)
}

// Load reads every tenant's policies and holds.
func (c *Cache) Load(ctx context.Context) error {
	days := map[[2]string]uint16{}
	for _, t := range c.svc.cfg.Tenants {
		pols, err := c.svc.Policies(ctx, t.ID)
		if err != nil {
			return err
		}
		holds, err := c.svc.Holds(ctx, t.ID)
		if err != nil {
			return err
		}
		held := false
		for _, h := range holds {
			held = held || (h.Active() && h.Kind == "tenant")
		}
		for sig, p := range pols {
			days[[2]string{t.ID, sig}] = uint16(p.Days)
			if held {
				days[[2]string{t.ID, sig}] = HeldDays
			}
		}
	}
	c.mu.Lock()
	c.days = days
	c.mu.Unlock()
	return nil
}

// Days is the retention a new row of tenant's signal gets (the platform
// default when unknown).
func (c *Cache) Days(tenant, signal string) uint16 {
	c.mu.RLock()
	d, ok := c.days[[2]string{tenant, signal}]
	c.mu.RUnlock()
	if !ok {
		return uint16(c.svc.cfg.Retention.Defaults[signal])
	}
	return d
}

// Run refreshes until ctx ends.
func (c *Cache) Run(ctx context.Context, every time.Duration) error {
	c.svc.reload(ctx, every, c.Load, "retention policies not refreshed")
	return nil
}

// reload runs load every interval until ctx ends, logging its failures.
func (s *Service) reload(ctx context.Context, every time.Duration, load func(context.Context) error, failed string) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := load(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg(failed)
			}
		}
	}
}
