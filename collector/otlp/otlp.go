// Package otlp is the OTLP/HTTP receiver: stock OpenTelemetry SDK exporters
// send traces to /v1/traces and logs to /v1/logs (protobuf or JSON, gzip or
// not) with a tenant's API key; the receiver turns each span and log record
// into the same NATS message the Go SDK would publish, so there is one
// pipeline. It answers with OTLP partial-success semantics: what could not
// be published is counted as rejected, with the reason.
package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
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
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
)

// MaxBody bounds a request body (before and after gzip).
const MaxBody = 16 << 20

// Receiver handles /v1/traces and /v1/logs.
type Receiver struct {
	js       jetstream.JetStream
	keys     map[string]config.APIKey // by key hash
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
	if reg != nil {
		for _, c := range []prometheus.Collector{r.accepted, r.rejected} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
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

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.Key] = anyValue(kv.Value)
	}
	return out
}

func anyValue(v *commonpb.AnyValue) string {
	if v == nil {
		return ""
	}
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	}
	b, _ := protojson.Marshal(v) //nolint:errcheck // a decoded message marshals
	return string(b)
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func serviceToken(res map[string]string) string {
	s := res["service.name"]
	if s == "" {
		s = "unknown_service"
	}
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(s)
}

var kinds = map[tracepb.Span_SpanKind]string{
	tracepb.Span_SPAN_KIND_INTERNAL: "internal", tracepb.Span_SPAN_KIND_SERVER: "server", tracepb.Span_SPAN_KIND_CLIENT: "client",
	tracepb.Span_SPAN_KIND_PRODUCER: "producer", tracepb.Span_SPAN_KIND_CONSUMER: "consumer",
}

// pending collects async publishes and counts what failed.
type pending struct {
	futures []jetstream.PubAckFuture
	failed  int64
	lastErr error
}

func (r *Receiver) publish(p *pending, subject, tenant, msgID, traceparent string, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		p.failed++
		p.lastErr = err
		return
	}
	m := nats.NewMsg(subject)
	m.Header.Set("Tenant-Id", tenant)
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	if traceparent != "" {
		m.Header.Set("traceparent", traceparent)
	}
	m.Data = b
	f, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
	if err != nil {
		p.failed++
		p.lastErr = err
		return
	}
	p.futures = append(p.futures, f)
}

func (p *pending) wait(ctx context.Context) {
	for _, f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.failed++
			p.lastErr = err
		case <-ctx.Done():
			p.failed++
			p.lastErr = ctx.Err()
		}
	}
}

func (r *Receiver) traces(w http.ResponseWriter, hr *http.Request) {
	req, ok := r.read(w, hr)
	if !ok {
		return
	}
	var in coltrace.ExportTraceServiceRequest
	if err := r.decode(req, &in); err != nil {
		http.Error(w, "OTLP: the body is not an ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	var p pending
	var total, invalid int64
	var reason string
	for _, rs := range in.ResourceSpans {
		res := attrs(rs.GetResource().GetAttributes())
		if t, ok := res["tenant.id"]; ok && t != req.tenant {
			n := 0
			for _, ss := range rs.ScopeSpans {
				n += len(ss.Spans)
			}
			total += int64(n)
			invalid += int64(n)
			reason = fmt.Sprintf("resource tenant.id %q does not match the API key's tenant", t)
			continue
		}
		service := serviceToken(res)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				total++
				if len(s.TraceId) != 16 || len(s.SpanId) != 8 {
					invalid++
					reason = "span without a 16-byte trace id and 8-byte span id"
					continue
				}
				j := wire.Span{
					TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId), Name: s.Name,
					Kind: kinds[s.Kind], StartTime: time.Unix(0, int64(s.StartTimeUnixNano)).UTC(), EndTime: time.Unix(0, int64(s.EndTimeUnixNano)).UTC(),
					StatusCode: strings.ToLower(strings.TrimPrefix(s.GetStatus().GetCode().String(), "STATUS_CODE_")), StatusMessage: s.GetStatus().GetMessage(),
					Attributes: anyMap(attrs(s.Attributes)), Resource: anyMap(res),
				}
				if len(s.ParentSpanId) == 8 {
					j.ParentSpanID = hex.EncodeToString(s.ParentSpanId)
				}
				for _, e := range s.Events {
					j.Events = append(j.Events, wire.SpanEvent{Time: time.Unix(0, int64(e.TimeUnixNano)).UTC(), Name: e.Name, Attributes: anyMap(attrs(e.Attributes))})
				}
				r.publish(&p, "tenant."+req.tenant+"."+service+"._span", req.tenant, j.TraceID+"-"+j.SpanID, "00-"+j.TraceID+"-"+j.SpanID+"-01", j)
			}
		}
	}
	p.wait(hr.Context())
	rejected := invalid + p.failed
	if p.lastErr != nil {
		reason = "publish: " + p.lastErr.Error()
	}
	r.accepted.WithLabelValues(req.tenant, "spans").Add(float64(total - rejected))
	r.rejected.WithLabelValues(req.tenant, "spans").Add(float64(rejected))
	out := &coltrace.ExportTraceServiceResponse{}
	if rejected > 0 {
		out.PartialSuccess = &coltrace.ExportTracePartialSuccess{RejectedSpans: rejected, ErrorMessage: reason}
		r.log.Warn().Str("tenant_id", req.tenant).Int64("rejected", rejected).Str("reason", reason).Msg("OTLP spans rejected")
	}
	r.respond(w, req, out)
}

