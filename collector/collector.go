// Package collector is the NATS tap: it pulls tenant-scoped messages from
// JetStream in batches, checks the tenant, decodes events, logs and spans,
// writes them to the tenant's region store with clickhouse-go batches, and
// acks only after the rows are stored. What it cannot store goes to the
// dead-letter stream with the reason; nothing is dropped silently.
package collector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/telemetry"
)

// Config tunes batching.
type Config struct {
	BatchSize  int           // messages per batch (default 10,000)
	BatchAge   time.Duration // longest wait for a batch to fill (default 250ms)
	BatchBytes int           // payload bytes per batch (default 4 MiB)
	// EventBatchBytes is BatchBytes for a batch of domain events only
	// (plain events and SDK batches; default 8 MiB): every insert makes a
	// part in events and in each usage rollup, and the engine's file
	// creation and merges dominate a burst's CPU. OTLP requests, logs and
	// audit records keep BatchBytes (8 MiB made OTLP a sixth slower).
	EventBatchBytes int
	// EventBatchRows bounds the domain events a batch holds (default
	// 65,536), counted in the messages before they are decoded: within
	// BatchBytes, SDK batch messages of tiny events would otherwise make a
	// row of every 23 bytes (about 180,000 rows, 40 MB in hand).
	EventBatchRows int
	// Retention per signal in days, written on every row (the retention
	// engine's policies replace these defaults).
	Retention map[Signal]uint16
	// RetentionFor, when set, gives a row's retention (the retention
	// engine's policies and holds: retention.Cache.Days) and replaces
	// Retention. It gets the row's time and its values by identifier
	// column (actor, entity, payload, attributes.<key>), as stored.
	RetentionFor func(tenant, signal string, at time.Time, field func(name string) string) uint16
	// ShredEvent, when set, encrypts a tenant's personal event fields before
	// they are stored (crypto-shredding); an error retries the batch. It
	// returns a new slice for a changed payload and payload itself when
	// nothing changed, and never writes into payload.
	ShredEvent func(ctx context.Context, tenant, actor string, payload []byte) ([]byte, error)
	// NakDelay is the first redelivery delay after a batch failed for
	// another reason than an unavailable store (doubles up to maxNakDelay).
	NakDelay time.Duration
	// ProbeEvery is the first wait before the store is probed again during
	// a store outage (doubles up to MaxProbeEvery; defaults 250ms and 2s).
	ProbeEvery, MaxProbeEvery time.Duration
	// PIISalts key each tenant's hashed PII (tenant id -> salt).
	PIISalts map[string]string
	// Audit chains `._audit` records. Exactly one collector process may
	// write the chains (it assigns sequence numbers); the others leave audit
	// records to it (nak with a short delay) when Audit is nil.
	Audit AuditSink
	// AfterStore, when set, runs after a batch is stored and before it is
	// acked: a fault-injection point for crash tests.
	AfterStore func()
	// StoreWorkers is how many batches are stored at once (default 2),
	// while the next one is decoded.
	StoreWorkers int
}

