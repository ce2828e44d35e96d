// Package sdk is how a tenant's Go services publish into tenantscope over
// NATS with the tenant's own service credentials:
//
//   - Publisher.Event publishes a domain event: packed with others of the same
//     service, each with its own id, into a batch message on
//     tenant.{tenant}.{service}._events (Config.Unbatched: one message on
//     tenant.{tenant}.{service}.{action} each);
//   - Publisher.LogWriter is an io.Writer for zerolog that ships each line to ._log;
//   - Publisher.SpanExporter is an OpenTelemetry SpanExporter that ships spans to ._span.
//
// Publishing is asynchronous with a bounded buffer: when MaxPending messages
// await JetStream's acknowledgement, the next publish blocks (backpressure)
// rather than growing memory, and fails with a clear error if JetStream stays
// unavailable. Close flushes what is pending. Every message carries
// Tenant-Id, a Nats-Msg-Id (so retries are deduplicated), the Correlation-Id
// from the context and the W3C traceparent of the current span.
package sdk

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/internal/jsoncheck"
	"github.com/tenantscope/tenantscope/telemetry"
)

// Config binds a Publisher to one tenant's credentials.
type Config struct {
	URL      string // nats://host:4222
	Tenant   string
	User     string
	Password string
	// CredsFile signs in with a credentials file instead of a password:
	// 'tenantscope nats creds' writes one (a user JWT and its seed for a
	// cluster, or the tenant's nkey seed for the embedded server).
	CredsFile string
	// CAFile verifies the NATS server's TLS certificate against this CA.
	CAFile string
	// MaxPending bounds messages awaiting acknowledgement (default 4096).
	MaxPending int
	// StallWait is how long a publish waits for room before failing (default 5s).
	StallWait time.Duration
	// Name names the connection (default "tenantscope-sdk").
	Name string
	// AckWait is how long a publish waits for JetStream's acknowledgement
	// (default 10s). An acknowledgement that never comes (lost on the way
	// back: the message may well be stored) fails the publish after
	// AckWait, and it is published again as RetryFor says, so Flush and
	// Close never wait on it forever.
	AckWait time.Duration
	// RetryFor is how long a publish that JetStream did not acknowledge
	// (a stream leader election, a lost ack, no responders) is tried again
	// with the same Nats-Msg-Id, so the stream stores it once; 0 means 30s,
	// negative means never. AckWait plus RetryFor must stay within the
	// stream's duplicate window (2 minutes by default) for a message that
	// was stored but whose acknowledgement was lost to be stored once.
	RetryFor time.Duration
	// Unbatched publishes each event as its own message on
	// tenant.{tenant}.{service}.{action}. By default events are packed,
	// each with its own id, into batch messages on
	// tenant.{tenant}.{service}._events: many times the events per second
	// for the same bus and collector.
	Unbatched bool
	// BatchEvents is the most events one batch message holds (default
	// 512); BatchBytes the most bytes (default 256 KiB, under NATS's
	// default 1 MiB payload limit; an event larger than it goes alone).
	BatchEvents, BatchBytes int
	// BatchLinger is how long an event may wait for its batch to fill
	// before the batch is published anyway (default 5ms).
	BatchLinger time.Duration
}

// Publisher publishes a tenant's events, logs and spans.
type Publisher struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	failed    atomic.Int64
	published atomic.Int64
	mu        sync.Mutex
	lastErr   error
	// retries are the goroutines publishing a message again; Flush and
	// Close wait for them.
	retries  sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	// batches are the event batches being filled, by service; batchMu
	// guards them. linger publishes the ones older than BatchLinger.
	batchMu sync.Mutex
	batches map[string]*batch
	linger  sync.WaitGroup
}

// batch is an event batch being filled.
type batch struct {
	body   []byte
	events int
	// first is the correlation and trace of the batch's first event, for
	// the message's headers (each event keeps its own inside).
	first  context.Context
	opened time.Time
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("tenantscope sdk: publisher closed")

// ErrForeignAck marks an acknowledgement from a stream other than the
// tenant's: it was another publisher's (see wire.IngestStream), so the
// message is published again under its Nats-Msg-Id.
var ErrForeignAck = errors.New("tenantscope sdk: acknowledgement meant for another publisher")

// credsOption reads a credentials file: a user JWT with its seed, or a bare
// nkey seed.
func credsOption(path string) (nats.Option, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenantscope sdk: credentials: %w", err)
	}
	if bytes.Contains(raw, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return nil, fmt.Errorf("tenantscope sdk: credentials %s: %w", path, err)
	}
	return opt, nil
}

