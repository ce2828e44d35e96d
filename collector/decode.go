package collector

import (
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/valyala/fastjson"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/internal/jsoncheck"
)

// Reason is why a message was dead-lettered; it is a NATS subject token.
type Reason string

// Dead-letter reasons.
const (
	ReasonBadSubject     Reason = "bad_subject"
	ReasonUnknownTenant  Reason = "unknown_tenant"
	ReasonMissingTenant  Reason = "missing_tenant_header"
	ReasonTenantMismatch Reason = "tenant_mismatch"
	ReasonInvalidUTF8    Reason = "invalid_utf8"
	ReasonInvalidJSON    Reason = "invalid_json"
	ReasonInvalidField   Reason = "invalid_field"
	ReasonUnknownAction  Reason = "unknown_reserved_action"
	ReasonTooManyHeaders Reason = "too_many_headers"
	ReasonWrongRegion    Reason = "wrong_region"
	// ReasonReservedIdentity is an audit record from a tenant that claims
	// the suite's own actor types, source_service or submitted_by.
	ReasonReservedIdentity Reason = "reserved_identity"
	// ReasonInvalidProtobuf is a batch on a ._otlp_traces or ._otlp_logs
	// subject whose body is not an OTLP export request.
	ReasonInvalidProtobuf Reason = "invalid_protobuf"
)

// RegionHeader, when a publisher sets it, names the region the message's
// data must live in; a message for another region than its tenant's is
// dead-lettered (and never written to the tenant's store).
const RegionHeader = "Data-Region"

// Reasons lists every dead-letter reason (the metric starts each at 0).
var Reasons = []Reason{ReasonBadSubject, ReasonUnknownTenant, ReasonMissingTenant, ReasonTenantMismatch, ReasonInvalidUTF8,
	ReasonInvalidJSON, ReasonInvalidField, ReasonUnknownAction, ReasonTooManyHeaders, ReasonWrongRegion, ReasonReservedIdentity, ReasonInvalidProtobuf, ReasonInvalidBatch}

// DecodeError is a permanent error: the message goes to the dead-letter stream.
type DecodeError struct {
	Reason Reason
	Detail string
}

func (e *DecodeError) Error() string { return string(e.Reason) + ": " + e.Detail }

