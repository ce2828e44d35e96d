package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Coordination between the processes of one suite, in a JetStream
// key-value bucket of the suite's own account (tenants cannot reach it):
//
//   - "epoch": every change of a policy or a hold puts it; its revision is the
//     change's epoch. A writer (a collector's Cache) reads the epoch before it
//     loads the policies and holds, and reports it as "writer.<id>" after: a
//     writer that reports epoch >= E has loaded everything committed before E.
//     A rewrite of stored rows waits until every live writer has (WaitWriters).
//   - "lock.<tenant>": one retention change of a tenant at a time, across
//     processes (policy changes, holds, purges, erasures). Two rewrites of
//     the same rows at once (a stale purge towards 60 days, a fresh one
//     towards 90) could each delete the other's copies.
//
// Without JetStream (a Service built with no js) there is one process, and
// both are local.
const (
	coordBucket = "TENANTSCOPE_RETENTION"
	epochKey    = "epoch"
	writerKeys  = "writer."
	lockKeys    = "lock."
)

// Lock and writer timings.
var (
	// lockStale is how long a tenant lock lives without its holder's
	// heartbeat (a stopped process), before another process takes it over.
	lockStale = 30 * time.Second
	// writerStale: a writer that has not reported for this long (or three of
	// its refresh intervals, when longer) has stopped and is not waited for.
	writerStale = 30 * time.Second
)

// coord is a Service's handle on the bucket and its in-process locks.
type coord struct {
	js    jetstream.JetStream
	mu    sync.Mutex
	kv    jetstream.KeyValue
	local map[string]*sync.Mutex // tenant -> this Service's lock of it
}

// bucket opens (creating when needed) the coordination bucket; nil without
// JetStream.
func (c *coord) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if c.js == nil {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: coordBucket, History: 1,
		Description: "tenantscope retention: policy epochs, writers, tenant locks", Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("retention coordination bucket: %w", err)
	}
	c.kv = kv
	return kv, nil
}

func (c *coord) localLock(tenant string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local == nil {
		c.local = map[string]*sync.Mutex{}
	}
	l := c.local[tenant]
	if l == nil {
		l = &sync.Mutex{}
		c.local[tenant] = l
	}
	return l
}

type lockValue struct {
	Owner string    `json:"owner"`
	What  string    `json:"what"`
	Since time.Time `json:"since"`
}

// owner names this process in locks (a label, not a key).
func owner() string {
	host, _ := os.Hostname() //nolint:errcheck // only a label
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// exclusive runs fn while it holds tenant's retention lock: in this
// Service, and across processes through the bucket. It waits for another
// holder at most until ctx ends or wait passes (then ErrConflict).
func (s *Service) exclusive(ctx context.Context, tenant, what string, fn func() error) error {
	if _, err := s.StoreOf(tenant); err != nil {
		return err // also keeps names that are no tenant out of the bucket's keys
	}
	l := s.coord.localLock(tenant)
	l.Lock()
	defer l.Unlock()
	kv, err := s.coord.bucket(ctx)
	if err != nil {
		return err
	}
	if kv == nil {
		return fn()
	}
	key := lockKeys + tenant
	val, err := json.Marshal(lockValue{Owner: s.owner, What: what, Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	rev, err := acquire(ctx, kv, key, val, s.LockWait)
	if err != nil {
		return fmt.Errorf("%w: tenant %s: %w", ErrConflict, tenant, err)
	}
	// The heartbeat keeps the lock from looking stale; it ends before the
	// lock is released.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(lockStale / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r, err := kv.Update(context.WithoutCancel(ctx), key, val, rev)
				if err != nil {
					s.log.Error().Err(err).Str("tenant_id", tenant).Msg("retention lock heartbeat failed; another process may take the lock")
					continue
				}
				rev = r // read by the release below, after wg.Wait
			}
		}
	})
	defer func() {
		close(done)
		wg.Wait()
		if err := kv.Delete(context.WithoutCancel(ctx), key, jetstream.LastRevision(rev)); err != nil {
			s.log.Warn().Err(err).Str("tenant_id", tenant).Msg("retention lock not released; it expires")
		}
	}()
	return fn()
}

