package collector

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/wire"
)

func meta() Meta {
	return Meta{Subject: Subject{Tenant: "acme", Service: "orders", Action: "order_created"}, StreamSeq: 7,
		Published: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}
}

func reason(t *testing.T, err error) Reason {
	t.Helper()
	var de *DecodeError
	require.True(t, errors.As(err, &de), "want a DecodeError, got %v", err)
	return de.Reason
}

func TestParseSubject(t *testing.T) {
	s, err := ParseSubject("tenant.acme.orders.order_created")
	require.NoError(t, err)
	require.Equal(t, Subject{"acme", "orders", "order_created"}, s)
	for _, bad := range []string{"tenant.acme.orders", "tenant.acme.orders.a.b", "events.acme.orders.x", "tenant..orders.x"} {
		_, err := ParseSubject(bad)
		require.Equal(t, ReasonBadSubject, reason(t, err), bad)
	}
}

func TestDecodeEvent(t *testing.T) {
	e, err := DecodeEvent(meta(), []byte(`{"time":"2026-11-01T12:00:00.5Z","actor":{"id":"u1","type":"user"},"entity_id":"o-9","schema_version":3,"x":1}`), 90)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 1, 12, 0, 0, 5e8, time.UTC), e.Time)
	require.Equal(t, "u1", e.Actor)
	require.Equal(t, "o-9", e.Entity)
	require.Equal(t, uint16(3), e.SchemaVersion)
	require.Equal(t, "0123456789abcdef0123456789abcdef", e.TraceID)
	require.Equal(t, uint16(90), e.RetentionDays)
	again, err := DecodeEvent(meta(), []byte(`{}`), 90)
	require.NoError(t, err)
	require.Equal(t, e.EventID, again.EventID, "the id is stable across redeliveries")
	require.Equal(t, meta().Published, again.Time, "no time field: the publish time")

	cases := map[string]Reason{`{not json`: ReasonInvalidJSON, "\xff": ReasonInvalidUTF8, `[1,2]`: ReasonInvalidJSON, `null`: ReasonInvalidJSON, `{"time":"yesterday"}`: ReasonInvalidField}
	for body, want := range cases {
		_, err := DecodeEvent(meta(), []byte(body), 90)
		require.Equal(t, want, reason(t, err), body)
	}
}

func TestDecodeLogAndSpan(t *testing.T) {
	l, err := DecodeLog(meta(), []byte(`{"level":"warn","time":1764237600123,"message":"slow","duration_ms":42,"user":{"id":"u"}}`), 30)
	require.NoError(t, err)
	require.Equal(t, "warn", l.SeverityText)
	require.Equal(t, uint8(13), l.SeverityNumber)
	require.Equal(t, "slow", l.Body)
	require.Equal(t, "42", l.Attributes["duration_ms"])
	require.Equal(t, "u", l.Attributes["user"])
	require.Equal(t, int64(1764237600123), l.Time.UnixMilli())

	sp, err := DecodeSpan(meta(), []byte(`{"trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","name":"GET /x","start_time":"2026-11-27T10:00:00Z","end_time":"2026-11-27T10:00:00.25Z","attributes":{"n":1},"events":[{"time":"2026-11-27T10:00:00.1Z","name":"retry"}]}`), 14)
	require.NoError(t, err)
	require.Equal(t, uint64(250*time.Millisecond), sp.DurationNs)
	require.Equal(t, "internal", sp.Kind)
	require.Equal(t, "1", sp.Attributes["n"])
	require.Len(t, sp.Events, 1)
	for _, body := range []string{`{"trace_id":"x","span_id":"0123456789abcdef","name":"a","start_time":"2026-11-27T10:00:00Z"}`,
		`{"trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","name":"a"}`,
		`{"trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","name":"a","start_time":"2026-11-27T10:00:00Z","end_time":"2026-11-27T09:00:00Z"}`} {
		_, err := DecodeSpan(meta(), []byte(body), 14)
		require.Equal(t, ReasonInvalidField, reason(t, err), body)
	}
	_, err = SignalOf("_bogus")
	require.Equal(t, ReasonUnknownAction, reason(t, err))
}

// FuzzDecoders feeds arbitrary bodies to every decoder: each either returns
// a row or a DecodeError with a reason, never panics, and never stores text
// that is not valid UTF-8.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{`{}`, `{"time":1}`, `{"time":"2026-11-27T10:00:00Z","actor":{"id":1}}`, `{"level":"x","message":[1]}`,
		`{"trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","name":"a","start_time":"2026-11-27T10:00:00Z","events":[{}]}`, "\xff", `{"a":"\u0000"}`} {
		f.Add([]byte(s), "order_created")
	}
	f.Fuzz(func(t *testing.T, body []byte, action string) {
		m := meta()
		m.Action = action
		check := func(err error, texts ...string) {
			if err != nil {
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason == "" {
					t.Fatalf("not a DecodeError: %v", err)
				}
				return
			}
			for _, s := range texts {
				if !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 stored: %q", s)
				}
			}
		}
		e, err := DecodeEvent(m, body, 1)
		check(err, e.Payload, e.Actor, e.Entity)
		l, err := DecodeLog(m, body, 1)
		check(err, l.Body)
		sp, err := DecodeSpan(m, body, 1)
		check(err, sp.Name, sp.StatusMessage)
		if _, err := ParseSubject("tenant.acme.orders." + action); err == nil && strings.Contains(action, ".") {
			t.Fatal("a dot in the action must not parse as four tokens")
		}
	})
}