func bad(r Reason, format string, a ...any) error {
	return &DecodeError{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Subject is a parsed tenant.{tenant}.{service}.{action}.
type Subject struct {
	Tenant, Service, Action string
}

// ParseSubject splits and checks a subject.
func ParseSubject(subject string) (Subject, error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "tenant" {
		return Subject{}, bad(ReasonBadSubject, "subject %q is not tenant.{tenant}.{service}.{action}", subject)
	}
	for i, p := range parts[1:] {
		if p == "" || !utf8.ValidString(p) {
			return Subject{}, bad(ReasonBadSubject, "subject %q has an empty or invalid token %d", subject, i+1)
		}
	}
	return Subject{Tenant: parts[1], Service: parts[2], Action: parts[3]}, nil
}

// Signal is what a message carries.
type Signal string

// Signals.
const (
	SignalEvent Signal = "events"
	SignalLog   Signal = "logs"
	SignalSpan  Signal = "spans"
	SignalAudit Signal = "audit"
)

// SignalOf maps an action to its signal; reserved actions start with "_".
func SignalOf(action string) (Signal, error) {
	switch action {
	case "_log":
		return SignalLog, nil
	case "_span":
		return SignalSpan, nil
	case "_audit":
		return SignalAudit, nil
	}
	if sig, ok := OTLPBatch(action); ok {
		return sig, nil
	}
	if action == wire.ActionEvents {
		return SignalEvent, nil
	}
	if strings.HasPrefix(action, "_") {
		return "", bad(ReasonUnknownAction, "reserved action %q is not handled by this collector", action)
	}
	return SignalEvent, nil
}

// Meta is what the bus says about a message.
type Meta struct {
	Subject
	MsgID         string
	CorrelationID string
	TraceParent   string
	StreamSeq     uint64
	Published     time.Time
	SchemaVersion string
	// Submitter is who published, for an audit record's submitted_by
	// (Submitter of the subject's tenant).
	Submitter string
	// eventID is MsgID already parsed (an event of a batch carries its id
	// as a UUID: formatted into MsgID and parsed back twice a row before).
	eventID uuid.UUID
}

// msgUUID is the message id as a UUID, if it is one.
func (m Meta) msgUUID() (uuid.UUID, bool) {
	if m.eventID != uuid.Nil {
		return m.eventID, true
	}
	id, err := uuid.Parse(m.MsgID)
	return id, err == nil
}

// Event is a row of the events table.
type Event struct {
	TenantID, Service, Action      string
	Time                           time.Time
	EventID                        uuid.UUID
	Actor, Entity                  string
	SchemaVersion                  uint16
	Payload                        string
	CorrelationID, TraceID, SpanID string
	RetentionDays                  uint16
}

// stableID is the event id: the Nats-Msg-Id when it is a UUID, else a UUID
// derived from the stream sequence, which is the same on every redelivery.
func stableID(m Meta) uuid.UUID {
	if id, ok := m.msgUUID(); ok {
		return id
	}
	key := m.MsgID
	if key == "" {
		key = "seq:" + strconv.FormatUint(m.StreamSeq, 10)
	}
	return uuid.NewHash(sha1.New(), uuid.NameSpaceURL, []byte("tenantscope:"+m.Tenant+":"+key), 5)
}

func checkBody(body []byte) (map[string]any, error) {
	if !utf8.Valid(body) {
		return nil, bad(ReasonInvalidUTF8, "body is not valid UTF-8")
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, bad(ReasonInvalidJSON, "body is not a JSON object: %v", err)
	}
	if obj == nil {
		return nil, bad(ReasonInvalidJSON, "body is null, not a JSON object")
	}
	return obj, nil
}

// traceIDs reads a W3C traceparent: 00-{trace}-{span}-{flags}.
func traceIDs(tp string) (string, string) {
	// version-traceid-spanid-flags; no more, no fewer parts.
	_, rest, ok1 := strings.Cut(tp, "-")
	traceID, rest, ok2 := strings.Cut(rest, "-")
	spanID, flags, ok3 := strings.Cut(rest, "-")
	if ok1 && ok2 && ok3 && !strings.Contains(flags, "-") && len(traceID) == 32 && len(spanID) == 16 {
		return traceID, spanID
	}
	return "", ""
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case map[string]any:
		for _, k := range []string{"id", "name", "type"} {
			if s, ok := x[k].(string); ok {
				return s
			}
		}
	}
	b, _ := json.Marshal(v) //nolint:errcheck // any value from json.Unmarshal marshals
	return string(b)
}

func timeField(obj map[string]any, keys ...string) (time.Time, bool, error) {
	for _, k := range keys {
		if v, ok := obj[k]; ok {
			return timeOf(k, v)
		}
	}
	return time.Time{}, false, nil
}

// timeOf reads field k's value as a time: an RFC 3339 string, or Unix
// seconds, milliseconds or nanoseconds by magnitude.
func timeOf(k string, v any) (time.Time, bool, error) {
	switch x := v.(type) {
	case string:
		return timeOfString(k, x)
	case float64:
		return timeOfNumber(x)
	default:
		return time.Time{}, false, bad(ReasonInvalidField, "field %q is not a time", k)
	}
}

// timeOfString is an RFC 3339 time.
func timeOfString(k, x string) (time.Time, bool, error) {
	t, err := time.Parse(time.RFC3339Nano, x)
	if err != nil {
		return time.Time{}, false, bad(ReasonInvalidField, "field %q: %q is not an RFC 3339 time", k, x)
	}
	return t.UTC(), true, nil
}

// timeOfNumber is a Unix time in nanoseconds, milliseconds or seconds,
// as its size says.
func timeOfNumber(x float64) (time.Time, bool, error) {
	switch {
	case x > 1e17:
		return time.Unix(0, int64(x)).UTC(), true, nil
	case x > 1e11:
		return time.UnixMilli(int64(x)).UTC(), true, nil
	default:
		return time.Unix(0, int64(x*1e9)).UTC(), true, nil
	}
}

func isObject(body []byte) bool {
	for _, c := range body {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// raw decodes a RawMessage into an any (nil when absent).
func raw(m json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	var v any
	_ = json.Unmarshal(m, &v) //nolint:errcheck // m is part of a body that already decoded
	return v
}

// eventTime is the time of an event whose body has none: the time in its
// id when the id is a UUIDv7 (what the SDK gives every event: the moment it
// was published, the same on every redelivery and re-publish, so the row
// is replaced, not doubled), else the time JetStream stored the message.
func eventTime(m Meta) time.Time {
	if id, ok := m.msgUUID(); ok && id.Version() == 7 {
		sec, nsec := id.Time().UnixTime()
		return time.Unix(sec, nsec).UTC()
	}
	return m.Published
}

// eventParsers parse event bodies: one validating pass, one parsing pass
// that reads only the top-level fields the columns take, no map of every
// field and no reflection (a fifth of the CPU of encoding/json's).
var eventParsers fastjson.ParserPool

// DecodeEvent turns a domain event into a row. The whole body is the payload;
// well-known top-level fields (time, actor, entity, schema_version) fill columns.
func DecodeEvent(m Meta, body []byte, retentionDays uint16) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, bad(ReasonInvalidUTF8, "body is not valid UTF-8")
	}
	if !isObject(body) {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object")
	}
	if err := jsoncheck.Valid(body); err != nil {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object: %v", err)
	}
	p := eventParsers.Get()
	defer eventParsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object: %v", err)
	}
	obj, err := v.Object()
	if err != nil {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object: %v", err)
	}
	t, ok, err := eventTimeField(obj, "time", "timestamp", "occurred_at")
	if err != nil {
		return Event{}, err
	}
	if !ok {
		t = eventTime(m)
	}
	sv, fromHeader, err := schemaVersionHeader(m)
	if err != nil {
		return Event{}, err
	}
	if v := obj.Get("schema_version"); !fromHeader && v != nil && v.Type() == fastjson.TypeNumber {
		if f := v.GetFloat64(); f >= 0 && f < 65536 {
			sv = uint16(f)
		}
	}
	entity := fieldString(obj.Get("entity"))
	if entity == "" {
		entity = fieldString(obj.Get("entity_id"))
	}
	traceID, spanID := traceIDs(m.TraceParent)
	return Event{
		TenantID: m.Tenant, Service: m.Service, Action: m.Action, Time: t, EventID: stableID(m),
		Actor: fieldString(obj.Get("actor")), Entity: entity, SchemaVersion: sv, Payload: string(body),
		CorrelationID: m.CorrelationID, TraceID: traceID, SpanID: spanID, RetentionDays: retentionDays,
	}, nil
}