// acquire creates key (the lock), waiting while another live holder has it
// and taking it over from a holder whose heartbeat stopped.
func acquire(ctx context.Context, kv jetstream.KeyValue, key string, val []byte, wait time.Duration) (uint64, error) {
	deadline := time.Now().Add(wait)
	for {
		rev, err := kv.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("retention lock: %w", err)
		}
		e, gerr := kv.Get(ctx, key)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			continue // released meanwhile
		case gerr != nil:
			return 0, fmt.Errorf("retention lock: %w", gerr)
		case time.Since(e.Created()) > lockStale:
			if rev, err := kv.Update(ctx, key, val, e.Revision()); err == nil {
				return rev, nil
			}
			continue
		}
		if time.Now().After(deadline) {
			var v lockValue
			_ = json.Unmarshal(e.Value(), &v) //nolint:errcheck // only for the message
			return 0, fmt.Errorf("another retention change (%s by %s since %s) is still running", v.What, v.Owner, v.Since.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writerReport is what a writer puts under writer.<id>.
type writerReport struct {
	Epoch   uint64        `json:"epoch"`
	Refresh time.Duration `json:"refresh"`
	Owner   string        `json:"owner"`
}

// epoch reads the current epoch (0 when none was announced).
func epoch(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	e, err := kv.Get(ctx, epochKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("retention epoch: %w", err)
	}
	return e.Revision(), nil
}

// propagate announces a committed change of tenant's policies or holds and
// waits until every live writer has loaded it, then InsertMargin for the
// batches those writers decoded before to reach the store (the rewrite that
// follows reads its cutoff after, and waits InsertMargin again for them to
// be visible). It returns the
// writers that did not confirm within WriterWait: rows they write with the
// old retention are left for the next purge run, never deleted.
func (s *Service) propagate(ctx context.Context, tenant string) ([]string, error) {
	kv, err := s.coord.bucket(ctx)
	if err != nil || kv == nil {
		return nil, err
	}
	e, err := kv.PutString(ctx, epochKey, tenant)
	if err != nil {
		return nil, fmt.Errorf("announce a retention change: %w", err)
	}
	late, err := waitWriters(ctx, kv, e, s.WriterWait)
	if err != nil {
		return nil, err
	}
	if len(late) > 0 {
		s.log.Warn().Str("tenant_id", tenant).Strs("writers", late).Msg("writers did not confirm a retention change in time; their rows are fixed by the next purge run")
	}
	return late, sleep(ctx, s.InsertMargin)
}

// waitWriters waits until every live writer reports an epoch >= e, at most
// for wait; it returns the writers still behind then.
func waitWriters(ctx context.Context, kv jetstream.KeyValue, e uint64, wait time.Duration) ([]string, error) {
	deadline := time.Now().Add(wait)
	for {
		behind, err := writersBehind(ctx, kv, e)
		if err != nil || len(behind) == 0 || time.Now().After(deadline) {
			return behind, err
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return behind, err
		}
	}
}

func writersBehind(ctx context.Context, kv jetstream.KeyValue, e uint64) ([]string, error) {
	w, err := kv.Watch(ctx, writerKeys+">", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("retention writers: %w", err)
	}
	defer func() { _ = w.Stop() }() //nolint:errcheck // read to the end
	var behind []string
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case entry, ok := <-w.Updates():
			if !ok || entry == nil { // the current values end with nil
				slices.Sort(behind)
				return behind, nil
			}
			var r writerReport
			if err := json.Unmarshal(entry.Value(), &r); err != nil {
				continue
			}
			if time.Since(entry.Created()) > max(writerStale, 3*r.Refresh) {
				continue // stopped without saying so
			}
			if r.Epoch < e {
				behind = append(behind, entry.Key()[len(writerKeys):])
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
