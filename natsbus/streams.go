package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
)

// IngestStream is the stream of one tenant's subjects (named in the
// publishers' contract, wire.IngestStream). Each tenant has its own stream,
// so one tenant's backlog limit (its quota) never rejects another tenant's
// messages, and the collector can pull from each fairly.
func IngestStream(tenant string) string { return wire.IngestStream(tenant) }

// IngestConfig is a chain tenant's ingest stream. Work-queue retention: a
// message leaves the stream once the collector has stored and acked it, so
// the stream holds only what waits and max_bytes (the tenant's
// backlog_bytes) limits the unprocessed backlog. Beyond it, discard-new
// gives publishers an error instead of losing waiting data.
func IngestConfig(cfg config.Config, t config.Tenant) jetstream.StreamConfig {
	st := cfg.NATS.Stream
	return jetstream.StreamConfig{
		Name:        IngestStream(t.ID),
		Description: "tenant " + t.ID + ": domain events, logs, spans and audit records awaiting the collector",
		Subjects:    []string{"tenant." + t.ID + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      time.Duration(st.MaxAge),
		MaxBytes:    cfg.QuotaOf(t).BacklogBytes,
		MaxMsgSize:  st.MaxMsgSize,
		Discard:     jetstream.DiscardNew,
		Duplicates:  time.Duration(st.Duplicates),
		Replicas:    st.Replicas,
	}
}

// DeadLetterConfig is the dead-letter stream: 30 days, discard old.
func DeadLetterConfig(cfg config.Config) jetstream.StreamConfig {
	st := cfg.NATS.Stream
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "messages the collector could not store, with the reason in headers",
		Subjects:    []string{DeadLetterPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      30 * 24 * time.Hour,
		MaxBytes:    cfg.DeadLetterMaxBytes(),
		MaxMsgSize:  st.MaxMsgSize + 64<<10,
		Discard:     jetstream.DiscardOld,
		Replicas:    st.Replicas,
	}
}

// CollectorConsumer is the durable pull consumer every collector process
// shares on each ingest stream. A work-queue stream allows exactly this
// shape: one consumer (per subject), explicit acks, deliver all.
func CollectorConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     CollectorDurable,
		Description: "shared by every collector process",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Long enough to store a batch; short enough that messages a
		// stopped collector was handed come back quickly.
		AckWait:       10 * time.Second,
		MaxAckPending: 20000,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ErrStreamMissing is returned by CheckStreams when a stream the
// configuration names does not exist: its owner has not created it yet.
var ErrStreamMissing = errors.New("stream does not exist")

// ErrStorageExhausted is returned when a node has not the JetStream storage
// left to reserve a stream's max_bytes (nats-server error 10047).
var ErrStorageExhausted = errors.New("insufficient JetStream storage to reserve the stream's max_bytes")

// Drift is one setting in which a stream (or its collector consumer)
// differs from what this process's configuration says.
type Drift struct {
	Stream, Setting, Want, Have string
}

func (d Drift) String() string {
	return fmt.Sprintf("%s %s is %s, this process's configuration says %s", d.Stream, d.Setting, d.Have, d.Want)
}

// streamDrift compares the settings the suite declares.
func streamDrift(want, have jetstream.StreamConfig) []Drift {
	var ds []Drift
	add := func(setting string, w, h any) {
		if fmt.Sprint(w) != fmt.Sprint(h) {
			ds = append(ds, Drift{Stream: want.Name, Setting: setting, Want: fmt.Sprint(w), Have: fmt.Sprint(h)})
		}
	}
	add("subjects", strings.Join(want.Subjects, ","), strings.Join(have.Subjects, ","))
	add("retention", want.Retention, have.Retention)
	add("storage", want.Storage, have.Storage)
	add("max_age", want.MaxAge, have.MaxAge)
	add("max_bytes", want.MaxBytes, have.MaxBytes)
	add("max_msg_size", want.MaxMsgSize, have.MaxMsgSize)
	add("discard", want.Discard, have.Discard)
	if want.Duplicates > 0 {
		add("duplicate_window", want.Duplicates, have.Duplicates)
	}
	add("replicas", max(want.Replicas, 1), max(have.Replicas, 1))
	return ds
}

func consumerDrift(stream string, want, have jetstream.ConsumerConfig) []Drift {
	var ds []Drift
	add := func(setting string, w, h any) {
		if fmt.Sprint(w) != fmt.Sprint(h) {
			ds = append(ds, Drift{Stream: stream, Setting: "consumer " + want.Durable + " " + setting, Want: fmt.Sprint(w), Have: fmt.Sprint(h)})
		}
	}
	add("ack_policy", want.AckPolicy, have.AckPolicy)
	add("ack_wait", want.AckWait, have.AckWait)
	add("max_ack_pending", want.MaxAckPending, have.MaxAckPending)
	add("max_deliver", want.MaxDeliver, have.MaxDeliver)
	add("deliver_policy", want.DeliverPolicy, have.DeliverPolicy)
	return ds
}

// Streams declares the suite's streams (their one owner) or checks them
// (every other process), and exports tenantscope_nats_stream_drift.
//
// The owner is the process that runs the embedded server ('serve'), or
// 'tenantscope migrate up' against a cluster. Other processes (collector,
// ui) never rewrite a stream: a process started with other limits would
// otherwise change them for the whole deployment, and one whose streams
// reserve more than a node has left would fail to start.
type Streams struct {
	js    jetstream.JetStream
	cfg   config.Config
	log   zerolog.Logger
	drift *prometheus.GaugeVec
}

// NewStreams registers the drift gauge on reg.
func NewStreams(js jetstream.JetStream, cfg config.Config, log zerolog.Logger, reg prometheus.Registerer) (*Streams, error) {
	if js == nil {
		return nil, errors.New("natsbus: streams: JetStream is required")
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tenantscope_nats_stream_drift",
		Help: "Settings in which a stream or its collector consumer differs from this process's configuration (0: as configured), by kind (ingest: the tenant's; deadletter) and chain tenant. Only the owner ('serve' with the embedded server, 'migrate up') changes streams.",
	}, []string{"stream", "tenant"})
	if reg != nil {
		if err := reg.Register(g); err != nil {
			return nil, fmt.Errorf("natsbus: streams: %w", err)
		}
	}
	return &Streams{js: js, cfg: cfg, log: log.With().Str("component", "streams").Logger(), drift: g}, nil
}