// schemaVersionHeader reads an event's Schema-Version header: 1 and
// fromHeader false when there is none (the body's schema_version may say).
func schemaVersionHeader(m Meta) (sv uint16, fromHeader bool, err error) {
	if m.SchemaVersion == "" {
		return 1, false, nil
	}
	n, err := strconv.ParseUint(m.SchemaVersion, 10, 16)
	if err != nil {
		return 0, false, bad(ReasonInvalidField, "Schema-Version header %q is not a number", m.SchemaVersion)
	}
	return uint16(n), true, nil
}

// eventTimeField is timeField on a parsed event: the first of keys
// present, an RFC 3339 string or Unix seconds, milliseconds or nanoseconds.
func eventTimeField(obj *fastjson.Object, keys ...string) (time.Time, bool, error) {
	for _, k := range keys {
		v := obj.Get(k)
		if v == nil {
			continue
		}
		switch v.Type() {
		case fastjson.TypeString:
			return timeOfString(k, string(v.GetStringBytes()))
		case fastjson.TypeNumber:
			f, err := v.Float64()
			if err != nil {
				return time.Time{}, false, bad(ReasonInvalidField, "field %q is not a time", k)
			}
			return timeOfNumber(f)
		default:
			return time.Time{}, false, bad(ReasonInvalidField, "field %q is not a time", k)
		}
	}
	return time.Time{}, false, nil
}

// fieldString is str of a parsed field: a string as it is, an object's
// id, name or type; anything else as encoding/json renders it.
func fieldString(v *fastjson.Value) string {
	if v == nil {
		return ""
	}
	switch v.Type() {
	case fastjson.TypeString:
		return string(v.GetStringBytes())
	case fastjson.TypeNull:
		return ""
	case fastjson.TypeObject:
		for _, k := range []string{"id", "name", "type"} {
			if f := v.Get(k); f != nil && f.Type() == fastjson.TypeString {
				return string(f.GetStringBytes())
			}
		}
	}
	return str(raw(v.MarshalTo(nil)))
}