// BenchmarkDecodeEvent decodes the payload bench ingest publishes.
func BenchmarkDecodeEvent(b *testing.B) {
	body := []byte(`{"time":"2026-11-29T10:00:00.123456789Z","actor":{"id":"user-7","type":"user"},"entity":"order-7","amount":7.07,"currency":"EUR","items":[{"sku":"A-7","qty":1}],"note":"` + strings.Repeat("x", 120) + `"}`)
	m := Meta{Subject: Subject{Tenant: "acme", Service: "orders", Action: "order_created"}, MsgID: "0193a1c0-0000-7000-8000-000000000001"}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEvent(m, body, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventBatch decodes a batch of 512 events of the payload
// bench ingest publishes, as the SDK sends them (no redaction, no
// encryption, fixed retention).
// TestShredEventCopiesOnlyAChangedPayload holds eventRow to what the
// shredder answers: a changed payload is stored, and a payload that comes
// back as it went costs no allocation more than with no shredder at all
// (it used to be copied twice more, about 580 bytes an event).
func TestShredEventCopiesOnlyAChangedPayload(t *testing.T) {
	payload := []byte(`{"actor":"user-7","email":"a@example.com","note":"` + strings.Repeat("x", 120) + `"}`)
	m := Meta{Subject: Subject{Tenant: "acme", Service: "orders", Action: "order_created"}}
	service := func(shred func(ctx context.Context, tenant, actor string, payload []byte) ([]byte, error)) *Service {
		s := &Service{redactors: map[string]*Redactor{}}
		s.cfg.defaults()
		s.cfg.ShredEvent = shred
		return s
	}
	unchanged := service(func(_ context.Context, _, _ string, p []byte) ([]byte, error) { return p, nil })
	ev, err := unchanged.eventRow(m, payload)
	require.NoError(t, err)
	require.Equal(t, string(payload), ev.Payload)

	sealed := `{"actor":"user-7","email":"tsenc:v1:sealed"}`
	changed := service(func(_ context.Context, tenant, actor string, p []byte) ([]byte, error) {
		require.Equal(t, "acme", tenant)
		require.Equal(t, "user-7", actor)
		require.Equal(t, string(payload), string(p))
		return []byte(sealed), nil
	})
	ev, err = changed.eventRow(m, payload)
	require.NoError(t, err)
	require.Equal(t, sealed, ev.Payload)

	bare := service(nil)
	allocs := func(s *Service) float64 {
		return testing.AllocsPerRun(100, func() {
			if _, err := s.eventRow(m, payload); err != nil {
				t.Fatal(err)
			}
		})
	}
	require.Equal(t, allocs(bare), allocs(unchanged), "an unchanged payload is not copied again")
}

func BenchmarkDecodeEventBatch(b *testing.B) {
	payload := []byte(`{"time":"2026-11-29T10:00:00.123456789Z","actor":{"id":"user-7","type":"user"},"entity":"order-7","amount":7.07,"currency":"EUR","items":[{"sku":"A-7","qty":1}],"note":"` + strings.Repeat("x", 120) + `"}`)
	var body []byte
	for i := range 512 {
		body = wire.AppendEvent(body, wire.Event{ID: [16]byte{byte(i), byte(i >> 8), 1}, Action: "order_created", Payload: payload})
	}
	for _, bc := range []struct {
		name  string
		shred func(ctx context.Context, tenant, actor string, payload []byte) ([]byte, error)
	}{
		{"bare", nil},
		// serve sets ShredEvent; a tenant without personal fields gets its
		// payload back as it went (retention.Shredder.Event).
		{"as-serve", func(_ context.Context, _, _ string, payload []byte) ([]byte, error) { return payload, nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := &Service{redactors: map[string]*Redactor{}}
			s.cfg.defaults()
			s.cfg.ShredEvent = bc.shred
			m := Meta{Subject: Subject{Tenant: "acme", Service: "orders", Action: wire.ActionEvents}}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := s.decodeEventBatch(m, body, 512)
				if err != nil || len(r.events) != 512 {
					b.Fatal(len(r.events), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/event")
		})
	}
}

// FuzzTraceIDsAsSplit holds traceIDs (strings.Cut, no allocation) to the
// strings.Split reading it replaced.
func FuzzTraceIDsAsSplit(f *testing.F) {
	for _, s := range []string{"", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", "---", "a-b-c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tp string) {
		var want [2]string
		if parts := strings.Split(tp, "-"); len(parts) == 4 && len(parts[1]) == 32 && len(parts[2]) == 16 {
			want = [2]string{parts[1], parts[2]}
		}
		if tr, sp := traceIDs(tp); [2]string{tr, sp} != want {
			t.Fatalf("%q: %q %q, Split gives %q", tp, tr, sp, want)
		}
	})
}