func (c *Config) defaults() {
	if c.BatchSize == 0 {
		// 10,000 one-event messages are about 4 MiB: the byte bound
		// (BatchBytes) and the count bound meet. At 5,000, a busy
		// collector made twice the inserts, and bench ingest's end to end
		// was about a tenth slower.
		c.BatchSize = 10_000
	}
	if c.BatchAge == 0 {
		c.BatchAge = 250 * time.Millisecond
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.EventBatchRows == 0 {
		c.EventBatchRows = 1 << 16
	}
	if c.EventBatchBytes == 0 {
		c.EventBatchBytes = 8 << 20
	}
	if c.StoreWorkers <= 0 {
		c.StoreWorkers = 2
	}
	if c.Retention == nil {
		c.Retention = map[Signal]uint16{SignalEvent: 90, SignalLog: 30, SignalSpan: 14}
	}
	if c.NakDelay == 0 {
		c.NakDelay = time.Second
	}
	if c.ProbeEvery == 0 {
		c.ProbeEvery = 250 * time.Millisecond
	}
	if c.MaxProbeEvery == 0 {
		c.MaxProbeEvery = 2 * time.Second
	}
}

// maxNakDelay caps the redelivery delay of a batch that failed while the
// stores answered (30 s kept a backlog waiting long after a failure ended).
const maxNakDelay = 5 * time.Second

// AuditSink appends records to a tenant's audit chain (auditlog.Writer).
type AuditSink interface {
	Append(ctx context.Context, tenant string, recs []auditlog.Record) ([]auditlog.Record, error)
	// Writing reports whether Append may chain now (the writer holds its
	// lease); audit records wait in the stream while it does not.
	Writing() bool
}

// Service is one collector process's worker.
type Service struct {
	cfg     Config
	js      jetstream.JetStream
	tenants map[string]config.Tenant
	quotas  map[string]config.Quota
	// eventLimits are the tenants' events_per_second limiters: the pulls
	// charge what a message says it holds, decoding what it held more.
	eventLimits map[string]*rate.Limiter
	// redactors hold each tenant's PII rules (nil: none).
	redactors map[string]*Redactor
	stores    map[string]*chstore.Store // by region
	// suite is the suite's configuration; place gives each tenant's region
	// now (after region moves) and pauses a tenant being moved.
	suite  config.Config
	place  *placement.Placement
	log    zerolog.Logger
	m      *metrics
	tracer trace.Tracer
	// auditWaiting is when (unix ns) this process last left an audit
	// record for the writer (none here, or its lease held elsewhere).
	auditWaiting atomic.Int64
	// gate stops the pulls while a store is unavailable.
	gate *gate
	// storeDown is set while a store outage is in progress.
	storeDown atomic.Bool
	// oldest is each tenant's oldest waiting message's age, as last observed.
	oldestMu sync.Mutex
	oldest   map[string]time.Duration
}

// StoreUnavailable reports whether the collector has stopped pulling
// because a store (or the placement it reads) does not answer.
func (s *Service) StoreUnavailable() bool { return s.storeDown.Load() }

// OldestWaiting is the age of the oldest message any tenant's stream holds
// for the collectors, as last observed (every 2 s), and how many tenants
// have one older than over.
func (s *Service) OldestWaiting(over time.Duration) (oldest time.Duration, tenants int) {
	s.oldestMu.Lock()
	defer s.oldestMu.Unlock()
	for _, d := range s.oldest {
		oldest = max(oldest, d)
		if d > over {
			tenants++
		}
	}
	return oldest, tenants
}

// AuditWaiting reports whether this process left an audit record to the
// writer within the last d.
func (s *Service) AuditWaiting(d time.Duration) bool {
	t := s.auditWaiting.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < d
}

// retention is the retention_days a new row gets.
func (s *Service) retention(tenant string, sig Signal, table string, at time.Time, field func(string) string) uint16 {
	if s.cfg.RetentionFor != nil {
		return s.cfg.RetentionFor(tenant, table, at, field)
	}
	return s.cfg.Retention[sig]
}

// eventField, logField and spanField give a row's values by identifier
// column, for a subject hold's match.
func eventField(actor, entity, payload string) func(string) string {
	return func(name string) string {
		switch name {
		case "actor":
			return actor
		case "entity":
			return entity
		case "payload":
			return payload
		}
		return ""
	}
}

func attributeField(attrs map[string]string) func(string) string {
	return func(name string) string {
		if k, ok := strings.CutPrefix(name, "attributes."); ok {
			return attrs[k]
		}
		return ""
	}
}

// maxLinks bounds the span links a batch span carries to its messages' traces.
const maxLinks = 128

// New wires a collector. place (nil: no moves) is where tenants live and
// which are paused while they move; stores must hold every region a tenant
// uses.
func New(cfg Config, js jetstream.JetStream, suite config.Config, place *placement.Placement, stores map[string]*chstore.Store, log zerolog.Logger, reg prometheus.Registerer, tracer trace.Tracer) (*Service, error) {
	cfg.defaults()
	var errs []error
	if js == nil {
		errs = append(errs, errors.New("collector: JetStream is required"))
	}
	tenants := map[string]config.Tenant{}
	quotas := map[string]config.Quota{}
	eventLimits := map[string]*rate.Limiter{}
	redactors := map[string]*Redactor{}
	for _, t := range suite.ChainTenants() {
		tenants[t.ID] = t
		q := suite.QuotaOf(t)
		quotas[t.ID] = q
		eventLimits[t.ID] = rate.NewLimiter(rate.Limit(q.EventsPerSecond), max(1, int(q.EventsPerSecond/10)))
		salt := t.PIISalt
		if salt == "" {
			salt = cfg.PIISalts[t.ID]
		}
		if len(t.Redact) > 0 && salt == "" {
			errs = append(errs, fmt.Errorf("collector: tenant %q has redaction rules but no PII salt", t.ID))
		}
		r, err := NewRedactor(t.Redact, salt)
		if err != nil {
			errs = append(errs, fmt.Errorf("collector: tenant %q: %w", t.ID, err))
		}
		redactors[t.ID] = r
		if r := place.TenantRegion(t); stores[r] == nil {
			errs = append(errs, fmt.Errorf("collector: no store for region %q of tenant %q", r, t.ID))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg, suite.ChainTenants(), suite.Metering.MaxServicesPerTenant)
	if err != nil {
		return nil, err
	}
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	return &Service{cfg: cfg, js: js, tenants: tenants, quotas: quotas, eventLimits: eventLimits, redactors: redactors, stores: stores, suite: suite, place: place,
		log: log.With().Str("component", "collector").Logger(), m: m, tracer: tracer, gate: newGate(), oldest: map[string]time.Duration{}}, nil
}

// Run consumes until ctx ends. Each tenant's stream is pulled by its own
// goroutine at no more than the tenant's quota (a flooding tenant is slowed,
// its backlog waits in its own stream); the pulled messages meet in one
// bounded channel and are stored in batches that close on count, bytes or
// age. The batch in hand when ctx ends is finished (stored and acked);
// messages pulled but not yet batched are nak'd, so they come back at once.
//
// A store outage (a batch fails and a store does not answer its ping, or
// the placement cannot be reloaded) stops the pulls: the messages in hand
// are nak'd at once and wait in their streams, and the stores are probed
// with a backoff doubling from ProbeEvery to MaxProbeEvery until they all
// answer; then pulling resumes.
func (s *Service) Run(ctx context.Context) error {
	// A short hand-off: the pulls' iterators hold what is prefetched
	// (bounded in bytes), so that what the collector holds in hand stays
	// within a few batches, far less than the ack wait's worth, whatever
	// the messages' sizes (BatchSize messages of 150 KB OTLP requests or
	// SDK batches were hundreds of MB, stored only after their ack wait had
	// passed and JetStream had sent them again).
	in := make(chan jetstream.Msg, handOff)
	pullCtx, stopPull := context.WithCancel(ctx)
	defer stopPull()
	var wg sync.WaitGroup
	// stopPulls ends the pulls and waits for them; what they pulled and
	// nobody batched is nak'd, so it comes back at once. Every return after
	// a pull started goes through it.
	stopPulls := func() {
		stopPull()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for {
			select {
			case m := <-in:
				_ = m.Nak() //nolint:errcheck // redelivered after AckWait if the nak is lost
			case <-done:
				for len(in) > 0 {
					_ = (<-in).Nak() //nolint:errcheck // as above
				}
				return
			}
		}
	}
	for _, t := range s.tenants {
		cons, err := s.js.Consumer(ctx, natsbus.IngestStream(t.ID), natsbus.CollectorDurable)
		if err != nil {
			if ctx.Err() != nil {
				break // stopped while starting: the pulls begun end below
			}
			stopPulls()
			return fmt.Errorf("collector: consumer of tenant %s: %w", t.ID, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pull(pullCtx, t.ID, s.quotas[t.ID], cons, in)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchBacklog(pullCtx)
	}()

	var (
		batch []jetstream.Msg
		size  int
		// due: the batch's age is up, and it waits for a store worker.
		due bool
		// items is how many domain events the batch holds; others, whether
		// it holds any other message (its bytes bound is BatchBytes then,
		// else EventBatchBytes).
		items  int
		others bool
		opened time.Time
		timer  = time.NewTimer(time.Hour)
		// The store outage in progress: since when, the next probe's wait.
		outage  time.Time
		backoff time.Duration
		probe   = time.NewTimer(time.Hour)
		probeC  <-chan time.Time
	)
	timer.Stop()
	probe.Stop()
	// The pipeline: this goroutine decodes a batch while the store stage
	// stores the one before it (inserting is mostly the engine's work), so
	// decoding and inserting overlap. The store stage reports store
	// outages back here; it pauses the pulls itself, at once.
	//
	// StoreWorkers store batches side by side (the engine inserts a block
	// on one thread). Batches with audit records all go to the first
	// worker, in order, so each chain is appended in the order decoded.
	//
	// Under load the batches grow: a batch whose age is up waits, still
	// filling (up to BatchSize and BatchBytes), while every store worker
	// is busy, and goes to the first one freed. Fewer, larger inserts cost
	// the engine less (each insert writes a part of the table and of each
	// of its views); while the store keeps up, a batch goes at BatchAge.
	work := make(chan *prepared)
	audit := make(chan *prepared)
	outages := make(chan error, 1)
	// busy counts the batches the workers hold; a worker that finishes one
	// says so on freed (a wake-up only: a full freed already has one).
	var busy atomic.Int32
	freed := make(chan struct{}, 1)
	var storing sync.WaitGroup
	for i := range s.cfg.StoreWorkers {
		own := audit
		if i > 0 {
			own = nil
		}
		storing.Add(1)
		go func() {
			defer storing.Done()
			s.storeStage(ctx, work, own, outages, func() {
				busy.Add(-1)
				select {
				case freed <- struct{}{}:
				default:
				}
			})
		}()
	}
	stopStore := func() {
		close(work)
		close(audit)
		storing.Wait()
	}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		timer.Stop()
		s.m.batchAge.Observe(time.Since(opened).Seconds())
		// Finish the batch even when ctx is cancelled meanwhile.
		p := s.prepare(context.WithoutCancel(ctx), batch)
		busy.Add(1)
		if p.hasAudit() {
			audit <- p
		} else {
			work <- p
		}
		// A new slice: the store stage holds the last one.
		batch, size, items, others, due = make([]jetstream.Msg, 0, len(batch)), 0, 0, false, false
	}
	for {
		select {
		case <-probeC:
			if err := s.storeReady(ctx); err != nil {
				backoff = min(backoff*2, s.cfg.MaxProbeEvery)
				s.log.Debug().Err(err).Dur("retry_in", backoff).Msg("store still unavailable")
				probe.Reset(backoff)
				continue
			}
			s.log.Info().Stringer("outage", time.Since(outage).Round(time.Millisecond)).Msg("store available again: pulling resumed")
			outage, probeC = time.Time{}, nil
			s.m.storeDown.Set(0)
			s.storeDown.Store(false)
			s.gate.resume()
		case err := <-outages:
			if outage.IsZero() {
				outage, backoff = time.Now(), s.cfg.ProbeEvery
				s.m.outages.Inc()
				s.log.Error().Err(err).Msg("store unavailable: pulling stopped, messages wait in their streams; probing the store")
				probe.Reset(backoff)
				probeC = probe.C
			}
		case m := <-in:
			if !outage.IsZero() {
				s.nakOutage(m) // pulled just before the pause
				continue
			}
			if len(batch) == 0 {
				timer.Reset(s.cfg.BatchAge)
				opened = time.Now()
			}
			batch = append(batch, m)
			size += len(m.Data())
			n, event := eventsIn(m)
			items += n
			others = others || !event
			bytesBound := s.cfg.EventBatchBytes
			if others {
				bytesBound = s.cfg.BatchBytes
			}
			if len(batch) >= s.cfg.BatchSize || size >= bytesBound || items >= s.cfg.EventBatchRows {
				flush()
			}
		case <-timer.C:
			if int(busy.Load()) >= s.cfg.StoreWorkers {
				due = true // every worker is storing: keep filling
				continue
			}
			flush()
		case <-freed:
			if due && int(busy.Load()) < s.cfg.StoreWorkers {
				flush()
			}
		case <-ctx.Done():
			probe.Stop()
			flush()
			stopStore()
			stopPulls()
			return nil
		}
	}
}

// storeStage stores the batches prepare decoded, in order, and acks them;
// a batch that could not be stored is handed back (nak'd): at once during
// a store outage (which it pauses the pulls for and reports on outages),
// else after a growing delay. It calls done after each batch.
func (s *Service) storeStage(ctx context.Context, work, audit <-chan *prepared, outages chan<- error, done func()) {
	failures := 0
	for work != nil || audit != nil {
		var p *prepared
		select {
		case w, ok := <-work:
			if !ok {
				work = nil
				continue
			}
			p = w
		case a, ok := <-audit:
			if !ok {
				audit = nil
				continue
			}
			p = a
		}
		err := s.commit(p)
		switch {
		case err == nil:
			failures = 0
		case s.storeUnavailable(ctx, err):
			// Stop pulling and hand the batch back: its messages wait in
			// their streams (for another collector, or for the store).
			s.gate.pause()
			s.storeDown.Store(true)
			s.m.storeDown.Set(1)
			select {
			case outages <- err:
			default: // one report is waiting already
			}
			for _, m := range p.msgs {
				s.nakOutage(m)
			}
		default:
			failures++
			delay := min(s.cfg.NakDelay<<min(failures-1, 5), maxNakDelay)
			s.log.Error().Err(err).Int("messages", len(p.msgs)).Dur("retry_in", delay).Msg("batch not stored; redelivering")
			for _, m := range p.msgs {
				_ = m.NakWithDelay(delay) //nolint:errcheck // unacked messages come back after AckWait anyway
			}
		}
		done()
	}
}

// pull feeds one tenant's messages into in, no faster than its quota. It
// stops pulling while the gate is paused (a store outage) and pulls again
// when it is resumed.
func (s *Service) pull(ctx context.Context, tenant string, q config.Quota, cons jetstream.Consumer, in chan<- jetstream.Msg) {
	events := s.eventLimits[tenant]
	burst := max(int(q.BytesPerSecond/10), 2<<20)
	bytes := rate.NewLimiter(rate.Limit(q.BytesPerSecond), burst)
	// Prefetch about a second of quota: enough to keep up, little enough to
	// be stored well within the ack wait.
	prefetch := min(max(int(q.EventsPerSecond), 16), s.cfg.BatchSize)
	if size := s.meanMessageSize(ctx, tenant); size > 0 {
		// A backlog of batches waits: do not ask for thousands of them.
		prefetch = s.prefetchFor(q, 1, size)
	}
	throttled := s.m.throttles.WithLabelValues(tenant)
	for {
		paused, resumed := s.gate.state()
		select {
		case <-ctx.Done():
			return
		case <-resumed:
		}
		// Short pull expiry: a pull request left behind by a stopped
		// collector swallows new messages (until AckWait) only for a few
		// seconds.
		it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(prefetch, s.pullBytes()), jetstream.PullExpiry(3*time.Second))
		if err != nil {
			s.log.Error().Err(err).Str("tenant_id", tenant).Msg("pull consumer")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		if next := s.pullUntil(ctx, paused, tenant, it, in, events, bytes, burst, throttled, q, prefetch); next > 0 {
			prefetch = next
		}
	}
}

// eventsIn is how many domain events a message holds, and whether it is a
// domain event message: a plain event (tenant.{t}.{service}.{action}) is
// one, an SDK event batch (._events) as many as its body holds (counted,
// not taken from its Batch-Items header); an OTLP request, a log record, a
// span or an audit record (the other reserved actions, which begin with
// '_') holds none.
func eventsIn(m jetstream.Msg) (n int, event bool) {
	subject := m.Subject()
	switch action := subject[strings.LastIndexByte(subject, '.')+1:]; {
	case action == wire.ActionEvents:
		return wire.CountEvents(m.Data()), true
	case strings.HasPrefix(action, "_"):
		return 0, false
	default:
		return 1, true
	}
}

// handOff is how many pulled messages wait for the batcher.
const handOff = 16

// pullBytes is the most a tenant's pull holds in hand: a batch's bytes, and
// at least two of the largest messages the server takes (a pull request's
// byte limit below a message's size would never deliver it).
func (s *Service) pullBytes() int {
	return max(s.cfg.BatchBytes, 2*int(s.js.Conn().MaxPayload()))
}

// meanMessageSize is the mean size of the messages a tenant's stream holds
// (0 when it holds none or does not answer).
func (s *Service) meanMessageSize(ctx context.Context, tenant string) float64 {
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := s.js.Stream(ictx, natsbus.IngestStream(tenant))
	if err != nil {
		return 0
	}
	info := st.CachedInfo()
	if info.State.Msgs == 0 {
		return 0
	}
	return float64(info.State.Bytes) / float64(info.State.Msgs)
}

// prefetchWindow is how many messages the prefetch is judged on.
const prefetchWindow = 64

// prefetchFor is how many messages of a tenant to hold in hand, given what
// its messages hold on average: about a second of its quota (items and
// bytes), and at most a batch's bytes. Batch messages (OTLP requests) hold
// hundreds of items and kilobytes each; a prefetch sized for one-event
// messages would hold minutes of quota (past the ack wait) and gigabytes.
func (s *Service) prefetchFor(q config.Quota, items, size float64) int {
	perSecond := math.Inf(1)
	if q.EventsPerSecond > 0 {
		perSecond = q.EventsPerSecond / max(items, 1)
	}
	if q.BytesPerSecond > 0 {
		perSecond = min(perSecond, q.BytesPerSecond/max(size, 1))
	}
	byBytes := max(1, float64(s.cfg.BatchBytes)/max(size, 1))
	// At least 16 (as many as a batch's bytes allow), so that small
	// messages keep up at low quotas.
	return int(max(min(16, byBytes), min(perSecond, byBytes, float64(s.cfg.BatchSize))))
}

// pullUntil feeds messages from it into in until ctx ends or the gate is
// paused. Drain hands back what the iterator already buffered, so it can be
// nak'd (redelivered at once) instead of waiting out AckWait.
//
// Every prefetchWindow messages it compares the prefetch with what they
// hold (prefetchFor); when it is off by 4x or more (a tenant that starts or
// stops sending batches, not the ups and downs of a mix) it drains the
// iterator, feeds what it held, and returns the prefetch to pull with next
// (0: none).
func (s *Service) pullUntil(ctx context.Context, paused <-chan struct{}, tenant string, it jetstream.MessagesContext, in chan<- jetstream.Msg,
	events, bytes *rate.Limiter, burst int, throttled prometheus.Counter, q config.Quota, prefetch int) (next int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-paused:
		case <-done:
		}
		if !s.js.Conn().IsConnected() {
			// Draining waits for the server (until the connection's drain
			// timeout) when it is gone: stop instead; what the iterator
			// holds comes back after the ack wait.
			it.Stop()
			return
		}
		it.Drain()
	}()
	defer func() { close(done); wg.Wait() }()
	handBack := func(msg jetstream.Msg) {
		if ctx.Err() != nil {
			_ = msg.Nak() //nolint:errcheck // shutting down; redelivered after AckWait if lost
			return
		}
		s.nakOutage(msg)
	}
	var seen, items, size float64
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return next
			}
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Str("tenant_id", tenant).Msg("pull")
			}
			continue
		}
		if ctx.Err() != nil || isClosed(paused) {
			handBack(msg)
			continue
		}
		n := min(len(msg.Data()), burst)
		k := batchItems(msg.Headers(), events.Burst())
		if !events.AllowN(time.Now(), k) || !bytes.AllowN(time.Now(), n) {
			throttled.Inc()
			if events.WaitN(ctx, k) != nil || bytes.WaitN(ctx, n) != nil {
				handBack(msg)
				continue
			}
		}
		select {
		case in <- msg:
		case <-ctx.Done():
			handBack(msg)
		case <-paused:
			handBack(msg)
		}
		if next > 0 {
			continue // draining for a new prefetch
		}
		seen, items, size = seen+1, items+float64(k), size+float64(len(msg.Data()))
		if seen == prefetchWindow {
			if want := s.prefetchFor(q, items/seen, size/seen); want*4 <= prefetch || want >= prefetch*4 {
				next = want
				it.Drain()
			}
			seen, items, size = 0, 0, 0
		}
	}
}

