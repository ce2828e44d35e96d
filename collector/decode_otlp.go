package collector

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/wire"
)

// OTLP batches: a message on tenant.{t}.{service}._otlp_traces (._otlp_logs)
// is one OTLP export request in protobuf. It is decoded straight to rows;
// every item (span, log record) passes the checks a one-item message
// would, and an item that fails them is dead-lettered alone, as a one-item
// request with its resource and scope, while the others are stored.

// BadItem is an item of a batch that is dead-lettered alone.
type BadItem struct {
	// Index is the item's index in its batch (counted from Batch-Offset).
	Index int
	Err   *DecodeError
	// Data is a one-item export request: the item with its resource and
	// scope, in protobuf, published on the batch's subject when replayed;
	// for an event batch, the event's payload.
	Data []byte
	// Event is the item of an event batch, dead-lettered as the plain
	// one-event message it would have been (nil for OTLP batches).
	Event *wire.Event
}

// OTLPBatch reports whether action is a reserved action of OTLP batches,
// and its signal.
func OTLPBatch(action string) (Signal, bool) {
	switch action {
	case wire.ActionOTLPTraces:
		return SignalSpan, true
	case wire.ActionOTLPLogs:
		return SignalLog, true
	}
	return "", false
}

// itemID is the stable id of a batch's item: the same on every redelivery
// and replay of the batch, or of the item alone (which carries its index in
// Batch-Offset and the batch's id in Original-Msg-Id).
func itemID(m Meta, index int) uuid.UUID {
	key := m.MsgID
	if key == "" {
		key = "seq:" + strconv.FormatUint(m.StreamSeq, 10)
	}
	return uuid.NewHash(sha1.New(), uuid.NameSpaceURL, []byte("tenantscope:"+m.Tenant+":"+key+"#"+strconv.Itoa(index)), 5)
}

// batchOffset reads Batch-Offset (0 when absent).
func batchOffset(h nats.Header) (int, error) {
	v := h.Get(wire.BatchOffsetHeader)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, bad(ReasonInvalidField, "%s header %q is not an index", wire.BatchOffsetHeader, v)
	}
	return n, nil
}

// otlpAttrs flattens OTLP attributes to strings, as the span and log
// columns hold them.
func otlpAttrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.Key] = OTLPValue(kv.Value)
	}
	return out
}

