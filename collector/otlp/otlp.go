// Package otlp is the OTLP/HTTP receiver: stock OpenTelemetry SDK exporters
// send traces to /v1/traces and logs to /v1/logs (protobuf or JSON, gzip or
// not) with a tenant's API key. A request travels as a batch: one NATS
// message on tenant.{tenant}.{service}._otlp_traces (._otlp_logs) holding
// the request's protobuf, cut into several only where it exceeds the
// stream's largest message, and the client is answered once JetStream has
// stored every part. The collector decodes the batch straight to rows. What
// the receiver can refuse at once (a resource of another tenant, a span
// without ids, an item larger than a message) it counts as rejected with
// the reason (OTLP partial success); a request JetStream did not store is
// answered 503, which exporters retry.
package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
)

// MaxBody bounds a request body (before and after gzip).
const MaxBody = 16 << 20

// Receiver handles /v1/traces and /v1/logs.
type Receiver struct {
	js       jetstream.JetStream
	keys     map[string]config.APIKey // by key hash
	maxMsg   int                      // the largest body of a message it publishes
	log      zerolog.Logger
	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// New builds a receiver publishing with js (the suite's own connection).
func New(cfg config.Config, js jetstream.JetStream, log zerolog.Logger, reg prometheus.Registerer) (*Receiver, error) {
	r := &Receiver{js: js, keys: map[string]config.APIKey{}, log: log.With().Str("component", "otlp").Logger(),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_otlp_items_accepted_total", Help: "Spans and log records accepted by the OTLP receiver."}, []string{"tenant", "signal"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_otlp_items_rejected_total", Help: "Spans and log records the OTLP receiver rejected."}, []string{"tenant", "signal"}),
	}
	for _, k := range cfg.APIKeys {
		r.keys[k.KeyHash] = k
	}
	r.maxMsg = messageLimit(cfg, js)
	if reg != nil {
		for _, c := range []prometheus.Collector{r.accepted, r.rejected} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// headerRoom is what a message's headers may take of the largest message.
const headerRoom = 4 << 10

// messageLimit is the largest body the receiver publishes: the stream's
// max_msg_size or the server's max_payload, whichever is smaller, less room
// for the headers.
func messageLimit(cfg config.Config, js jetstream.JetStream) int {
	limit := int(cfg.NATS.Stream.MaxMsgSize)
	if js != nil {
		if nc := js.Conn(); nc != nil {
			if p := int(nc.MaxPayload()); p > 0 && (limit <= 0 || p < limit) {
				limit = p
			}
		}
	}
	if limit <= 0 {
		limit = 1 << 20
	}
	return max(limit-headerRoom, 1<<10)
}

// Register mounts the endpoints.
func (r *Receiver) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/traces", r.traces)
	mux.HandleFunc("POST /v1/logs", r.logs)
}

type request struct {
	tenant string
	json   bool
	body   []byte
}

func (r *Receiver) read(w http.ResponseWriter, req *http.Request) (*request, bool) {
	key := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	if key == "" {
		key = req.Header.Get("X-Api-Key")
	}
	k, ok := r.keys[config.HashAPIKey(key)]
	if key == "" || !ok {
		http.Error(w, "OTLP: a tenant API key is required (Authorization: Bearer <key>)", http.StatusUnauthorized)
		return nil, false
	}
	if k.Role != config.RoleTenantAdmin || k.Tenant == "" {
		http.Error(w, "OTLP: the API key must belong to a tenant with role tenant-admin", http.StatusForbidden)
		return nil, false
	}
	out := &request{tenant: k.Tenant}
	switch ct := strings.ToLower(strings.TrimSpace(strings.SplitN(req.Header.Get("Content-Type"), ";", 2)[0])); ct {
	case "application/x-protobuf", "application/protobuf":
	case "application/json":
		out.json = true
	default:
		http.Error(w, "OTLP: Content-Type must be application/x-protobuf or application/json", http.StatusUnsupportedMediaType)
		return nil, false
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, MaxBody)
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "OTLP: bad gzip body: "+err.Error(), http.StatusBadRequest)
			return nil, false
		}
		body = zr
	default:
		http.Error(w, "OTLP: unsupported Content-Encoding "+strconv.Quote(enc), http.StatusUnsupportedMediaType)
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || len(b) > MaxBody {
		http.Error(w, fmt.Sprintf("OTLP: body over %d bytes", MaxBody), http.StatusRequestEntityTooLarge)
		return nil, false
	}
	if err != nil {
		http.Error(w, "OTLP: reading body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	out.body = b
	return out, true
}

func (r *Receiver) decode(req *request, m proto.Message) error {
	if !req.json {
		return proto.Unmarshal(req.body, m)
	}
	b, err := hexIDsToBase64(req.body)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, m)
}