// chargeItems charges the tenant's events quota with the items a batch held
// beyond what the pull charged for it (batchItems: its Batch-Items header,
// at most the burst). A publisher that understates the header, or sends
// batches larger than the burst, pays for every item before its next
// messages are pulled.
func (s *Service) chargeItems(tenant string, h nats.Header, items int) {
	if lim := s.eventLimits[tenant]; lim != nil {
		chargeLimiter(lim, items-batchItems(h, lim.Burst()))
	}
}

// chargeLimiter takes n events from lim now, into debt if need be, in
// reservations no larger than its burst.
func chargeLimiter(lim *rate.Limiter, n int) {
	now := time.Now()
	for n > 0 {
		k := min(n, lim.Burst())
		lim.ReserveN(now, k)
		n -= k
	}
}

// batchItems is what the pull charges a message against the events quota:
// the items a batch says it holds (Batch-Items, at most the limiter's
// burst), else 1. chargeItems charges the rest once it is decoded.
func batchItems(h nats.Header, burst int) int {
	v := h.Get(wire.BatchItemsHeader)
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 1
	}
	return min(n, max(burst, 1))
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// gate stops every tenant's pull during a store outage.
type gate struct {
	mu      sync.Mutex
	paused  chan struct{} // closed when a pause begins
	resumed chan struct{} // closed while pulls may run
}