// OTLPValue is an OTLP attribute value as the string stored in a Map
// column: strings as they are, numbers and booleans formatted, bytes in
// base64, arrays and maps as their OTLP JSON. The receiver reads
// attributes (tenant.id, service.name) with it too.
func OTLPValue(v *commonpb.AnyValue) string {
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

// otlpResource is what a resource gives its items: the service column, the
// resource map (shared by the resource's rows, never changed after) and
// the tenant it names, if any.
type otlpResource struct {
	service string
	attrs   map[string]string
	tenant  string
	named   bool
}

func newOTLPResource(kvs []*commonpb.KeyValue) otlpResource {
	return resourceOf(otlpAttrs(kvs))
}

// resourceOf is the resource of attrs (which it keeps and may add to).
func resourceOf(attrs map[string]string) otlpResource {
	r := otlpResource{attrs: attrs}
	r.service = wire.ServiceToken(r.attrs["service.name"])
	if _, ok := r.attrs["service.name"]; !ok {
		r.attrs["service.name"] = r.service
	}
	r.tenant, r.named = r.attrs["tenant.id"]
	return r
}

// check refuses a resource that names another tenant than the subject's.
func (r otlpResource) check(m Meta) *DecodeError {
	if r.named && r.tenant != m.Tenant {
		return &DecodeError{Reason: ReasonTenantMismatch, Detail: "resource tenant.id " + strconv.Quote(r.tenant) + " does not match subject tenant " + strconv.Quote(m.Tenant)}
	}
	return nil
}

var otlpKinds = [...]string{tracepb.Span_SPAN_KIND_UNSPECIFIED: "internal", tracepb.Span_SPAN_KIND_INTERNAL: "internal", tracepb.Span_SPAN_KIND_SERVER: "server",
	tracepb.Span_SPAN_KIND_CLIENT: "client", tracepb.Span_SPAN_KIND_PRODUCER: "producer", tracepb.Span_SPAN_KIND_CONSUMER: "consumer"}

var otlpStatus = [...]string{tracepb.Status_STATUS_CODE_UNSET: "unset", tracepb.Status_STATUS_CODE_OK: "ok", tracepb.Status_STATUS_CODE_ERROR: "error"}

// DecodeOTLPTraces turns an ExportTraceServiceRequest into span rows. A span
// of a resource that names another tenant (tenant_mismatch), without a
// 16-byte trace id and 8-byte span id, a name and a start time, or that
// ends before it starts (invalid_field) is returned as a BadItem. With red
// set, each span passes the tenant's redaction in its JSON form (the form
// of a ._span message) before it becomes a row, so the rules see the same
// fields either way. A body that is not a request is a DecodeError.
func DecodeOTLPTraces(m Meta, body []byte, offset int, red *Redactor) ([]Span, []BadItem, error) {
	if spans, bads, ok := decodeTracesWire(m, body, offset, red); ok {
		return spans, bads, nil
	}
	return decodeTracesProto(m, body, offset, red)
}

// decodeTracesProto is DecodeOTLPTraces through the built request: for the
// requests decodeTracesWire leaves to it (and its error messages).
func decodeTracesProto(m Meta, body []byte, offset int, red *Redactor) ([]Span, []BadItem, error) {
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		return nil, nil, bad(ReasonInvalidProtobuf, "body is not an OTLP ExportTraceServiceRequest: %v", err)
	}
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	spans := make([]Span, 0, n)
	var bads []BadItem
	i := offset
	for _, rs := range req.ResourceSpans {
		res := newOTLPResource(rs.GetResource().GetAttributes())
		resErr := res.check(m)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				idx := i
				i++
				de := resErr
				var sp Span
				if de == nil {
					sp, de = otlpSpan(m, res, fieldsOf(s), red)
				}
				if de != nil {
					one := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{Resource: rs.Resource, SchemaUrl: rs.SchemaUrl,
						ScopeSpans: []*tracepb.ScopeSpans{{Scope: ss.Scope, SchemaUrl: ss.SchemaUrl, Spans: []*tracepb.Span{s}}}}}}
					b, _ := proto.Marshal(one) //nolint:errcheck // parts of a decoded message marshal
					bads = append(bads, BadItem{Index: idx, Err: de, Data: b})
					continue
				}
				spans = append(spans, sp)
			}
		}
	}
	return spans, bads, nil
}

// spanFields are the fields of an OTLP span that become its row, from the
// built message (fieldsOf) or from its bytes (decodeTracesWire).
type spanFields struct {
	traceID, spanID, parentSpanID []byte
	name                          string
	kind                          int32
	start, end                    uint64
	attributes                    map[string]string
	events                        []SpanEvent
	statusCode                    int32
	statusMessage                 string
}

func fieldsOf(s *tracepb.Span) spanFields {
	f := spanFields{traceID: s.TraceId, spanID: s.SpanId, parentSpanID: s.ParentSpanId, name: s.Name, kind: int32(s.Kind),
		start: s.StartTimeUnixNano, end: s.EndTimeUnixNano, attributes: otlpAttrs(s.Attributes),
		statusCode: int32(s.GetStatus().GetCode()), statusMessage: s.GetStatus().GetMessage()}
	if len(s.Events) > 0 {
		f.events = make([]SpanEvent, len(s.Events))
		for i, e := range s.Events {
			f.events[i] = SpanEvent{Time: time.Unix(0, int64(e.TimeUnixNano)).UTC(), Name: e.Name, Attributes: otlpAttrs(e.Attributes)}
		}
	}
	return f
}

func otlpSpan(m Meta, res otlpResource, s spanFields, red *Redactor) (Span, *DecodeError) {
	if len(s.traceID) != 16 || len(s.spanID) != 8 {
		return Span{}, &DecodeError{Reason: ReasonInvalidField, Detail: "span needs a 16-byte trace_id and an 8-byte span_id"}
	}
	if s.name == "" || s.start == 0 {
		return Span{}, &DecodeError{Reason: ReasonInvalidField, Detail: "span needs a name and a start_time"}
	}
	if s.end < s.start {
		return Span{}, &DecodeError{Reason: ReasonInvalidField, Detail: "end_time is before start_time"}
	}
	start := time.Unix(0, int64(s.start)).UTC()
	kind, status := "internal", "unset"
	if k := int(s.kind); k >= 0 && k < len(otlpKinds) {
		kind = otlpKinds[k]
	}
	if c := int(s.statusCode); c >= 0 && c < len(otlpStatus) {
		status = otlpStatus[c]
	}
	sp := Span{
		TenantID: m.Tenant, Service: res.service, Name: s.name, StartTime: start,
		TraceID: hex.EncodeToString(s.traceID), SpanID: hex.EncodeToString(s.spanID), Kind: kind,
		DurationNs: s.end - s.start, StatusCode: status, StatusMessage: s.statusMessage,
		Attributes: s.attributes, Resource: res.attrs, CorrelationID: m.CorrelationID, Events: s.events,
	}
	if len(s.parentSpanID) == 8 {
		sp.ParentSpanID = hex.EncodeToString(s.parentSpanID)
	}
	if red == nil {
		return sp, nil
	}
	return redactSpan(m, sp, red)
}