func (r *Receiver) respond(w http.ResponseWriter, req *request, m proto.Message) {
	var b []byte
	var err error
	if req.json {
		w.Header().Set("Content-Type", "application/json")
		b, err = protojson.Marshal(m)
	} else {
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, err = proto.Marshal(m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b) //nolint:errcheck // client gone
}

// stringAttr is a resource attribute's value as the collector reads it.
func stringAttr(kvs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return collector.OTLPValue(kv.Value), true
		}
	}
	return "", false
}

// foreignTenant reports a resource's tenant.id when it is not tenant.
func foreignTenant(res *resourcepb.Resource, tenant string) (string, bool) {
	t, ok := stringAttr(res.GetAttributes(), "tenant.id")
	return t, ok && t != tenant
}

func serviceOf(res *resourcepb.Resource) string {
	name, _ := stringAttr(res.GetAttributes(), "service.name")
	return wire.ServiceToken(name)
}

// part is one message of a request.
type part struct {
	data    []byte
	items   int
	service string
}

// marshal is deterministic: a request sent again is cut into the same
// parts, with the same message ids.
var marshal = proto.MarshalOptions{Deterministic: true}

// Bytes a field's tag and length prefix take at most.
const framing = 6

// splitTraces cuts a request into parts of at most limit bytes of
// protobuf, each span with its resource and scope; a span too large for
// any part is counted in tooBig and left out.
func splitTraces(in *coltrace.ExportTraceServiceRequest, limit int) (parts []part, tooBig int64, err error) {
	var (
		cur   = &coltrace.ExportTraceServiceRequest{}
		size  int
		items int
		rsOut *tracepb.ResourceSpans
		ssOut *tracepb.ScopeSpans
	)
	flush := func() error {
		if items > 0 {
			b, err := marshal.Marshal(cur)
			if err != nil {
				return err
			}
			parts = append(parts, part{data: b, items: items, service: serviceOf(cur.ResourceSpans[0].Resource)})
		}
		cur, size, items, rsOut, ssOut = &coltrace.ExportTraceServiceRequest{}, 0, 0, nil, nil
		return nil
	}
	for _, rs := range in.ResourceSpans {
		rsCost := proto.Size(&tracepb.ResourceSpans{Resource: rs.Resource, SchemaUrl: rs.SchemaUrl}) + framing
		rsOut = nil
		for _, ss := range rs.ScopeSpans {
			ssCost := proto.Size(&tracepb.ScopeSpans{Scope: ss.Scope, SchemaUrl: ss.SchemaUrl}) + framing
			ssOut = nil
			for _, s := range ss.Spans {
				c := proto.Size(s) + framing
				if rsCost+ssCost+c > limit {
					tooBig++
					continue
				}
				need := c
				if ssOut == nil {
					need += ssCost
				}
				if rsOut == nil {
					need += rsCost
				}
				if size+need > limit {
					if err := flush(); err != nil {
						return nil, 0, err
					}
					need = rsCost + ssCost + c
				}
				if rsOut == nil {
					rsOut = &tracepb.ResourceSpans{Resource: rs.Resource, SchemaUrl: rs.SchemaUrl}
					cur.ResourceSpans = append(cur.ResourceSpans, rsOut)
				}
				if ssOut == nil {
					ssOut = &tracepb.ScopeSpans{Scope: ss.Scope, SchemaUrl: ss.SchemaUrl}
					rsOut.ScopeSpans = append(rsOut.ScopeSpans, ssOut)
				}
				ssOut.Spans = append(ssOut.Spans, s)
				size += need
				items++
			}
		}
	}
	return parts, tooBig, flush()
}

// splitLogs is splitTraces for log records.
func splitLogs(in *collogs.ExportLogsServiceRequest, limit int) (parts []part, tooBig int64, err error) {
	var (
		cur   = &collogs.ExportLogsServiceRequest{}
		size  int
		items int
		rlOut *logspb.ResourceLogs
		slOut *logspb.ScopeLogs
	)
	flush := func() error {
		if items > 0 {
			b, err := marshal.Marshal(cur)
			if err != nil {
				return err
			}
			parts = append(parts, part{data: b, items: items, service: serviceOf(cur.ResourceLogs[0].Resource)})
		}
		cur, size, items, rlOut, slOut = &collogs.ExportLogsServiceRequest{}, 0, 0, nil, nil
		return nil
	}
	for _, rl := range in.ResourceLogs {
		rlCost := proto.Size(&logspb.ResourceLogs{Resource: rl.Resource, SchemaUrl: rl.SchemaUrl}) + framing
		rlOut = nil
		for _, sl := range rl.ScopeLogs {
			slCost := proto.Size(&logspb.ScopeLogs{Scope: sl.Scope, SchemaUrl: sl.SchemaUrl}) + framing
			slOut = nil
			for _, lr := range sl.LogRecords {
				c := proto.Size(lr) + framing
				if rlCost+slCost+c > limit {
					tooBig++
					continue
				}
				need := c
				if slOut == nil {
					need += slCost
				}
				if rlOut == nil {
					need += rlCost
				}
				if size+need > limit {
					if err := flush(); err != nil {
						return nil, 0, err
					}
					need = rlCost + slCost + c
				}
				if rlOut == nil {
					rlOut = &logspb.ResourceLogs{Resource: rl.Resource, SchemaUrl: rl.SchemaUrl}
					cur.ResourceLogs = append(cur.ResourceLogs, rlOut)
				}
				if slOut == nil {
					slOut = &logspb.ScopeLogs{Scope: sl.Scope, SchemaUrl: sl.SchemaUrl}
					rlOut.ScopeLogs = append(rlOut.ScopeLogs, slOut)
				}
				slOut.LogRecords = append(slOut.LogRecords, lr)
				size += need
				items++
			}
		}
	}
	return parts, tooBig, flush()
}

