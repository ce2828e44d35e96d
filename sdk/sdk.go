// Package sdk is how a tenant's Go services publish into tenantscope over
// NATS with the tenant's own service credentials:
//
//   - Publisher.Event publishes a domain event on tenant.{tenant}.{service}.{action};
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
	// RetryFor is how long a publish that JetStream did not acknowledge
	// (a stream leader election, a lost ack, no responders) is tried again
	// with the same Nats-Msg-Id, so the stream stores it once; 0 means 30s,
	// negative means never.
	RetryFor time.Duration
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
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("tenantscope sdk: publisher closed")

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
	p := &Publisher{cfg: cfg, nc: nc, stop: make(chan struct{})}
	p.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			p.retry(m, err)
		}))
	if err != nil {
		nc.Close()
		return nil, err
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
	if _, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.cfg.StallWait)); err != nil {
		p.failed.Add(1)
		return fmt.Errorf("tenantscope sdk: publish %s: %w", m.Subject, err)
	}
	p.published.Add(1)
	return nil
}

// Event publishes a domain event. payload must marshal to a JSON object; its
// time, actor, entity and schema_version fields fill the stored columns.
func (p *Publisher) Event(ctx context.Context, service, action string, payload any) error {
	if action == "" || action[0] == '_' {
		return fmt.Errorf("tenantscope sdk: action %q is empty or reserved", action)
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("tenantscope sdk: event payload: %w", err)
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("tenantscope sdk: event payload must be a JSON object")
	}
	return p.publish(p.msg(ctx, service, action, b))
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

// Stats reports publishes handed to JetStream and those that failed.
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
		p.fail(first)
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
				p.fail(fmt.Errorf("closed while retrying: %w", err))
				return
			case <-time.After(wait):
			}
			again := &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = p.js.PublishMsg(ctx, again)
			cancel()
			if err == nil {
				return
			}
			wait = min(2*wait, 2*time.Second)
		}
		p.fail(err)
	}()
}

func (p *Publisher) fail(err error) {
	p.failed.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
}

// Flush waits until every pending publish is acknowledged (or has failed
// after its retries) or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
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