// redactSpan passes a span through the tenant's rules in the JSON form of a
// ._span message and decodes it again, as that message would be.
func redactSpan(m Meta, sp Span, red *Redactor) (Span, *DecodeError) {
	j := wire.Span{TraceID: sp.TraceID, SpanID: sp.SpanID, ParentSpanID: sp.ParentSpanID, Name: sp.Name, Kind: sp.Kind,
		StartTime: sp.StartTime, DurationNs: sp.DurationNs, StatusCode: sp.StatusCode, StatusMessage: sp.StatusMessage,
		Attributes: anyOf(sp.Attributes), Resource: anyOf(sp.Resource)}
	for _, e := range sp.Events {
		j.Events = append(j.Events, wire.SpanEvent{Time: e.Time, Name: e.Name, Attributes: anyOf(e.Attributes)})
	}
	body, err := json.Marshal(j)
	if err != nil {
		return Span{}, &DecodeError{Reason: ReasonInvalidField, Detail: "span: " + err.Error()}
	}
	if body, err = red.Apply(body); err != nil {
		return Span{}, &DecodeError{Reason: ReasonInvalidJSON, Detail: "redaction: " + err.Error()}
	}
	mm := m
	mm.Service = sp.Service
	out, err := DecodeSpan(mm, body, 0)
	if err != nil {
		return Span{}, decodeError(err)
	}
	return out, nil
}

func anyOf(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func decodeError(err error) *DecodeError {
	var de *DecodeError
	if errors.As(err, &de) {
		return de
	}
	return &DecodeError{Reason: ReasonInvalidField, Detail: err.Error()}
}

// logLineFields are the keys of a ._log line that are not attributes.
var logLineFields = [...]string{"trace_id", "span_id", "correlation_id", "level", "time", "timestamp", "ts", "message", "msg", "resource"}

// otlpSeverity names an OTLP severity number's range (1-4 trace, 5-8
// debug, 9-12 info, 13-16 warn, 17-20 error, 21-24 fatal).
var otlpSeverity = [...]string{"trace", "debug", "info", "warn", "error", "fatal"}

// DecodeOTLPLogs turns an ExportLogsServiceRequest into log rows, as
// DecodeOTLPTraces does spans: a record of a resource that names another
// tenant is a BadItem (tenant_mismatch). Each row's log_id is stable: the
// batch's Nats-Msg-Id (or stream sequence) and the record's index.
func DecodeOTLPLogs(m Meta, body []byte, offset int, red *Redactor) ([]Log, []BadItem, error) {
	var req collogs.ExportLogsServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		return nil, nil, bad(ReasonInvalidProtobuf, "body is not an OTLP ExportLogsServiceRequest: %v", err)
	}
	n := 0
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			n += len(sl.LogRecords)
		}
	}
	logs := make([]Log, 0, n)
	var bads []BadItem
	i := offset
	for _, rl := range req.ResourceLogs {
		res := newOTLPResource(rl.GetResource().GetAttributes())
		resErr := res.check(m)
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				idx := i
				i++
				de := resErr
				var l Log
				if de == nil {
					l, de = otlpLog(m, res, lr, itemID(m, idx), red)
				}
				if de != nil {
					one := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{Resource: rl.Resource, SchemaUrl: rl.SchemaUrl,
						ScopeLogs: []*logspb.ScopeLogs{{Scope: sl.Scope, SchemaUrl: sl.SchemaUrl, LogRecords: []*logspb.LogRecord{lr}}}}}}
					b, _ := proto.Marshal(one) //nolint:errcheck // parts of a decoded message marshal
					bads = append(bads, BadItem{Index: idx, Err: de, Data: b})
					continue
				}
				logs = append(logs, l)
			}
		}
	}
	return logs, bads, nil
}