// msgID is a part's Nats-Msg-Id: a digest of what it holds, so a request
// the client sends again inside the stream's duplicate window is stored
// once, and its log records keep their ids.
func msgID(tenant, action string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(tenant + "\x00" + action + "\x00"))
	h.Write(data)
	return "otlp-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// publish sends the parts, one NATS message each, and returns once
// JetStream has stored every one (or with the first error).
func (r *Receiver) publish(ctx context.Context, tenant, action string, parts []part) error {
	futures := make([]jetstream.PubAckFuture, 0, len(parts))
	for _, p := range parts {
		m := nats.NewMsg("tenant." + tenant + "." + p.service + "." + action)
		m.Header.Set("Tenant-Id", tenant)
		m.Header.Set(nats.MsgIdHdr, msgID(tenant, action, p.data))
		m.Header.Set(wire.BatchItemsHeader, strconv.Itoa(p.items))
		m.Data = p.data
		f, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// outcome is what became of a request's items.
type outcome struct {
	total, rejected int64
	reason          string
}

func (o *outcome) reject(n int64, reason string) {
	o.rejected += n
	o.reason = reason
}

// forward publishes what was kept of a request: the client's own bytes
// when nothing was taken out and they fit in one message, else the kept
// items re-encoded and cut at the message size. It answers 503 (the
// exporter retries; parts already stored are dropped as duplicates) when
// JetStream did not store every part, and says so.
func (r *Receiver) forward(w http.ResponseWriter, hr *http.Request, req *request, signal, action string, o *outcome, whole func() (part, bool), split func(limit int) ([]part, int64, error)) bool {
	var parts []part
	if p, ok := whole(); ok && len(p.data) <= r.maxMsg {
		parts = []part{p}
	} else {
		var tooBig int64
		var err error
		if parts, tooBig, err = split(r.maxMsg); err != nil {
			http.Error(w, "OTLP: encoding the request: "+err.Error(), http.StatusInternalServerError)
			return false
		}
		if tooBig > 0 {
			o.reject(tooBig, fmt.Sprintf("%d %s larger than the largest message (%d bytes)", tooBig, signal, r.maxMsg))
		}
	}
	if err := r.publish(hr.Context(), req.tenant, action, parts); err != nil {
		r.rejected.WithLabelValues(req.tenant, signal).Add(float64(o.total))
		r.log.Warn().Err(err).Str("tenant_id", req.tenant).Str("correlation_id", identity.CorrelationID(hr.Context())).
			Int64("items", o.total).Msg("OTLP request not stored; the client is asked to retry")
		w.Header().Set("Retry-After", "1")
		http.Error(w, "OTLP: not stored, retry later: "+err.Error(), http.StatusServiceUnavailable)
		return false
	}
	r.accepted.WithLabelValues(req.tenant, signal).Add(float64(o.total - o.rejected))
	r.rejected.WithLabelValues(req.tenant, signal).Add(float64(o.rejected))
	if o.rejected > 0 {
		r.log.Warn().Str("tenant_id", req.tenant).Str("correlation_id", identity.CorrelationID(hr.Context())).
			Str("signal", signal).Int64("rejected", o.rejected).Str("reason", o.reason).Msg("OTLP items rejected")
	}
	return true
}

// forwardClean answers a protobuf request that scan finds clean and that
// fits in one message: its own bytes are published whole, with nothing to
// take out, and it is answered with an empty response (or the 503 of
// forward). It reports false, having written nothing, for every other
// request, which the full decode then handles.
func (r *Receiver) forwardClean(w http.ResponseWriter, hr *http.Request, req *request, signal, action string, scan func([]byte, string) (scanned, bool), empty proto.Message) bool {
	if req.json || len(req.body) > r.maxMsg {
		return false
	}
	s, clean := scan(req.body, req.tenant)
	if !clean {
		return false
	}
	o := outcome{total: int64(s.items)}
	whole := func() (part, bool) { return part{data: req.body, items: s.items, service: s.service}, true }
	if r.forward(w, hr, req, signal, action, &o, whole, nil) {
		r.respond(w, req, empty)
	}
	return true
}

func (r *Receiver) traces(w http.ResponseWriter, hr *http.Request) {
	req, ok := r.read(w, hr)
	if !ok {
		return
	}
	if r.forwardClean(w, hr, req, "spans", wire.ActionOTLPTraces, scanTraces, &coltrace.ExportTraceServiceResponse{}) {
		return
	}
	var in coltrace.ExportTraceServiceRequest
	if err := r.decode(req, &in); err != nil {
		http.Error(w, "OTLP: the body is not an ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	// What the client can be told at once (partial success) is taken out
	// here; the collector checks every span again.
	var o outcome
	kept := in.ResourceSpans[:0]
	for _, rs := range in.ResourceSpans {
		n := 0
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
		o.total += int64(n)
		if t, foreign := foreignTenant(rs.Resource, req.tenant); foreign {
			o.reject(int64(n), fmt.Sprintf("resource tenant.id %q does not match the API key's tenant", t))
			continue
		}
		for _, ss := range rs.ScopeSpans {
			spans := ss.Spans[:0]
			for _, s := range ss.Spans {
				if len(s.TraceId) != 16 || len(s.SpanId) != 8 {
					o.reject(1, "span without a 16-byte trace id and 8-byte span id")
					continue
				}
				spans = append(spans, s)
			}
			ss.Spans = spans
		}
		kept = append(kept, rs)
	}
	in.ResourceSpans = kept
	whole := func() (part, bool) {
		if req.json || o.rejected > 0 || o.total == 0 {
			return part{}, false
		}
		return part{data: req.body, items: int(o.total), service: serviceOf(in.ResourceSpans[0].Resource)}, true
	}
	if !r.forward(w, hr, req, "spans", wire.ActionOTLPTraces, &o, whole, func(limit int) ([]part, int64, error) { return splitTraces(&in, limit) }) {
		return
	}
	out := &coltrace.ExportTraceServiceResponse{}
	if o.rejected > 0 {
		out.PartialSuccess = &coltrace.ExportTracePartialSuccess{RejectedSpans: o.rejected, ErrorMessage: o.reason}
	}
	r.respond(w, req, out)
}

func (r *Receiver) logs(w http.ResponseWriter, hr *http.Request) {
	req, ok := r.read(w, hr)
	if !ok {
		return
	}
	if r.forwardClean(w, hr, req, "logs", wire.ActionOTLPLogs, scanLogs, &collogs.ExportLogsServiceResponse{}) {
		return
	}
	var in collogs.ExportLogsServiceRequest
	if err := r.decode(req, &in); err != nil {
		http.Error(w, "OTLP: the body is not an ExportLogsServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	var o outcome
	kept := in.ResourceLogs[:0]
	for _, rl := range in.ResourceLogs {
		n := 0
		for _, sl := range rl.ScopeLogs {
			n += len(sl.LogRecords)
		}
		o.total += int64(n)
		if t, foreign := foreignTenant(rl.Resource, req.tenant); foreign {
			o.reject(int64(n), fmt.Sprintf("resource tenant.id %q does not match the API key's tenant", t))
			continue
		}
		kept = append(kept, rl)
	}
	in.ResourceLogs = kept
	whole := func() (part, bool) {
		if req.json || o.rejected > 0 || o.total == 0 {
			return part{}, false
		}
		return part{data: req.body, items: int(o.total), service: serviceOf(in.ResourceLogs[0].Resource)}, true
	}
	if !r.forward(w, hr, req, "logs", wire.ActionOTLPLogs, &o, whole, func(limit int) ([]part, int64, error) { return splitLogs(&in, limit) }) {
		return
	}
	out := &collogs.ExportLogsServiceResponse{}
	if o.rejected > 0 {
		out.PartialSuccess = &collogs.ExportLogsPartialSuccess{RejectedLogRecords: o.rejected, ErrorMessage: o.reason}
	}
	r.respond(w, req, out)
}

// hexIDsToBase64 rewrites OTLP/JSON's hex traceId/spanId/parentSpanId into
// the base64 that protojson expects for bytes fields.
func hexIDsToBase64(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, e := range t {
				if s, ok := e.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
					if b, err := hex.DecodeString(s); err == nil {
						t[k] = base64.StdEncoding.EncodeToString(b)
					}
					continue
				}
				walk(e)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(v)
	return json.Marshal(v)
}