func newGate() *gate {
	g := &gate{paused: make(chan struct{}), resumed: make(chan struct{})}
	close(g.resumed)
	return g
}

// state returns the channels of the current period: while pulls may run,
// resumed is closed and paused closes when they must stop; while paused,
// resumed closes when they may run again.
func (g *gate) state() (paused, resumed <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused, g.resumed
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if isClosed(g.paused) {
		return
	}
	close(g.paused)
	g.resumed = make(chan struct{})
}

func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if isClosed(g.resumed) {
		return
	}
	close(g.resumed)
	g.paused = make(chan struct{})
}

// nakOutage hands a message back at once during a store outage: nothing
// here pulls it again until the store answers; another collector whose
// store answers may take it.
func (s *Service) nakOutage(m jetstream.Msg) {
	_ = m.Nak() //nolint:errcheck // redelivered after AckWait if the nak is lost
	s.m.outageNaks.Inc()
}

// errPlacementStale marks a batch that could not be written because the
// placement (where tenants live, read from the platform store) has not been
// reloaded for too long: the platform store does not answer.
var errPlacementStale = errors.New("region placement not reloaded for too long (does the platform store answer?)")

// storeUnavailable reports whether a failed batch failed because a store
// is unavailable (rather than because of what it held).
func (s *Service) storeUnavailable(ctx context.Context, err error) bool {
	if errors.Is(err, errPlacementStale) {
		return true
	}
	// Not the run's context: a batch that failed while shutting down is
	// still judged by whether the stores answer.
	return s.pingStores(context.WithoutCancel(ctx)) != nil
}

// storeReady reports why writing cannot resume yet: a store that does not
// answer its ping, or a placement not yet reloaded.
func (s *Service) storeReady(ctx context.Context) error {
	if err := s.pingStores(ctx); err != nil {
		return err
	}
	if s.place.Stale() {
		return errPlacementStale
	}
	return nil
}