func otlpLog(m Meta, res otlpResource, lr *logspb.LogRecord, id uuid.UUID, red *Redactor) (Log, *DecodeError) {
	t := m.Published
	if ts := lr.TimeUnixNano; ts != 0 {
		t = time.Unix(0, int64(ts)).UTC()
	} else if ts := lr.ObservedTimeUnixNano; ts != 0 {
		t = time.Unix(0, int64(ts)).UTC()
	}
	level := strings.ToLower(lr.SeverityText)
	num := int(lr.SeverityNumber)
	if level == "" && num >= 1 && num <= 24 {
		level = otlpSeverity[(num-1)/4]
	}
	l := Log{
		TenantID: m.Tenant, Service: res.service, Time: t, LogID: id, SeverityText: level, Body: OTLPValue(lr.Body),
		Attributes: otlpAttrs(lr.Attributes), Resource: res.attrs, Correlation: m.CorrelationID,
	}
	if sn, ok := severities[level]; ok {
		l.SeverityNumber = sn
	} else if num >= 0 && num <= 24 {
		l.SeverityNumber = uint8(num)
	}
	if len(lr.TraceId) == 16 && len(lr.SpanId) == 8 {
		l.TraceID, l.SpanID = hex.EncodeToString(lr.TraceId), hex.EncodeToString(lr.SpanId)
	} else {
		l.TraceID, l.SpanID = l.Attributes["trace_id"], l.Attributes["span_id"]
	}
	// As in a ._log line: these keys name the row's columns (or the line's
	// own fields), not attributes.
	if c, ok := l.Attributes["correlation_id"]; ok && l.Correlation == "" {
		l.Correlation = c
	}
	for _, k := range logLineFields {
		delete(l.Attributes, k)
	}
	if red == nil {
		return l, nil
	}
	return redactLog(m, l, red)
}

// redactLog passes a log record through the tenant's rules in the JSON form
// of a ._log line and decodes it again, as that line would be.
func redactLog(m Meta, l Log, red *Redactor) (Log, *DecodeError) {
	line := make(map[string]any, len(l.Attributes)+7)
	for k, v := range l.Attributes {
		line[k] = v
	}
	line["level"], line["time"], line["message"], line["resource"] = l.SeverityText, l.Time.Format(time.RFC3339Nano), l.Body, anyOf(l.Resource)
	if l.TraceID != "" {
		line["trace_id"], line["span_id"] = l.TraceID, l.SpanID
	}
	if l.Correlation != "" {
		line["correlation_id"] = l.Correlation
	}
	body, err := json.Marshal(line)
	if err != nil {
		return Log{}, &DecodeError{Reason: ReasonInvalidField, Detail: "log record: " + err.Error()}
	}
	if body, err = red.Apply(body); err != nil {
		return Log{}, &DecodeError{Reason: ReasonInvalidJSON, Detail: "redaction: " + err.Error()}
	}
	mm := m
	mm.Service = l.Service
	out, err := DecodeLog(mm, body, 0)
	if err != nil {
		return Log{}, decodeError(err)
	}
	out.LogID, out.Service = l.LogID, l.Service
	if _, known := severities[out.SeverityText]; !known {
		out.SeverityNumber = l.SeverityNumber
	}
	return out, nil
}

// decodeOTLP turns an OTLP batch into rows with their retention; its bad
// items go to r.bad, for process to dead-letter alone.
func (s *Service) decodeOTLP(m Meta, sig Signal, h nats.Header, body []byte) (rows, error) {
	offset, err := batchOffset(h)
	if err != nil {
		return rows{}, err
	}
	red := s.redactors[m.Tenant]
	var r rows
	switch sig {
	case SignalSpan:
		spans, bads, err := DecodeOTLPTraces(m, body, offset, red)
		if err != nil {
			return rows{}, err
		}
		for i := range spans {
			sp := &spans[i]
			sp.RetentionDays = s.retention(m.Tenant, SignalSpan, "spans", sp.StartTime, attributeField(sp.Attributes))
		}
		r.spans, r.bad = spans, bads
	case SignalLog:
		logs, bads, err := DecodeOTLPLogs(m, body, offset, red)
		if err != nil {
			return rows{}, err
		}
		for i := range logs {
			l := &logs[i]
			l.RetentionDays = s.retention(m.Tenant, SignalLog, "logs", l.Time, attributeField(l.Attributes))
		}
		r.logs, r.bad = logs, bads
	}
	return r, nil
}