// New connects a Publisher.
func New(cfg Config) (*Publisher, error) {
	if cfg.Tenant == "" || cfg.URL == "" {
		return nil, errors.New("tenantscope sdk: URL and Tenant are required")
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 4096
	}
	if cfg.StallWait == 0 {
		cfg.StallWait = 5 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "tenantscope-sdk"
	}
	opts := []nats.Option{nats.Name(cfg.Name), nats.MaxReconnects(-1)}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	switch {
	case cfg.CredsFile != "":
		creds, err := credsOption(cfg.CredsFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, creds)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("tenantscope sdk: connect: %w", err)
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = 30 * time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.BatchEvents <= 0 {
		cfg.BatchEvents = 512
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 256 << 10
	}
	if cfg.BatchLinger <= 0 {
		cfg.BatchLinger = 5 * time.Millisecond
	}
	p := &Publisher{cfg: cfg, nc: nc, stop: make(chan struct{}), batches: map[string]*batch{}}
	p.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckWait),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			p.retry(m, err)
		}),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			if want := wire.IngestStream(cfg.Tenant); ack.Stream != want {
				p.retry(m, fmt.Errorf("%w: stream %q answered, not %q", ErrForeignAck, ack.Stream, want))
			}
		}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	if !cfg.Unbatched {
		p.linger.Add(1)
		go p.lingerLoop()
	}
	return p, nil
}

type ctxKey int

const correlationKey ctxKey = 1

// WithCorrelationID returns a context whose publishes carry id as Correlation-Id.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
}

// CorrelationID returns the context's correlation id, if any.
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string) //nolint:errcheck // absent is ""
	return id
}

func (p *Publisher) msg(ctx context.Context, service, action string, body []byte) *nats.Msg {
	m := nats.NewMsg("tenant." + p.cfg.Tenant + "." + service + "." + action)
	m.Header.Set("Tenant-Id", p.cfg.Tenant)
	m.Header.Set(nats.MsgIdHdr, uuid.Must(uuid.NewV7()).String())
	if id := CorrelationID(ctx); id != "" {
		m.Header.Set("Correlation-Id", id)
	}
	telemetry.Inject(ctx, m.Header)
	m.Data = body
	return m
}

func (p *Publisher) publish(m *nats.Msg) error {
	if p.nc.IsClosed() {
		return ErrClosed
	}
	n := items(m)
	if _, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.cfg.StallWait)); err != nil {
		p.failed.Add(n)
		return fmt.Errorf("tenantscope sdk: publish %s: %w", m.Subject, err)
	}
	p.published.Add(n)
	return nil
}

// items is what a message counts in Stats: a batch the events it holds.
func items(m *nats.Msg) int64 {
	if v, err := strconv.Atoi(m.Header.Get(wire.BatchItemsHeader)); err == nil && v > 0 {
		return int64(v)
	}
	return 1
}

// Event publishes a domain event. payload must marshal to a JSON object; its
// time, actor, entity and schema_version fields fill the stored columns.
func (p *Publisher) Event(ctx context.Context, service, action string, payload any) error {
	if err := wire.CheckAction(action); err != nil {
		return fmt.Errorf("tenantscope sdk: %w", err)
	}
	b, err := eventJSON(payload)
	if err != nil {
		return err
	}
	if p.cfg.Unbatched {
		return p.publish(p.msg(ctx, service, action, b))
	}
	return p.batchEvent(ctx, service, action, b)
}

// eventJSON is an event's payload as the JSON object it publishes. A
// json.RawMessage is checked and published as it is, less surrounding
// space, in a copy (the caller may reuse its buffer): json.Marshal would
// re-encode it, which cost three times the check. Anything else is
// marshalled.
func eventJSON(payload any) ([]byte, error) {
	raw, isRaw := payload.(json.RawMessage)
	b := bytes.TrimSpace(raw)
	if !isRaw {
		var err error
		if b, err = json.Marshal(payload); err != nil {
			return nil, fmt.Errorf("tenantscope sdk: event payload: %w", err)
		}
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("tenantscope sdk: event payload must be a JSON object")
	}
	if !isRaw {
		return b, nil
	}
	if err := jsoncheck.Valid(b); err != nil {
		return nil, fmt.Errorf("tenantscope sdk: event payload: %w", err)
	}
	return bytes.Clone(b), nil
}