func (s *Service) pingStores(ctx context.Context) error {
	var errs []error
	for region, st := range s.stores {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := st.Ping(pctx); err != nil {
			errs = append(errs, fmt.Errorf("region %s: %w", region, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// watchBacklog exports each tenant's stream and backlog every few seconds.
func (s *Service) watchBacklog(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		for id := range s.tenants {
			s.observeBacklog(ctx, id)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observeBacklog tells apart the stream's size (what it stores, against its
// backlog limit), the collectors' consumer lag (messages not yet acked:
// pending delivery, plus delivered and awaiting their ack) and the age of
// the oldest message not yet acked. With work-queue retention acked messages
// leave the stream, so size and lag agree unless the stream is not (yet) a
// work queue.
func (s *Service) observeBacklog(ctx context.Context, tenant string) {
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := s.js.Stream(ictx, natsbus.IngestStream(tenant))
	if err != nil {
		return
	}
	info := st.CachedInfo()
	s.m.streamMsgs.WithLabelValues(tenant).Set(float64(info.State.Msgs))
	if info.Config.MaxBytes > 0 {
		s.m.fill.WithLabelValues(tenant).Set(float64(info.State.Bytes) / float64(info.Config.MaxBytes))
	}
	cons, err := st.Consumer(ictx, natsbus.CollectorDurable)
	if err != nil {
		return
	}
	ci := cons.CachedInfo()
	lag := ci.NumPending + uint64(ci.NumAckPending)
	s.m.backlog.WithLabelValues(tenant).Set(float64(lag))
	s.m.ackPending.WithLabelValues(tenant).Set(float64(ci.NumAckPending))
	oldest := 0.0
	if lag > 0 && info.State.Msgs > 0 {
		// Every message up to the ack floor is acked: the oldest waiting one
		// is the first after it that is still stored.
		since := info.State.FirstTime
		if m, err := st.GetMsg(ictx, max(ci.AckFloor.Stream+1, info.State.FirstSeq)); err == nil {
			since = m.Time
		}
		oldest = max(time.Since(since).Seconds(), 0)
	}
	s.m.oldest.WithLabelValues(tenant).Set(oldest)
	s.oldestMu.Lock()
	defer s.oldestMu.Unlock()
	s.oldest[tenant] = time.Duration(oldest * float64(time.Second))
}

type rows struct {
	events []Event
	logs   []Log
	spans  []Span
	audit  []auditlog.Record
	// bad are the items of a batch message that are dead-lettered alone.
	bad []BadItem
}

// prepared is a decoded batch on its way to the stores: its rows by
// region, the messages to ack once they are stored, the tenants it holds
// for writing (released once it is stored or handed back) and its span.
type prepared struct {
	ctx      context.Context
	span     trace.Span
	msgs     []jetstream.Msg
	good     []jetstream.Msg
	byRegion map[string]*rows
	writing  map[string]func()
	// err is a decoding failure that is not the messages' fault (a dead
	// letter not published): the whole batch is handed back.
	err error
}

func (p *prepared) hasAudit() bool {
	for _, r := range p.byRegion {
		if len(r.audit) > 0 {
			return true
		}
	}
	return false
}

// prepare decodes a batch and dead-letters what is bad; commit stores the
// rest by region and acks everything that was stored or dead-lettered.
func (s *Service) prepare(ctx context.Context, msgs []jetstream.Msg) *prepared {
	// One span per batch, linked to the traces its messages carry in their
	// traceparent headers (the publishers' spans).
	var links []trace.Link
	for _, msg := range msgs[:min(len(msgs), maxLinks)] {
		if sc := telemetry.Extract(msg.Headers()); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, span := s.tracer.Start(ctx, "collector batch", trace.WithLinks(links...), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(msgs))))
	// A tenant's rows are written only while no region move holds it: each
	// tenant of the batch is held for writing until the batch is stored.
	p := &prepared{ctx: ctx, span: span, msgs: msgs, byRegion: map[string]*rows{}, writing: map[string]func(){}}
	p.err = s.decodeAll(ctx, p)
	return p
}

func (s *Service) decodeAll(ctx context.Context, p *prepared) error {
	// rest[i] is about how many rows msgs[i:] hold (rowsHint: their
	// Batch-Items as far as their sizes allow, at most maxRowsHint in
	// all): a region's rows grow once to hold them instead of doubling
	// from message to message.
	rest := make([]int, len(p.msgs)+1)
	for i := len(p.msgs) - 1; i >= 0; i-- {
		rest[i] = min(rest[i+1]+rowsHint(p.msgs[i].Headers(), len(p.msgs[i].Data())), maxRowsHint)
	}
	for i, msg := range p.msgs {
		r, region, err := s.decode(msg, p.writing)
		if errors.Is(err, errNotMine) {
			_ = msg.NakWithDelay(250 * time.Millisecond) //nolint:errcheck // redelivered after AckWait anyway
			s.m.deferred.Inc()
			continue
		}
		if errors.Is(err, errMoving) {
			_ = msg.NakWithDelay(time.Second) //nolint:errcheck // redelivered after AckWait anyway
			s.m.moving.Inc()
			continue
		}
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				return err
			}
			if err := s.deadLetter(ctx, msg, de); err != nil {
				return err
			}
			continue
		}
		// A batch's bad items are dead-lettered before the batch is acked
		// (again, under the same ids, if it is redelivered).
		for _, it := range r.bad {
			if err := s.deadLetterItem(ctx, msg, it); err != nil {
				return err
			}
		}
		acc := p.byRegion[region]
		if acc == nil {
			acc = &rows{}
			p.byRegion[region] = acc
		}
		acc.events = appendRows(acc.events, r.events, rest[i])
		acc.logs = appendRows(acc.logs, r.logs, rest[i])
		acc.spans = appendRows(acc.spans, r.spans, rest[i])
		acc.audit = appendRows(acc.audit, r.audit, rest[i])
		p.good = append(p.good, msg)
	}
	return nil
}

// maxRowsHint bounds how many rows decodeAll makes room for ahead, whatever
// the messages' Batch-Items headers (which their publishers set) say.
const maxRowsHint = 1 << 16

// minRowBytes is the fewest bytes a row takes in a message: an event of a
// batch carries its 16-byte id, a stored span its 16-byte trace id.
const minRowBytes = 16

// rowsHint is how many rows a message says it holds (Batch-Items), but no
// more than its bytes can hold: the header is the publisher's, and a
// hostile 'Batch-Items: 1000000000' on a small message must not make a
// batch reserve room for rows that cannot come.
func rowsHint(h nats.Header, size int) int {
	return min(batchItems(h, maxRowsHint), size/minRowBytes+1)
}

// appendRows appends src to dst; when dst is full it makes room for hint
// rows (what the batch's messages from this one on hold) at once.
func appendRows[T any](dst, src []T, hint int) []T {
	if len(src) > cap(dst)-len(dst) {
		dst = slices.Grow(dst, max(len(src), hint))
	}
	return append(dst, src...)
}

// commit stores a prepared batch and acks it, then releases its tenants.
func (s *Service) commit(p *prepared) (err error) {
	defer func() {
		for _, release := range p.writing {
			if release != nil {
				release()
			}
		}
		if err != nil {
			p.span.RecordError(err)
			p.span.SetStatus(codes.Error, err.Error())
		}
		p.span.End()
	}()
	if p.err != nil {
		return p.err
	}
	start := time.Now()
	for region, r := range p.byRegion {
		if err := s.store(p.ctx, s.stores[region], r); err != nil {
			return fmt.Errorf("region %s: %w", region, err)
		}
	}
	if s.cfg.AfterStore != nil {
		s.cfg.AfterStore()
	}
	if len(p.good) > 0 {
		s.m.insertSeconds.Observe(time.Since(start).Seconds())
		s.m.batchSize.Observe(float64(len(p.good)))
	}
	// Plain acks are sent without waiting for the server's confirmation: a
	// lost ack only means a redelivery, which reads deduplicate.
	for _, msg := range p.good {
		if err := msg.Ack(); err != nil {
			s.log.Warn().Err(err).Msg("ack failed after store")
		}
	}
	s.m.stored(p.byRegion)
	return nil
}

const maxHeaders = 64

// errNotMine marks a message another collector process handles (audit
// records, when this one does not write the chains).
var errNotMine = errors.New("left to the audit-writing collector")

// errMoving marks a message of a tenant being moved to another region: it
// waits in the tenant's stream until the move ends.
var errMoving = errors.New("tenant being moved to another region")

// hold holds tenant for writing, once per batch (writing keeps the release
// functions, nil for a tenant refused): false while a region move holds it.
func (s *Service) hold(tenant string, writing map[string]func()) bool {
	if release, seen := writing[tenant]; seen {
		return release != nil
	}
	release, ok := s.place.Write(tenant)
	writing[tenant] = release
	return ok
}

// OriginalMsgIDHeader carries a replayed message's first Nats-Msg-Id, so its
// row gets the same id as if it had been stored the first time.
const OriginalMsgIDHeader = "Original-Msg-Id"

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func (s *Service) decode(msg jetstream.Msg, writing map[string]func()) (rows, string, error) {
	sub, err := ParseSubject(msg.Subject())
	if err != nil {
		return rows{}, "", err
	}
	t, ok := s.tenants[sub.Tenant]
	if !ok {
		return rows{}, "", bad(ReasonUnknownTenant, "tenant %q is not configured", sub.Tenant)
	}
	h := msg.Headers()
	if len(h) > maxHeaders {
		return rows{}, "", bad(ReasonTooManyHeaders, "%d headers (at most %d)", len(h), maxHeaders)
	}
	hdrTenant := h.Get("Tenant-Id")
	if hdrTenant == "" {
		return rows{}, "", bad(ReasonMissingTenant, "the Tenant-Id header is required")
	}
	if hdrTenant != sub.Tenant {
		return rows{}, "", bad(ReasonTenantMismatch, "Tenant-Id header %q does not match subject tenant %q", hdrTenant, sub.Tenant)
	}
	if !s.hold(t.ID, writing) {
		if s.place.Stale() {
			return rows{}, "", errPlacementStale
		}
		return rows{}, "", errMoving
	}
	// Residency: data that says it must live elsewhere is not written here.
	home := s.place.TenantRegion(t)
	if region := h.Get(RegionHeader); region != "" && region != home {
		return rows{}, "", bad(ReasonWrongRegion, "the %s header says %q but tenant %s lives in region %q", RegionHeader, region, sub.Tenant, home)
	}
	md, err := msg.Metadata()
	if err != nil {
		return rows{}, "", fmt.Errorf("message metadata: %w", err)
	}
	if md.NumDelivered > 1 {
		s.m.redelivered.WithLabelValues(sub.Tenant).Inc()
	}
	meta := Meta{
		Subject: sub, MsgID: firstNonEmpty(h.Get(OriginalMsgIDHeader), h.Get(nats.MsgIdHdr)), CorrelationID: h.Get("Correlation-Id"),
		TraceParent: firstNonEmpty(h.Get("traceparent"), h.Get("Traceparent")), StreamSeq: md.Sequence.Stream, Published: md.Timestamp.UTC(),
		SchemaVersion: h.Get("Schema-Version"), Submitter: Submitter(t),
	}
	if sig, ok := OTLPBatch(sub.Action); ok {
		r, err := s.decodeOTLP(meta, sig, h, msg.Data())
		s.chargeItems(sub.Tenant, h, len(r.spans)+len(r.logs)+len(r.bad))
		return r, home, err
	}
	if sub.Action == wire.ActionEvents {
		r, err := s.decodeEventBatch(meta, msg.Data(), rowsHint(h, len(msg.Data())))
		s.chargeItems(sub.Tenant, h, len(r.events)+len(r.bad))
		return r, home, err
	}
	sig, err := SignalOf(sub.Action)
	if err != nil {
		return rows{}, "", err
	}
	if sig == SignalEvent {
		e, err := s.eventRow(meta, msg.Data())
		if err != nil {
			return rows{}, "", err
		}
		return rows{events: []Event{e}}, home, nil
	}
	body, err := s.redactors[sub.Tenant].Apply(msg.Data())
	if err != nil {
		return rows{}, "", bad(ReasonInvalidJSON, "redaction: %v", err)
	}
	var r rows
	switch sig {
	case SignalLog:
		l, err := DecodeLog(meta, body, 0)
		if err != nil {
			return rows{}, "", err
		}
		l.RetentionDays = s.retention(meta.Tenant, SignalLog, "logs", l.Time, attributeField(l.Attributes))
		r.logs = append(r.logs, l)
	case SignalSpan:
		sp, err := DecodeSpan(meta, body, 0)
		if err != nil {
			return rows{}, "", err
		}
		sp.RetentionDays = s.retention(meta.Tenant, SignalSpan, "spans", sp.StartTime, attributeField(sp.Attributes))
		r.spans = append(r.spans, sp)
	case SignalAudit:
		if s.cfg.Audit == nil || !s.cfg.Audit.Writing() {
			s.auditWaiting.Store(time.Now().UnixNano())
			return rows{}, "", errNotMine
		}
		a, err := DecodeAudit(meta, body)
		if err != nil {
			return rows{}, "", err
		}
		r.audit = append(r.audit, a)
	}
	return r, home, nil
}

// deadLetter publishes the message to deadletter.{tenant}.{reason} with its
// original subject, headers and the reason, then acks the original.
func (s *Service) deadLetter(ctx context.Context, msg jetstream.Msg, de *DecodeError) error {
	out, tenant := s.deadLetterMsg(msg, de)
	if _, err := s.js.PublishMsg(ctx, fitDeadLetter(out, s.js.Conn().MaxPayload())); err != nil {
		return fmt.Errorf("dead-letter %s: %w", msg.Subject(), err)
	}
	s.m.deadLetters.WithLabelValues(string(de.Reason)).Inc()
	s.log.Warn().Str("tenant_id", tenant).Str("correlation_id", msg.Headers().Get("Correlation-Id")).
		Str("reason", string(de.Reason)).Str("detail", de.Detail).Msg("dead-lettered")
	return msg.DoubleAck(ctx)
}

// deadLetterItem publishes one bad item of a batch message alone, as a
// one-item batch on the batch's subject that carries the item's index
// (Batch-Offset), so a replay gives it the row id it would have had. The
// batch itself is acked with the rest once they are stored.
func (s *Service) deadLetterItem(ctx context.Context, msg jetstream.Msg, it BadItem) error {
	out, tenant := s.deadLetterMsg(msg, it.Err)
	out.Data = it.Data
	if it.Event != nil {
		eventDeadLetter(out, msg.Subject(), it.Event)
	} else {
		out.Header.Set(wire.BatchOffsetHeader, strconv.Itoa(it.Index))
		out.Header.Set(wire.BatchItemsHeader, "1")
		if id := out.Header.Get(nats.MsgIdHdr); id != "" {
			// One dead letter per item, even when the batch is redelivered.
			out.Header.Set(nats.MsgIdHdr, id+"-"+strconv.Itoa(it.Index))
		}
	}
	if _, err := s.js.PublishMsg(ctx, fitDeadLetter(out, s.js.Conn().MaxPayload())); err != nil {
		return fmt.Errorf("dead-letter item %d of %s: %w", it.Index, msg.Subject(), err)
	}
	s.m.deadLetters.WithLabelValues(string(it.Err.Reason)).Inc()
	s.log.Warn().Str("tenant_id", tenant).Str("correlation_id", msg.Headers().Get("Correlation-Id")).Int("item", it.Index).
		Str("reason", string(it.Err.Reason)).Str("detail", it.Err.Detail).Msg("dead-lettered an item of a batch")
	return nil
}

// maxDeadLetterHeader bounds each header value of a dead letter.
const maxDeadLetterHeader = 1024

// fitDeadLetter makes a dead letter publishable whatever its message held:
// header values longer than maxDeadLetterHeader are cut (an event's 500 KB
// action would put 500 KB into Deadletter-Subject), and a body that would
// take the message past the server's max payload is cut too, the original
// size in Deadletter-Truncated. A dead letter that could not be published
// would hand its whole batch back, again and again.
func fitDeadLetter(out *nats.Msg, maxPayload int64) *nats.Msg {
	size := len(out.Subject)
	var cut []string
	for k, vs := range out.Header {
		for i, v := range vs {
			if len(v) > maxDeadLetterHeader {
				vs[i] = clipHeader(v)
				cut = append(cut, k)
			}
			size += len(k) + len(vs[i]) + 4
		}
	}
	if len(cut) > 0 {
		// Set after the loop: a key added while ranging may or may not be
		// visited.
		slices.Sort(cut)
		names := clipHeader(strings.Join(slices.Compact(cut), ","))
		out.Header.Set("Deadletter-Truncated-Header", names)
		size += len("Deadletter-Truncated-Header") + len(names) + 4
	}
	// Room for the header line and Deadletter-Truncated itself.
	room := int(maxPayload) - size - 256
	if len(out.Data) > room {
		out.Header.Set("Deadletter-Truncated", strconv.Itoa(len(out.Data)))
		out.Data = out.Data[:max(room, 0)]
	}
	return out
}

// clipHeader cuts a header value at maxDeadLetterHeader bytes, between
// characters, not inside one.
func clipHeader(v string) string {
	if len(v) <= maxDeadLetterHeader {
		return v
	}
	n := maxDeadLetterHeader
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "…"
}

// deadLetterMsg is the dead letter of msg: its headers and body, the reason
// and where it came from.
func (s *Service) deadLetterMsg(msg jetstream.Msg, de *DecodeError) (*nats.Msg, string) {
	tenant := "_unknown"
	if sub, err := ParseSubject(msg.Subject()); err == nil {
		if _, ok := s.tenants[sub.Tenant]; ok {
			tenant = sub.Tenant
		}
	}
	out := nats.NewMsg(natsbus.DeadLetterPrefix + "." + tenant + "." + string(de.Reason))
	for k, vs := range msg.Headers() {
		if k == nats.MsgIdHdr {
			continue
		}
		for _, v := range vs {
			out.Header.Add(k, v)
		}
	}
	if id := msg.Headers().Get(nats.MsgIdHdr); id != "" {
		out.Header.Set("Deadletter-Msg-Id", id)
	}
	out.Header.Set("Deadletter-Reason", string(de.Reason))
	out.Header.Set("Deadletter-Detail", de.Detail)
	out.Header.Set("Deadletter-Subject", msg.Subject())
	out.Header.Set("Deadletter-Time", time.Now().UTC().Format(time.RFC3339Nano))
	if md, err := msg.Metadata(); err == nil {
		out.Header.Set("Deadletter-Stream", md.Stream)
		out.Header.Set("Deadletter-Stream-Seq", strconv.FormatUint(md.Sequence.Stream, 10))
		// One dead letter per original message, even when redelivered.
		out.Header.Set(nats.MsgIdHdr, "dl-"+md.Stream+"-"+strconv.FormatUint(md.Sequence.Stream, 10))
	}
	out.Data = msg.Data()
	return out, tenant
}

func (s *Service) store(ctx context.Context, st *chstore.Store, r *rows) error {
	if err := insertEvents(ctx, st, r.events); err != nil {
		return err
	}
	if len(r.audit) > 0 {
		byTenant := map[string][]auditlog.Record{}
		var order []string
		for _, a := range r.audit {
			if _, ok := byTenant[a.TenantID]; !ok {
				order = append(order, a.TenantID)
			}
			byTenant[a.TenantID] = append(byTenant[a.TenantID], a)
		}
		for _, t := range order {
			if _, err := s.cfg.Audit.Append(ctx, t, byTenant[t]); err != nil {
				return fmt.Errorf("audit chain of %s: %w", t, err)
			}
		}
	}
	if err := insertLogs(ctx, st, r.logs); err != nil {
		return err
	}
	return insertSpans(ctx, st, r.spans)
}

// insertEvents, insertLogs and insertSpans append their rows column by
// column (one typed slice per column, no per-row []any): the bulk of the
// traffic. clickhouse-go appends strings, numbers and times of a slice at
// once; Map and Array columns still go row by row inside it.
func insertEvents(ctx context.Context, st *chstore.Store, events []Event) error {
	n := len(events)
	if n == 0 {
		return nil
	}
	var (
		tenant, service, action, actor, entity, payload, corr, traceID, spanID = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                                                                  = make([]time.Time, n)
		ids                                                                    = make([]uuid.UUID, n)
		versions                                                               = make([]uint16, n)
		days                                                                   = make([]uint16, n)
	)
	for i, e := range events {
		tenant[i], service[i], action[i], times[i], ids[i] = e.TenantID, e.Service, e.Action, e.Time, e.EventID
		actor[i], entity[i], versions[i], payload[i] = e.Actor, e.Entity, e.SchemaVersion, e.Payload
		corr[i], traceID[i], spanID[i], days[i] = e.CorrelationID, e.TraceID, e.SpanID, e.RetentionDays
	}
	return insertColumns(ctx, st, "events", "tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, correlation_id, trace_id, span_id, retention_days",
		tenant, service, action, times, ids, actor, entity, versions, payload, corr, traceID, spanID, days)
}

func insertLogs(ctx context.Context, st *chstore.Store, logs []Log) error {
	n := len(logs)
	if n == 0 {
		return nil
	}
	var (
		tenant, service, sevText, body, traceID, spanID, corr = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                                                 = make([]time.Time, n)
		ids                                                   = make([]uuid.UUID, n)
		sevNum                                                = make([]uint8, n)
		attrs                                                 = attrsColumn(n, func(i int) map[string]string { return logs[i].Attributes })
		res                                                   = resourceColumn(n, func(i int) map[string]string { return logs[i].Resource })
		days                                                  = make([]uint16, n)
	)
	for i, l := range logs {
		tenant[i], service[i], times[i], ids[i], sevText[i], sevNum[i], body[i] = l.TenantID, l.Service, l.Time, l.LogID, l.SeverityText, l.SeverityNumber, l.Body
		traceID[i], spanID[i], corr[i], days[i] = l.TraceID, l.SpanID, l.Correlation, l.RetentionDays
	}
	return insertColumns(ctx, st, "logs", "tenant_id, service, time, log_id, severity_text, severity_number, body, attributes, resource, trace_id, span_id, correlation_id, retention_days",
		tenant, service, times, ids, sevText, sevNum, body, attrs, res, traceID, spanID, corr, days)
}

func insertSpans(ctx context.Context, st *chstore.Store, spans []Span) error {
	n := len(spans)
	if n == 0 {
		return nil
	}
	var (
		tenant, service, name, traceID, spanID, parent, kind, code, msg, corr = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		start                                                                 = make([]time.Time, n)
		dur                                                                   = make([]uint64, n)
		attrs                                                                 = attrsColumn(n, func(i int) map[string]string { return spans[i].Attributes })
		res                                                                   = resourceColumn(n, func(i int) map[string]string { return spans[i].Resource })
		events                                                                = make([][][]any, n)
		days                                                                  = make([]uint16, n)
	)
	for i, sp := range spans {
		tenant[i], service[i], name[i], start[i], traceID[i], spanID[i], parent[i] = sp.TenantID, sp.Service, sp.Name, sp.StartTime, sp.TraceID, sp.SpanID, sp.ParentSpanID
		kind[i], dur[i], code[i], msg[i], corr[i], days[i] = sp.Kind, sp.DurationNs, sp.StatusCode, sp.StatusMessage, sp.CorrelationID, sp.RetentionDays
		events[i] = make([][]any, len(sp.Events))
		for j, e := range sp.Events {
			events[i][j] = []any{e.Time, e.Name, e.Attributes}
		}
	}
	return insertColumns(ctx, st, "spans", "tenant_id, service, name, start_time, trace_id, span_id, parent_span_id, kind, duration_ns, status_code, status_message, attributes, resource, events, correlation_id, retention_days",
		tenant, service, name, start, traceID, spanID, parent, kind, dur, code, msg, attrs, res, events, corr, days)
}

// insertColumns sends one clickhouse-go batch into table, one slice per
// column, in the order of columns.
func insertColumns(ctx context.Context, st *chstore.Store, table, columns string, cols ...any) error {
	b, err := st.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare %s batch: %w", table, err)
	}
	for i, col := range cols {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("append %s column %d: %w", table, i, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	return nil
}

type metrics struct {
	rows          *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	batchSize     prometheus.Histogram
	insertSeconds prometheus.Histogram
	batchAge      prometheus.Histogram
	throttles     *prometheus.CounterVec
	redelivered   *prometheus.CounterVec
	deferred      prometheus.Counter
	moving        prometheus.Counter
	backlog       *prometheus.GaugeVec
	fill          *prometheus.GaugeVec
	streamMsgs    *prometheus.GaugeVec
	ackPending    *prometheus.GaugeVec
	oldest        *prometheus.GaugeVec
	storeDown     prometheus.Gauge
	outages       prometheus.Counter
	outageNaks    prometheus.Counter
	// SLA counters of server spans, by tenant and service; a tenant's
	// services beyond maxServices are counted as service="other".
	slaRequests, slaErrors *prometheus.CounterVec
	maxServices            int
	mu                     sync.Mutex
	services               map[string]map[string]bool
}

// BadSpan reports whether a server span counts against the SLA: an error
// status or an HTTP 5xx (the rule of the sla_minutely view).
func BadSpan(sp Span) bool {
	if sp.StatusCode == "error" {
		return true
	}
	for _, k := range []string{"http.status_code", "http.response.status_code"} {
		if c, err := strconv.Atoi(sp.Attributes[k]); err == nil && c >= 500 {
			return true
		}
	}
	return false
}

// slaService is the service label of a tenant's server spans: the service,
// or "other" beyond the tenant's first maxServices.
func (m *metrics) slaService(tenant, service string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	known := m.services[tenant]
	if known == nil {
		known = map[string]bool{}
		m.services[tenant] = known
	}
	if !known[service] {
		if len(known) >= m.maxServices {
			return "other"
		}
		known[service] = true
	}
	return service
}

// stored counts a stored batch's rows, and its server spans into the SLA
// counters: totals per label set first, then one update each (a label
// lookup per row cost more than the count).
func (m *metrics) stored(byRegion map[string]*rows) {
	type key struct{ tenant, label string }
	type sla struct{ requests, errors int }
	counts := map[key]int{}
	slas := map[key]*sla{}
	for _, r := range byRegion {
		for _, e := range r.events {
			counts[key{e.TenantID, string(SignalEvent)}]++
		}
		for _, l := range r.logs {
			counts[key{l.TenantID, string(SignalLog)}]++
		}
		for _, sp := range r.spans {
			counts[key{sp.TenantID, string(SignalSpan)}]++
			if sp.Kind != "server" {
				continue
			}
			c := slas[key{sp.TenantID, sp.Service}]
			if c == nil {
				c = &sla{}
				slas[key{sp.TenantID, sp.Service}] = c
			}
			c.requests++
			if BadSpan(sp) {
				c.errors++
			}
		}
		for _, a := range r.audit {
			counts[key{a.TenantID, string(SignalAudit)}]++
		}
	}
	for k, n := range counts {
		m.rows.WithLabelValues(k.tenant, k.label).Add(float64(n))
	}
	for k, c := range slas {
		service := m.slaService(k.tenant, k.label)
		m.slaRequests.WithLabelValues(k.tenant, service).Add(float64(c.requests))
		if c.errors > 0 {
			m.slaErrors.WithLabelValues(k.tenant, service).Add(float64(c.errors))
		}
	}
}

// newMetrics registers the collector's metrics. The tenant label takes only
// configured tenants (rows of unknown tenants are dead-lettered before they
// are counted), so its cardinality is bounded by the configuration.
func newMetrics(reg prometheus.Registerer, tenants []config.Tenant, maxServices int) (*metrics, error) {
	if maxServices <= 0 {
		maxServices = 20
	}
	m := &metrics{
		slaRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_sla_requests_total",
			Help: "Server spans stored (valid requests), by tenant and service (at most metering.max_services_per_tenant services a tenant, the rest as other)."}, []string{"tenant", "service"}),
		slaErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_sla_errors_total",
			Help: "Server spans with an error status or HTTP 5xx, by tenant and service."}, []string{"tenant", "service"}),
		maxServices: maxServices, services: map[string]map[string]bool{},
		rows:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_collector_rows_total", Help: "Rows stored, by tenant and signal."}, []string{"tenant", "signal"}),
		deadLetters:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_collector_dead_letters_total", Help: "Messages dead-lettered, by reason."}, []string{"reason"}),
		batchSize:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantscope_collector_batch_messages", Help: "Messages per stored batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantscope_collector_insert_seconds", Help: "Time to store a batch in ClickHouse.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		deferred:      prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantscope_collector_audit_deferred_total", Help: "Audit records left to the audit-writing collector process."}),
		moving:        prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantscope_collector_move_deferred_total", Help: "Messages of a tenant being moved to another region, left in its stream until the move ends."}),
		batchAge:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantscope_collector_batch_age_seconds", Help: "Time from a batch's first message to its store.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		throttles:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_collector_throttled_total", Help: "Times a tenant's pull waited for its quota."}, []string{"tenant"}),
		redelivered:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_collector_redelivered_total", Help: "Messages delivered more than once (after a crash or a failed insert); reads hide the duplicates."}, []string{"tenant"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_ingest_backlog_messages",
			Help: "Consumer lag: a tenant's messages the collectors have not yet acked (not yet delivered, plus delivered and awaiting their ack)."}, []string{"tenant"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_ingest_backlog_ack_pending_messages",
			Help: "Of the consumer lag, messages delivered to a collector and not yet acked (being stored, or held by a stopped collector until the ack wait)."}, []string{"tenant"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_ingest_backlog_oldest_seconds",
			Help: "Age of the oldest message of a tenant the collectors have not yet acked (0 when none waits)."}, []string{"tenant"}),
		streamMsgs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_ingest_stream_messages",
			Help: "Messages stored in a tenant's ingest stream (with work-queue retention, the ones not yet acked)."}, []string{"tenant"}),
		fill: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_ingest_backlog_fill_ratio",
			Help: "A tenant's stream bytes over its backlog limit (backlog_bytes); at 1 its publishers are refused."}, []string{"tenant"}),
		storeDown: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantscope_collector_store_unavailable",
			Help: "1 while a store (or the placement read from the platform store) does not answer: the collector has stopped pulling and probes it."}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantscope_collector_store_outages_total",
			Help: "Store outages seen: times the collector stopped pulling because a store did not answer."}),
		outageNaks: prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantscope_collector_store_outage_naks_total",
			Help: "Messages handed back (nak, at once) because a store did not answer; they wait in their streams."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rows, m.deadLetters, m.batchSize, m.insertSeconds, m.batchAge, m.deferred, m.moving, m.throttles, m.redelivered, m.backlog, m.ackPending, m.oldest, m.streamMsgs, m.fill, m.storeDown, m.outages, m.outageNaks, m.slaRequests, m.slaErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("collector metrics: %w", err)
		}
	}
	for _, r := range Reasons {
		m.deadLetters.WithLabelValues(string(r))
	}
	for _, t := range tenants {
		m.throttles.WithLabelValues(t.ID)
		m.redelivered.WithLabelValues(t.ID)
		for _, sig := range []Signal{SignalEvent, SignalLog, SignalSpan, SignalAudit} {
			m.rows.WithLabelValues(t.ID, string(sig))
		}
	}
	return m, nil
}