// streamLabel is a stream's drift gauge: its kind and chain tenant (the
// tenant label keeps the series off the public /metrics, as every
// per-tenant series).
type streamLabel struct{ name, kind, tenant string }

func (s *Streams) streams() []streamLabel {
	var ls []streamLabel
	for _, t := range s.cfg.ChainTenants() {
		ls = append(ls, streamLabel{IngestStream(t.ID), "ingest", t.ID})
	}
	return append(ls, streamLabel{DeadLetterStream, "deadletter", ""})
}

// Apply is the owner's step: it creates or updates every stream and the
// collectors' consumers (see EnsureStreams).
func (s *Streams) Apply(ctx context.Context) error {
	if err := applyStreams(ctx, s.js, s.cfg, s.log); err != nil {
		return err
	}
	for _, l := range s.streams() {
		s.drift.WithLabelValues(l.kind, l.tenant).Set(0)
	}
	return nil
}

// Check compares the streams with this process's configuration, logs a
// warning for each difference and sets the drift gauge; it changes nothing.
// It fails only when a stream is missing (ErrStreamMissing) or JetStream
// cannot be asked.
func (s *Streams) Check(ctx context.Context) ([]Drift, error) {
	ds, err := CheckStreams(ctx, s.js, s.cfg)
	if err != nil {
		return nil, err
	}
	per := map[string]int{}
	tenantOf := map[string]string{}
	for _, l := range s.streams() {
		tenantOf[l.name] = l.tenant
	}
	for _, d := range ds {
		per[d.Stream]++
		s.log.Warn().Str("tenant_id", tenantOf[d.Stream]).Str("stream", d.Stream).Str("setting", d.Setting).Str("stream_has", d.Have).Str("configured", d.Want).
			Msg("stream settings differ from this process's configuration; left as they are (their owner, 'serve' or 'migrate up', changes them)")
	}
	for _, l := range s.streams() {
		s.drift.WithLabelValues(l.kind, l.tenant).Set(float64(per[l.name]))
	}
	return ds, nil
}