// batchEvent adds an event to its service's batch, and publishes the batch
// when it is full. An event that would not fit a batch goes alone.
func (p *Publisher) batchEvent(ctx context.Context, service, action string, payload []byte) error {
	if p.nc.IsClosed() {
		return ErrClosed
	}
	e := wire.Event{ID: uuid.Must(uuid.NewV7()), Action: action, CorrelationID: CorrelationID(ctx), Payload: payload}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.TraceParent = "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
	}
	size := wire.EventSize(e)
	if size+8 > p.cfg.BatchBytes {
		m := p.msg(ctx, service, action, payload)
		m.Header.Set(nats.MsgIdHdr, uuid.UUID(e.ID).String())
		return p.publish(m)
	}
	p.batchMu.Lock()
	b := p.batches[service]
	var out []*nats.Msg
	if b != nil && len(b.body)+size > p.cfg.BatchBytes {
		out = append(out, p.batchMsg(service, b))
		b = nil
	}
	if b == nil {
		b = &batch{first: ctx, opened: time.Now()}
		p.batches[service] = b
	}
	b.body = wire.AppendEvent(b.body, e)
	b.events++
	if b.events >= p.cfg.BatchEvents {
		out = append(out, p.batchMsg(service, b))
	}
	p.batchMu.Unlock()
	return p.publishAll(out)
}

// batchMsg takes service's batch out of the map (batchMu held) as the
// message to publish: a fresh Nats-Msg-Id (retries reuse it, so JetStream
// stores the batch once), Batch-Items, and the first event's correlation
// and trace in the headers.
func (p *Publisher) batchMsg(service string, b *batch) *nats.Msg {
	delete(p.batches, service)
	m := p.msg(b.first, service, wire.ActionEvents, b.body)
	m.Header.Set(wire.BatchItemsHeader, strconv.Itoa(b.events))
	return m
}

// flushBatches publishes every batch older than age (all with age 0).
func (p *Publisher) flushBatches(age time.Duration) error {
	p.batchMu.Lock()
	var out []*nats.Msg
	now := time.Now()
	for service, b := range p.batches {
		if now.Sub(b.opened) >= age {
			out = append(out, p.batchMsg(service, b))
		}
	}
	p.batchMu.Unlock()
	return p.publishAll(out)
}

func (p *Publisher) publishAll(msgs []*nats.Msg) error {
	var errs []error
	for _, m := range msgs {
		errs = append(errs, p.publish(m))
	}
	return errors.Join(errs...)
}

// lingerLoop publishes batches that waited BatchLinger, until Close.
func (p *Publisher) lingerLoop() {
	defer p.linger.Done()
	t := time.NewTicker(max(p.cfg.BatchLinger/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.flushBatches(p.cfg.BatchLinger); err != nil {
				p.setErr(err) // publish counted it as failed
			}
		}
	}
}

// Audit publishes an audit record to tenant.{tenant}.{service}._audit; the
// suite chains it (seq, hash) in the tenant's tamper-evident audit log.
// record_id, time and correlation_id are filled in when empty.
func (p *Publisher) Audit(ctx context.Context, service string, rec auditlog.Record) error {
	rec.TenantID = p.cfg.Tenant
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("tenantscope sdk: audit record: %w", err)
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if rec.CorrelationID == "" {
		rec.CorrelationID = CorrelationID(ctx)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tenantscope sdk: audit record: %w", err)
	}
	m := p.msg(ctx, service, "_audit", b)
	if rec.RecordID != uuid.Nil {
		m.Header.Set(nats.MsgIdHdr, rec.RecordID.String())
	}
	return p.publish(m)
}

// Stats reports events, logs, spans and audit records handed to JetStream
// (a batch counts as the events it holds) and those that failed.
func (p *Publisher) Stats() (published, failed int64, lastErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published.Load(), p.failed.Load(), p.lastErr
}

// retry publishes m again (same subject, headers, Nats-Msg-Id and body),
// with a growing pause, until JetStream acknowledges it or RetryFor has
// passed since the first failure; only then is it counted as failed.
func (p *Publisher) retry(m *nats.Msg, first error) {
	if p.cfg.RetryFor < 0 {
		p.fail(items(m), first)
		return
	}
	p.retries.Add(1)
	go func() {
		defer p.retries.Done()
		deadline := time.Now().Add(p.cfg.RetryFor)
		wait, err := 100*time.Millisecond, first
		for time.Now().Before(deadline) {
			select {
			case <-p.stop:
				p.fail(items(m), fmt.Errorf("closed while retrying: %w", err))
				return
			case <-time.After(wait):
			}
			again := &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckWait)
			_, err = p.js.PublishMsg(ctx, again)
			cancel()
			if err == nil {
				return
			}
			wait = min(2*wait, 2*time.Second)
		}
		p.fail(items(m), err)
	}()
}