// Log is a row of the logs table.
type Log struct {
	TenantID, Service            string
	Time                         time.Time
	LogID                        uuid.UUID
	SeverityText                 string
	SeverityNumber               uint8
	Body                         string
	Attributes, Resource         map[string]string
	TraceID, SpanID, Correlation string
	RetentionDays                uint16
}

var severities = map[string]uint8{"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "fatal": 21, "panic": 21}

// DecodeLog reads a zerolog-style JSON line: level, time, message, and every
// other field as an attribute.
func DecodeLog(m Meta, body []byte, retentionDays uint16) (Log, error) {
	obj, err := checkBody(body)
	if err != nil {
		return Log{}, err
	}
	t, ok, err := timeField(obj, "time", "timestamp", "ts")
	if err != nil {
		return Log{}, err
	}
	if !ok {
		t = m.Published
	}
	level := strings.ToLower(str(obj["level"]))
	l := Log{
		TenantID: m.Tenant, Service: m.Service, Time: t, LogID: stableID(m),
		SeverityText: level, SeverityNumber: severities[level], Body: str(obj["message"]),
		Attributes: map[string]string{}, Resource: map[string]string{"service.name": m.Service},
		Correlation: m.CorrelationID, RetentionDays: retentionDays,
	}
	if l.Body == "" {
		l.Body = str(obj["msg"])
	}
	l.TraceID, l.SpanID = traceIDs(m.TraceParent)
	for k, v := range obj {
		switch k {
		case "level", "time", "timestamp", "ts", "message", "msg":
		case "trace_id":
			l.TraceID = str(v)
		case "span_id":
			l.SpanID = str(v)
		case "correlation_id":
			if l.Correlation == "" {
				l.Correlation = str(v)
			}
		case "resource":
			if res, ok := v.(map[string]any); ok {
				for rk, rv := range res {
					l.Resource[rk] = str(rv)
				}
			} else {
				l.Attributes[k] = str(v)
			}
		default:
			l.Attributes[k] = str(v)
		}
	}
	return l, nil
}

// Span is a row of the spans table.
type Span struct {
	TenantID, Service, Name       string
	StartTime                     time.Time
	TraceID, SpanID, ParentSpanID string
	Kind                          string
	DurationNs                    uint64
	StatusCode, StatusMessage     string
	Attributes, Resource          map[string]string
	Events                        []SpanEvent
	CorrelationID                 string
	RetentionDays                 uint16
}

// SpanEvent is an event inside a span.
type SpanEvent struct {
	Time       time.Time
	Name       string
	Attributes map[string]string
}

func flat(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = str(v)
	}
	return out
}

var errHex = errors.New("not hex")

func checkHex(s string, n int) error {
	if len(s) != n {
		return errHex
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return errHex
		}
	}
	return nil
}

// DecodeSpan reads a span in tenantscope's JSON form (what the SDK's span
// exporter and the OTLP receiver publish).
func DecodeSpan(m Meta, body []byte, retentionDays uint16) (Span, error) {
	if _, err := checkBody(body); err != nil {
		return Span{}, err
	}
	var j wire.Span
	if err := json.Unmarshal(body, &j); err != nil {
		return Span{}, bad(ReasonInvalidField, "span: %v", err)
	}
	if checkHex(j.TraceID, 32) != nil || checkHex(j.SpanID, 16) != nil {
		return Span{}, bad(ReasonInvalidField, "span needs a 32-hex-digit trace_id and a 16-hex-digit span_id")
	}
	if j.ParentSpanID != "" && checkHex(j.ParentSpanID, 16) != nil {
		return Span{}, bad(ReasonInvalidField, "parent_span_id must be 16 hex digits")
	}
	if j.Name == "" || j.StartTime.IsZero() {
		return Span{}, bad(ReasonInvalidField, "span needs a name and a start_time")
	}
	d := j.DurationNs
	if d == 0 && !j.EndTime.IsZero() {
		if j.EndTime.Before(j.StartTime) {
			return Span{}, bad(ReasonInvalidField, "end_time is before start_time")
		}
		d = uint64(j.EndTime.Sub(j.StartTime))
	}
	s := Span{
		TenantID: m.Tenant, Service: m.Service, Name: j.Name, StartTime: j.StartTime.UTC(),
		TraceID: j.TraceID, SpanID: j.SpanID, ParentSpanID: j.ParentSpanID, Kind: j.Kind, DurationNs: d,
		StatusCode: j.StatusCode, StatusMessage: j.StatusMessage, Attributes: flat(j.Attributes), Resource: flat(j.Resource),
		CorrelationID: m.CorrelationID, RetentionDays: retentionDays,
	}
	if s.Kind == "" {
		s.Kind = "internal"
	}
	if s.StatusCode == "" {
		s.StatusCode = "unset"
	}
	if _, ok := s.Resource["service.name"]; !ok {
		s.Resource["service.name"] = m.Service
	}
	for _, e := range j.Events {
		s.Events = append(s.Events, SpanEvent{Time: e.Time.UTC(), Name: e.Name, Attributes: flat(e.Attributes)})
	}
	return s, nil
}