// CheckStreams lists how the streams and collector consumers differ from
// cfg, without changing anything.
func CheckStreams(ctx context.Context, js jetstream.JetStream, cfg config.Config) ([]Drift, error) {
	var ds []Drift
	check := func(want jetstream.StreamConfig) error {
		st, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("nats: %s: %w: it is created by 'tenantscope serve' (embedded NATS) or 'tenantscope migrate up' (a NATS cluster)", want.Name, ErrStreamMissing)
		}
		if err != nil {
			return fmt.Errorf("nats: stream %s: %w", want.Name, err)
		}
		ds = append(ds, streamDrift(want, st.CachedInfo().Config)...)
		return nil
	}
	for _, t := range cfg.ChainTenants() {
		want := IngestConfig(cfg, t)
		if err := check(want); err != nil {
			return nil, err
		}
		cons, err := js.Consumer(ctx, want.Name, CollectorDurable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("nats: consumer %s on %s: %w: it is created with the stream", CollectorDurable, want.Name, ErrStreamMissing)
		}
		if err != nil {
			return nil, fmt.Errorf("nats: consumer %s on %s: %w", CollectorDurable, want.Name, err)
		}
		ds = append(ds, consumerDrift(want.Name, CollectorConsumer(), cons.CachedInfo().Config)...)
	}
	if err := check(DeadLetterConfig(cfg)); err != nil {
		return nil, err
	}
	return ds, nil
}

// EnsureStreams creates or updates every tenant's ingest stream, the
// dead-letter stream and the collectors' durable pull consumers, with
// explicit limits. It is idempotent, and is called only by the streams'
// owner. An ingest stream made by an earlier version (limits retention) is
// switched to work-queue retention (see migrateIngest).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg config.Config) error {
	return applyStreams(ctx, js, cfg, zerolog.Nop())
}

func applyStreams(ctx context.Context, js jetstream.JetStream, cfg config.Config, log zerolog.Logger) error {
	for _, t := range cfg.ChainTenants() {
		if err := applyIngest(ctx, js, cfg, t, log); err != nil {
			return storageHint(err, cfg)
		}
	}
	if err := ensureStream(ctx, js, DeadLetterConfig(cfg), log); err != nil {
		return storageHint(err, cfg)
	}
	return nil
}

// storageHint explains a 10047 with the configuration's arithmetic.
func storageHint(err error, cfg config.Config) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == 10047 {
		return fmt.Errorf("%w (%w): the configuration's streams reserve %s on each node that holds them; see 'tenantscope config validate --jetstream-budget <max_file_store>'",
			err, ErrStorageExhausted, config.ByteSize(cfg.ReservedStreamBytes()))
	}
	return err
}

// ensureStream creates a stream or updates it where it differs.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, log zerolog.Logger) error {
	st, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return fmt.Errorf("nats: create stream %s: %w", want.Name, err)
		}
		log.Info().Str("stream", want.Name).Msg("stream created")
		return nil
	}
	if err != nil {
		return fmt.Errorf("nats: stream %s: %w", want.Name, err)
	}
	ds := streamDrift(want, st.CachedInfo().Config)
	if len(ds) == 0 {
		return nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return fmt.Errorf("nats: update stream %s: %w", want.Name, err)
	}
	for _, d := range ds {
		log.Info().Str("stream", want.Name).Str("setting", d.Setting).Str("was", d.Have).Str("now", d.Want).Msg("stream updated")
	}
	return nil
}