func (p *Publisher) fail(n int64, err error) {
	p.failed.Add(n)
	p.setErr(err)
}

func (p *Publisher) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
}

// Flush waits until every pending publish is acknowledged (or has failed
// after its retries) or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	if err := p.flushBatches(0); err != nil {
		return err
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("tenantscope sdk: flush: %d messages still pending: %w", p.js.PublishAsyncPending(), ctx.Err())
	}
	done := make(chan struct{})
	go func() {
		p.retries.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tenantscope sdk: flush: messages still being retried: %w", ctx.Err())
	}
}

// Close flushes and disconnects.
func (p *Publisher) Close(ctx context.Context) error {
	err := p.Flush(ctx)
	p.stopOnce.Do(func() { close(p.stop) })
	p.linger.Wait()
	// Events batched while closing: published and waited for too.
	if ferr := p.Flush(ctx); ferr != nil && err == nil {
		err = ferr
	}
	p.retries.Wait()
	if derr := p.nc.Drain(); derr != nil && err == nil {
		err = derr
	}
	return err
}

// LogWriter returns an io.Writer for zerolog (zerolog.New(p.LogWriter("api")))
// that publishes each JSON line to tenant.{tenant}.{service}._log.
func (p *Publisher) LogWriter(service string) *LogWriter {
	return &LogWriter{p: p, service: service}
}

// LogWriter ships zerolog lines.
type LogWriter struct {
	p       *Publisher
	service string
}

// Write publishes one zerolog line (zerolog writes one event per call).
func (w *LogWriter) Write(line []byte) (int, error) {
	b := make([]byte, len(line))
	copy(b, line) // zerolog reuses its buffer
	if err := w.p.publish(w.p.msg(context.Background(), w.service, "_log", b)); err != nil {
		return 0, err
	}
	return len(line), nil
}

// SpanExporter returns an OpenTelemetry exporter publishing finished spans
// to tenant.{tenant}.{service.name}._span; use it with sdktrace.WithBatcher.
func (p *Publisher) SpanExporter(defaultService string) sdktrace.SpanExporter {
	return &spanExporter{p: p, service: defaultService}
}

type spanExporter struct {
	p       *Publisher
	service string
}

func (e *spanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	var errs []error
	for _, s := range spans {
		j := wire.Span{
			TraceID: hexID(s.SpanContext().TraceID()), SpanID: hexSpan(s.SpanContext().SpanID()),
			Name: s.Name(), Kind: s.SpanKind().String(), StartTime: s.StartTime(), EndTime: s.EndTime(),
			StatusCode: statusCode(s.Status().Code), StatusMessage: s.Status().Description,
			Attributes: map[string]any{}, Resource: map[string]any{},
		}
		if s.Parent().IsValid() {
			j.ParentSpanID = hexSpan(s.Parent().SpanID())
		}
		for _, a := range s.Attributes() {
			j.Attributes[string(a.Key)] = a.Value.Emit()
		}
		service := e.service
		if r := s.Resource(); r != nil {
			for _, a := range r.Attributes() {
				j.Resource[string(a.Key)] = a.Value.Emit()
				if a.Key == "service.name" && a.Value.AsString() != "" && a.Value.AsString() != "unknown_service" {
					service = a.Value.AsString()
				}
			}
		}
		for _, ev := range s.Events() {
			se := wire.SpanEvent{Time: ev.Time, Name: ev.Name, Attributes: map[string]any{}}
			for _, a := range ev.Attributes {
				se.Attributes[string(a.Key)] = a.Value.Emit()
			}
			j.Events = append(j.Events, se)
		}
		b, err := json.Marshal(j)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m := nats.NewMsg("tenant." + e.p.cfg.Tenant + "." + subjectToken(service) + "._span")
		m.Header.Set("Tenant-Id", e.p.cfg.Tenant)
		m.Header.Set(nats.MsgIdHdr, j.TraceID+"-"+j.SpanID)
		m.Header.Set("traceparent", "00-"+j.TraceID+"-"+j.SpanID+"-01")
		m.Data = b
		if err := e.p.publish(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *spanExporter) Shutdown(ctx context.Context) error { return e.p.Flush(ctx) }

func hexID(id trace.TraceID) string  { return hex.EncodeToString(id[:]) }
func hexSpan(id trace.SpanID) string { return hex.EncodeToString(id[:]) }

func statusCode(c codes.Code) string {
	switch c {
	case codes.Ok:
		return "ok"
	case codes.Error:
		return "error"
	}
	return "unset"
}

// subjectToken makes a service name usable as one NATS subject token.
func subjectToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' || c < 0x20 {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
