package auditlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// One audit writer at a time. Two writers would hand out the same sequence
// numbers (each keeps the chain heads in memory), and the table, keyed on
// (tenant, seq), would keep one record of each pair. So a writer chains only
// while it holds a lease: a key in a NATS KV bucket whose entries expire
// LeaseTTL after their last update. The holder renews it every TTL/4 with a
// compare-and-set on the revision it wrote; another process can create the
// key only after it expired. A holder trusts its lease only until half the
// TTL after its last successful renewal began, and bounds every append by
// that deadline, so it has stopped chaining well before anyone else can take
// over; a holder that regains the lease reloads the chain heads from the
// store (another writer may have appended meanwhile).

// LeaseBucket is the KV bucket of the audit writer's lease.
const (
	LeaseBucket = "TENANTSCOPE_AUDIT_WRITER"
	leaseKey    = "writer"
)

// ErrNotWriter is returned by Append when this process does not hold the
// writer's lease.
var ErrNotWriter = errors.New("audit: this process does not hold the audit writer's lease")

// Lease is this process's claim to be the one audit writer.
type Lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	log    zerolog.Logger
	// OnChange, when set, is called with true when the lease is gained and
	// false when it is lost (for metrics).
	OnChange func(held bool)

	mu    sync.Mutex
	rev   uint64
	until time.Time // the lease is trusted before this instant
	epoch uint64    // incremented at every acquisition
}

// NewLease opens (creating it if needed) the lease bucket; holder names this
// process in the key (host, pid), ttl is how long a silent holder keeps it.
func NewLease(ctx context.Context, js jetstream.JetStream, holder string, ttl time.Duration, replicas int, log zerolog.Logger) (*Lease, error) {
	if ttl < time.Second {
		return nil, fmt.Errorf("audit lease: ttl %s is below 1s", ttl)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "the audit writer's lease: only its holder assigns sequence numbers",
		TTL:         ttl,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("audit lease bucket: %w", err)
	}
	return &Lease{kv: kv, holder: holder, ttl: ttl, log: log}, nil
}

// Held reports whether this process may chain now, and the deadline and
// epoch of its lease.
func (l *Lease) Held() (until time.Time, epoch uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until, l.epoch, time.Now().Before(l.until)
}

// Run tries to take the lease and keeps renewing it until ctx ends; then it
// gives the lease up so another writer takes over at once.
func (l *Lease) Run(ctx context.Context) error {
	tick := time.NewTicker(l.ttl / 4)
	defer tick.Stop()
	for {
		l.step(ctx)
		select {
		case <-ctx.Done():
			l.release()
			return nil
		case <-tick.C:
		}
	}
}

func (l *Lease) step(ctx context.Context) {
	start := time.Now()
	l.mu.Lock()
	rev, held := l.rev, start.Before(l.until)
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, l.ttl/4)
	defer cancel()
	var err error
	if held {
		rev, err = l.kv.Update(cctx, leaseKey, []byte(l.holder), rev)
	} else {
		rev, err = l.kv.Create(cctx, leaseKey, []byte(l.holder))
	}
	if err != nil {
		if held {
			l.lose(err)
		}
		return
	}
	l.mu.Lock()
	l.rev, l.until = rev, start.Add(l.ttl/2)
	if !held {
		l.epoch++
	}
	l.mu.Unlock()
	if !held {
		l.log.Info().Str("holder", l.holder).Msg("audit writer lease taken: this process chains the audit records")
		if l.OnChange != nil {
			l.OnChange(true)
		}
	}
}

func (l *Lease) lose(err error) {
	l.mu.Lock()
	l.until = time.Time{}
	l.mu.Unlock()
	l.log.Warn().Err(err).Str("holder", l.holder).Msg("audit writer lease lost: this process stops chaining")
	if l.OnChange != nil {
		l.OnChange(false)
	}
}

// release deletes the key this process holds, so a successor need not wait
// for it to expire.
func (l *Lease) release() {
	l.mu.Lock()
	rev, held := l.rev, time.Now().Before(l.until)
	l.until = time.Time{}
	l.mu.Unlock()
	if !held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev)); err != nil {
		l.log.Warn().Err(err).Msg("audit writer lease: release (it expires on its own)")
		return
	}
	if l.OnChange != nil {
		l.OnChange(false)
	}
}

// LeaseHolder names the process holding the audit writer's lease, "" when
// none does (or the bucket does not exist yet), for processes that are not
// writers themselves.
func LeaseHolder(ctx context.Context, js jetstream.JetStream) (string, error) {
	kv, err := js.KeyValue(ctx, LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	e, err := kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}