func applyIngest(ctx context.Context, js jetstream.JetStream, cfg config.Config, t config.Tenant, log zerolog.Logger) error {
	want := IngestConfig(cfg, t)
	st, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return fmt.Errorf("nats: stream %s: %w", want.Name, err)
	case st.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy:
		done, err := migrateIngest(ctx, js, st, want, log)
		if err != nil || !done {
			return err
		}
	}
	if err := ensureStream(ctx, js, want, log); err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, want.Name, CollectorConsumer()); err != nil {
		return fmt.Errorf("nats: consumer %s on %s: %w", CollectorDurable, want.Name, err)
	}
	return nil
}

// migratingSubject is where an ingest stream listens while it is replaced:
// nobody publishes there, so nothing can arrive between the last check and
// the deletion. Publishers meanwhile get "no responders" and retry.
func migratingSubject(stream string) string { return "_tenantscope.migrating." + stream }

// migrateIngest moves an ingest stream of an earlier version (limits, or
// interest, retention) to work-queue retention, which nats-server cannot
// change in place. It reports done when the stream was removed (so the
// caller creates it anew).
//
//   - Nothing waits for the collector (everything was stored and acked): the
//     stream stops taking messages for a moment, is checked again, deleted
//     and created anew. Only stored messages go.
//   - Messages wait: the stream is switched in place to interest retention
//     (nats-server allows that), which drops the acked messages at once and
//     frees the backlog for publishers; the waiting ones stay for the
//     collector. The next start of the owner, once the collector has drained
//     them, makes it a work queue.
func migrateIngest(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, want jetstream.StreamConfig, log zerolog.Logger) (bool, error) {
	have := st.CachedInfo().Config
	l := log.With().Str("stream", want.Name).Str("retention", have.Retention.String()).Logger()
	// The consumer first: interest retention without consumers drops
	// every message, and its state tells what still waits.
	cons, err := js.CreateOrUpdateConsumer(ctx, want.Name, CollectorConsumer())
	if err != nil {
		return false, fmt.Errorf("nats: migrate %s: consumer: %w", want.Name, err)
	}
	waiting := func() (uint64, error) {
		ci, err := cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("nats: migrate %s: consumer: %w", want.Name, err)
		}
		return ci.NumPending + uint64(ci.NumAckPending), nil
	}
	n, err := waiting()
	if err != nil {
		return false, err
	}
	if n == 0 {
		hold := have
		hold.Subjects = []string{migratingSubject(want.Name)}
		if _, err := js.UpdateStream(ctx, hold); err != nil {
			return false, fmt.Errorf("nats: migrate %s: stop intake: %w", want.Name, err)
		}
		if n, err = waiting(); err != nil {
			return false, err
		}
		if n == 0 {
			if err := js.DeleteStream(ctx, want.Name); err != nil {
				return false, fmt.Errorf("nats: migrate %s: delete: %w", want.Name, err)
			}
			l.Info().Msg("ingest stream of an earlier version held only stored messages: recreated with work-queue retention")
			return true, nil
		}
		// A message arrived before intake stopped: take it again and wait.
		if _, err := js.UpdateStream(ctx, have); err != nil {
			return false, fmt.Errorf("nats: migrate %s: resume intake: %w", want.Name, err)
		}
	}
	interim := want
	interim.Retention = jetstream.InterestPolicy
	if ds := streamDrift(interim, have); len(ds) > 0 {
		if _, err := js.UpdateStream(ctx, interim); err != nil {
			return false, fmt.Errorf("nats: migrate %s: interest retention: %w", want.Name, err)
		}
	}
	l.Warn().Uint64("waiting", n).
		Msg("ingest stream of an earlier version has messages waiting: interest retention until the collector drains it (acked messages leave at once); the next 'serve' or 'migrate up' makes it a work queue")
	if _, err := js.CreateOrUpdateConsumer(ctx, want.Name, CollectorConsumer()); err != nil {
		return false, fmt.Errorf("nats: consumer %s on %s: %w", CollectorDurable, want.Name, err)
	}
	return false, nil
}