var severityText = map[int32]string{1: "trace", 5: "debug", 9: "info", 13: "warn", 17: "error", 21: "fatal"}

func (r *Receiver) logs(w http.ResponseWriter, hr *http.Request) {
	req, ok := r.read(w, hr)
	if !ok {
		return
	}
	var in collogs.ExportLogsServiceRequest
	if err := r.decode(req, &in); err != nil {
		http.Error(w, "OTLP: the body is not an ExportLogsServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	var p pending
	var total, invalid int64
	var reason string
	for _, rl := range in.ResourceLogs {
		res := attrs(rl.GetResource().GetAttributes())
		if t, ok := res["tenant.id"]; ok && t != req.tenant {
			for _, sl := range rl.ScopeLogs {
				total += int64(len(sl.LogRecords))
				invalid += int64(len(sl.LogRecords))
			}
			reason = fmt.Sprintf("resource tenant.id %q does not match the API key's tenant", t)
			continue
		}
		service := serviceToken(res)
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				total++
				ts := lr.TimeUnixNano
				if ts == 0 {
					ts = lr.ObservedTimeUnixNano
				}
				level := strings.ToLower(lr.SeverityText)
				if level == "" {
					level = severityText[int32(lr.SeverityNumber)/4*4+1]
				}
				line := map[string]any{"level": level, "time": time.Unix(0, int64(ts)).UTC().Format(time.RFC3339Nano), "message": anyValue(lr.Body), "resource": res}
				for k, v := range attrs(lr.Attributes) {
					if _, taken := line[k]; !taken {
						line[k] = v
					}
				}
				tp := ""
				if len(lr.TraceId) == 16 && len(lr.SpanId) == 8 {
					line["trace_id"], line["span_id"] = hex.EncodeToString(lr.TraceId), hex.EncodeToString(lr.SpanId)
					tp = "00-" + hex.EncodeToString(lr.TraceId) + "-" + hex.EncodeToString(lr.SpanId) + "-01"
				}
				r.publish(&p, "tenant."+req.tenant+"."+service+"._log", req.tenant, "", tp, line)
			}
		}
	}
	p.wait(hr.Context())
	rejected := invalid + p.failed
	if p.lastErr != nil {
		reason = "publish: " + p.lastErr.Error()
	}
	r.accepted.WithLabelValues(req.tenant, "logs").Add(float64(total - rejected))
	r.rejected.WithLabelValues(req.tenant, "logs").Add(float64(rejected))
	out := &collogs.ExportLogsServiceResponse{}
	if rejected > 0 {
		out.PartialSuccess = &collogs.ExportLogsPartialSuccess{RejectedLogRecords: rejected, ErrorMessage: reason}
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
