package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cache answers the collector's question for every new row, "how many days
// is this kept?", from each tenant's policies and active holds (tenant,
// subject and time-range), so a row is stored with the right retention and
// no rewrite has to fix it later.
//
// A running Cache (Run) is one writer of the coordination bucket: it
// reloads as soon as a change of policies or holds is announced (and every
// refresh interval), and reports the epoch it loaded, so a change rewrites
// stored rows only after every writer writes with it (see coord.go).
type Cache struct {
	svc *Service
	// id names this writer in the bucket.
	id string

	mu      sync.RWMutex
	tenants map[string]tenantRetention
	refresh time.Duration // set by Run: this writer reports
	loads   sync.Mutex    // one load at a time
}

// tenantRetention is what applies to one tenant's new rows.
type tenantRetention struct {
	days     map[string]uint16 // policy per signal
	all      bool              // a tenant hold
	subjects map[string]bool   // subject holds
	ranges   [][2]time.Time    // time-range holds, [from, to)
}

// NewCache loads the current policies and holds.
func (s *Service) NewCache(ctx context.Context) (*Cache, error) {
	c := &Cache{svc: s, id: newID("w_"), tenants: map[string]tenantRetention{}}
	return c, c.Load(ctx)
}

// Load reads every tenant's policies and holds. A running Cache then
// reports the epoch it read before loading.
func (c *Cache) Load(ctx context.Context) error {
	c.loads.Lock()
	defer c.loads.Unlock()
	kv, err := c.svc.coord.bucket(ctx)
	if err != nil {
		return err
	}
	var e uint64
	if kv != nil {
		if e, err = epoch(ctx, kv); err != nil {
			return err
		}
	}
	tenants := map[string]tenantRetention{}
	for _, t := range c.svc.cfg.Tenants {
		pols, err := c.svc.Policies(ctx, t.ID)
		if err != nil {
			return err
		}
		holds, err := c.svc.Holds(ctx, t.ID)
		if err != nil {
			return err
		}
		tr := tenantRetention{days: map[string]uint16{}, subjects: map[string]bool{}}
		for sig, p := range pols {
			tr.days[sig] = uint16(p.Days)
		}
		for _, h := range holds {
			if !h.Active() {
				continue
			}
			switch h.Kind {
			case "tenant":
				tr.all = true
			case "subject":
				tr.subjects[h.Subject] = true
			case "time_range":
				if h.From != nil && h.To != nil {
					tr.ranges = append(tr.ranges, [2]time.Time{*h.From, *h.To})
				}
			}
		}
		tenants[t.ID] = tr
	}
	c.mu.Lock()
	c.tenants = tenants
	refresh := c.refresh
	c.mu.Unlock()
	if kv == nil || refresh == 0 {
		return nil
	}
	body, err := json.Marshal(writerReport{Epoch: e, Refresh: refresh, Owner: c.svc.owner})
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, writerKeys+c.id, body); err != nil {
		return fmt.Errorf("report the retention epoch: %w", err)
	}
	return nil
}

// Days is the retention a new row of tenant's signal gets: held (HeldDays)
// when an active hold covers it, else the tenant's policy (the platform
// default when unknown). at is the row's time; field gives the row's
// values by identifier column (actor, entity, payload, attributes.<key>),
// and may be nil when the row has none.
func (c *Cache) Days(tenant, signal string, at time.Time, field func(name string) string) uint16 {
	c.mu.RLock()
	tr, ok := c.tenants[tenant]
	c.mu.RUnlock()
	if !ok {
		return uint16(c.svc.cfg.Retention.Defaults[signal])
	}
	if tr.all {
		return HeldDays
	}
	for _, r := range tr.ranges {
		if !at.Before(r[0]) && at.Before(r[1]) {
			return HeldDays
		}
	}
	if len(tr.subjects) > 0 && field != nil {
		var payload map[string]any // parsed once, when an identifier needs it
		for _, id := range c.svc.cfg.Retention.Identifiers[signal] {
			var v string
			if path, ok := strings.CutPrefix(id, "payload."); ok {
				if payload == nil {
					payload = map[string]any{}
					_ = json.Unmarshal([]byte(field("payload")), &payload) //nolint:errcheck // not JSON: no value, as JSONExtractString
				}
				v = jsonString(payload, strings.Split(path, "."))
			} else {
				v = field(id)
			}
			if v != "" && tr.subjects[v] {
				return HeldDays
			}
		}
	}
	if d, ok := tr.days[signal]; ok {
		return d
	}
	return uint16(c.svc.cfg.Retention.Defaults[signal])
}

// jsonString is JSONExtractString(payload, path...): the string at path,
// or "" when there is none or it is not a string.
func jsonString(obj map[string]any, path []string) string {
	var v any = obj
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

// Run keeps the cache current until ctx ends: it reloads when a change is
// announced and every refresh interval, and reports each load as a writer.
// On its way out it withdraws its report, so no change waits for it.
func (c *Cache) Run(ctx context.Context, every time.Duration) error {
	c.mu.Lock()
	c.refresh = every
	c.mu.Unlock()
	load := func() {
		if err := c.Load(ctx); err != nil && ctx.Err() == nil {
			c.svc.log.Warn().Err(err).Msg("retention policies not refreshed")
		}
	}
	var changes <-chan jetstream.KeyValueEntry
	kv, err := c.svc.coord.bucket(ctx)
	if err != nil {
		c.svc.log.Warn().Err(err).Msg("retention changes are picked up every refresh only")
	}
	if kv != nil {
		w, err := kv.Watch(ctx, epochKey, jetstream.UpdatesOnly())
		if err != nil {
			c.svc.log.Warn().Err(err).Msg("retention changes are picked up every refresh only")
		} else {
			defer func() { _ = w.Stop() }() //nolint:errcheck // stopping
			changes = w.Updates()
		}
		defer func() {
			if err := kv.Delete(context.WithoutCancel(ctx), writerKeys+c.id); err != nil {
				c.svc.log.Warn().Err(err).Msg("retention writer report not withdrawn; it goes stale")
			}
		}()
	}
	load() // report at once
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			load()
		case e, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			if e != nil {
				load()
			}
		}
	}
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