// SuiteSubject reports whether a message came on the subject the suite's
// own audit records travel on, tenant.{t}.tenantscope._audit: the only
// place the suite's identity (its actor types, its source_service, a
// submitted_by of its choosing) is accepted. Tenants cannot publish there:
// their NATS users are denied tenant.*.tenantscope.> (natsbus), so anything
// on it was published with the suite's own credentials (its API, UI,
// retention, CLI).
func SuiteSubject(s Subject) bool {
	return s.Service == auditlog.SuiteService && s.Action == "_audit"
}

// Submitter names the NATS credentials of a tenant's service for an audit
// record's submitted_by. JetStream does not keep which user of the tenant's
// account published, so it names the account's service user.
func Submitter(t config.Tenant) string {
	if t.NATS.User != "" {
		return "nats:" + t.NATS.User
	}
	return "nats:" + t.ID
}

// DecodeAudit reads an audit record (auditlog.Record as JSON). The tenant is
// the subject's; source_service defaults to the subject's service, time to
// the publish time, correlation_id to the header, and record_id to the
// message's stable id, so a redelivered record is recognised.
//
// A record from a tenant (any subject but SuiteSubject) must pass
// auditlog's CheckSubmitted against its publish time: no time more than 5
// minutes after it or before 2000, none of the suite's actor types or its
// source_service (dead-lettered as reserved_identity), fields within their
// limits; its submitted_by is m.Submitter. The suite's own records keep the
// submitted_by the suite gave them (the API's key), else "tenantscope".
func DecodeAudit(m Meta, body []byte) (auditlog.Record, error) {
	if _, err := checkBody(body); err != nil {
		return auditlog.Record{}, err
	}
	var r auditlog.Record
	if err := json.Unmarshal(body, &r); err != nil {
		return auditlog.Record{}, bad(ReasonInvalidField, "audit record: %v", err)
	}
	if r.TenantID != "" && r.TenantID != m.Tenant {
		return auditlog.Record{}, bad(ReasonTenantMismatch, "audit record tenant_id %q does not match subject tenant %q", r.TenantID, m.Tenant)
	}
	r.TenantID = m.Tenant
	r.Seq, r.PrevHash, r.Hash = 0, "", ""
	if r.SourceService == "" {
		r.SourceService = m.Service
	}
	if r.CorrelationID == "" {
		r.CorrelationID = m.CorrelationID
	}
	if r.Time.IsZero() {
		r.Time = m.Published
	}
	if r.RecordID == uuid.Nil {
		r.RecordID = stableID(m)
	}
	if SuiteSubject(m.Subject) {
		if r.SubmittedBy() == "" {
			r.SetSubmittedBy(auditlog.SuiteService)
		}
	} else {
		now := m.Published
		if now.IsZero() {
			now = time.Now()
		}
		if err := r.CheckSubmitted(now); err != nil {
			reason := ReasonInvalidField
			if errors.Is(err, auditlog.ErrReserved) {
				reason = ReasonReservedIdentity
			}
			return auditlog.Record{}, bad(reason, "audit record: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		who := m.Submitter
		if who == "" {
			who = "nats:" + m.Tenant
		}
		r.SetSubmittedBy(who)
	}
	if err := r.Validate(); err != nil {
		return auditlog.Record{}, bad(ReasonInvalidField, "audit record: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return r, nil
}
