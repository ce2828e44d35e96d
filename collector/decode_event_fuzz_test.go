package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// eventHead is the part of a domain event the columns take; decoding into
// it validates the whole body without building a map of every field.
type eventHead struct {
	Time          json.RawMessage `json:"time"`
	Timestamp     json.RawMessage `json:"timestamp"`
	OccurredAt    json.RawMessage `json:"occurred_at"`
	Actor         json.RawMessage `json:"actor"`
	Entity        json.RawMessage `json:"entity"`
	EntityID      json.RawMessage `json:"entity_id"`
	SchemaVersion json.RawMessage `json:"schema_version"`
}

// decodeEventStd is DecodeEvent as it was with encoding/json: the
// reference FuzzDecodeEventSameAsStd holds the fast one to. The whole body is the payload;
// well-known top-level fields (time, actor, entity, schema_version) fill columns.
func decodeEventStd(m Meta, body []byte, retentionDays uint16) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, bad(ReasonInvalidUTF8, "body is not valid UTF-8")
	}
	if !isObject(body) {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object")
	}
	var h eventHead
	if err := json.Unmarshal(body, &h); err != nil {
		return Event{}, bad(ReasonInvalidJSON, "body is not a JSON object: %v", err)
	}
	obj := map[string]any{}
	for k, v := range map[string]json.RawMessage{"time": h.Time, "timestamp": h.Timestamp, "occurred_at": h.OccurredAt} {
		if len(v) > 0 {
			obj[k] = raw(v)
		}
	}
	t, ok, err := timeField(obj, "time", "timestamp", "occurred_at")
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
	if v, ok := raw(h.SchemaVersion).(float64); !fromHeader && ok && v >= 0 && v < 65536 {
		sv = uint16(v)
	}
	entity := str(raw(h.Entity))
	if entity == "" {
		entity = str(raw(h.EntityID))
	}
	traceID, spanID := traceIDs(m.TraceParent)
	return Event{
		TenantID: m.Tenant, Service: m.Service, Action: m.Action, Time: t, EventID: stableID(m),
		Actor: str(raw(h.Actor)), Entity: entity, SchemaVersion: sv, Payload: string(body),
		CorrelationID: m.CorrelationID, TraceID: traceID, SpanID: spanID, RetentionDays: retentionDays,
	}, nil
}

// FuzzDecodeEventSameAsStd: for any body, DecodeEvent (fastjson) and the
// encoding/json decoder it replaced agree: the same row, or a refusal with
// the same reason (but for ambiguousKeys).
func FuzzDecodeEventSameAsStd(f *testing.F) {
	for _, b := range []string{
		`{"time":"2026-11-29T10:00:00.123Z","actor":{"id":"u1","type":"user"},"entity":"o-1","schema_version":3}`,
		`{"timestamp":1764410400123,"actor":"u","entity_id":7,"schema_version":70000}`,
		`{"occurred_at":1764410400,"actor":[1,{"a":2}],"entity":{"name":"n"}}`,
		`{"time":null}`, `{"time":true}`, `{"time":"yesterday"}`, `{"actor":1e400}`, `{"a":"\u00e9\ud83d\ude00"}`,
		`{"a":"\x"}`, "{\"a\":\"\x01\"}", `{"a":1,}`, `{"a":01}`, `[1]`, `{} x`, `{"time":"a","time":"2026-01-01T00:00:00Z"}`,
		`{"actor":{"id":5,"name":"nm"}}`, `{"actor":-0.0}`, `{"actor":1E2}`, `{"entity":""}`, `{"schema_version":-1}`,
	} {
		f.Add([]byte(b))
	}
	m := Meta{Subject: Subject{Tenant: "acme", Service: "s", Action: "a"}, MsgID: "0193a1c0-0000-7000-8000-000000000001"}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gerr := DecodeEvent(m, body, 0)
		want, werr := decodeEventStd(m, body, 0)
		if (gerr == nil) != (werr == nil) {
			if ambiguousKeys(body) {
				return // encoding/json takes a repeated key's last value, fastjson its first
			}
			t.Fatalf("body %q: fast error %v, std error %v", body, gerr, werr)
		}
		if gerr != nil {
			var g, w *DecodeError
			if !errors.As(gerr, &g) || !errors.As(werr, &w) || g.Reason != w.Reason {
				t.Fatalf("body %q: fast error %v, std error %v", body, gerr, werr)
			}
			return
		}
		if got != want && !ambiguousKeys(body) {
			t.Fatalf("body %q:\nfast %+v\nstd  %+v", body, got, want)
		}
	})
}

// ambiguousKeys reports whether a valid body repeats a top-level key
// (encoding/json takes the last, fastjson the first) or spells a column's
// field in another case ("ACtor": encoding/json matches struct fields
// case-insensitively; DecodeEvent, like ClickHouse's JSONExtract, does not).
func ambiguousKeys(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := tok.(string)
		if seen[k] {
			return true
		}
		for _, f := range []string{"time", "timestamp", "occurred_at", "actor", "entity", "entity_id", "schema_version"} {
			if k != f && strings.EqualFold(k, f) {
				return true
			}
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}
