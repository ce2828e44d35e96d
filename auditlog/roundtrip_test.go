package auditlog_test

import (
	"context"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
)

// The chain writer refuses anything it could not verify later: a time the
// column cannot keep, text that is not UTF-8 (it would hash like other
// text), changes whose numbers or keys the canonical form would not keep.
func TestWriterRefusesWhatItCouldNotVerify(t *testing.T) {
	c := newChain(t, 2, 100)
	ctx := context.Background()
	for name, mutate := range map[string]func(*auditlog.Record){
		"2299":                   func(r *auditlog.Record) { r.Time = time.Date(2299, 12, 31, 0, 0, 0, 0, time.UTC) },
		"after 2262-04-11":       func(r *auditlog.Record) { r.Time = time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC) },
		"before 1900":            func(r *auditlog.Record) { r.Time = time.Date(1899, 12, 31, 23, 59, 59, 0, time.UTC) },
		"invalid UTF-8":          func(r *auditlog.Record) { r.Actor.ID = "ann\xff" },
		"invalid UTF-8 metadata": func(r *auditlog.Record) { r.Metadata = map[string]string{"k\xfe": "v"} },
		"integer too precise":    func(r *auditlog.Record) { r.Changes = json.RawMessage(`{"after":{"n":12345678901234567890}}`) },
		"number out of range":    func(r *auditlog.Record) { r.Changes = json.RawMessage(`{"after":{"n":1e400}}`) },
		"duplicate key":          func(r *auditlog.Record) { r.Changes = json.RawMessage(`{"after":{"role":"admin","role":"viewer"}}`) },
	} {
		r := sample(50)
		mutate(&r)
		_, err := c.w.Append(ctx, "acme", []auditlog.Record{r})
		assert.Error(t, err, name)
	}
	// The ends of what the column keeps round-trip.
	for i, tm := range []time.Time{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2262, 4, 11, 23, 47, 16, 854_000_000, time.UTC)} {
		r := sample(60 + i)
		r.Time = tm
		out, err := c.w.Append(ctx, "acme", []auditlog.Record{r})
		require.NoError(t, err)
		st, err := auditlog.Inspect(ctx, c.st, "acme", out[0].Seq, c.verify)
		require.NoError(t, err)
		require.True(t, st.Record.Time.Equal(tm), "%s stored as %s", tm, st.Record.Time)
	}
	rep := c.check(t)
	require.True(t, rep.OK(), "%v", rep.Problem)
}

// FuzzAuditRoundTrip writes records through the chain writer to the real
// engine, reads each back and checks that what is stored is what was
// written and hashes the same: times (any second, any nanosecond), unicode,
// NUL and other control characters, invalid UTF-8, long strings, metadata
// maps, and changes of any JSON. The writer may refuse a record (Validate);
// whatever it accepts must come back unchanged and verify, also after the
// JSON hop a record takes through NATS. The whole chain is verified at the
// end.
//
//	go test ./auditlog -run '^$' -fuzz FuzzAuditRoundTrip -fuzztime 60s -parallel 1
func FuzzAuditRoundTrip(f *testing.F) {
	seeds := []struct {
		sec, nsec    int64
		a, b, c      string
		key, val     string
		changes      string
		repeat       uint16
		emptyMapping bool
	}{
		{1764237600, 123_456_789, "ann", "Ann <admin> & co", "curl/8", "k", "v", `{"before":{"a":1},"after":{"a":2}}`, 1, false},
		{1764237600, 999_999_999, "é✓ 漢字 🙂", "\u2028\u2029", "\x00\x01\x1f\x7f", "", "", `{"after":{"s":"\u0000 \ud83d\ude42"}}`, 3, true},
		{-2208988800, 0, "1900", "", "", "t", "1900-01-01", `null`, 1, false},
		{9223372036, 854_775_807, "max", "", "", "", "", `[]`, 1, false},
		{10413792000, 0, "2300", "", "", "", "", `{}`, 1, false},
		{10098259200, 0, "2290", "", "", "", "", `{}`, 1, false},
		{946684799, 500_000, "sub-ms", "\xff\xfe", "a\x00b", "nul\x00key", "nul\x00val", `{"n":12345678901234567890}`, 1, false},
		{1764237600, 0, "big", strings.Repeat("x", 300), "y", "k", strings.Repeat("z", 1000), `{"n":1e400,"m":1.0,"o":-0,"p":1E2}`, 500, false},
		{1764237600, 0, "dup", "", "", "a", "b", `{"a":1,"a":2}`, 1, false},
		{1764237600, 0, "ws", "", "", "", "", " {\"b\" : [1, 2.50, \"\\u003c\\/\"], \"a\":true } ", 1, false},
	}
	for _, s := range seeds {
		f.Add(s.sec, s.nsec, s.a, s.b, s.c, s.key, s.val, []byte(s.changes), s.repeat, s.emptyMapping)
	}
	c := newChain(f, 0, 1<<30)
	ctx := context.Background()
	f.Cleanup(func() {
		rep, err := auditlog.Verify(ctx, c.st, "acme", 1, c.verify)
		if err != nil || !rep.OK() {
			f.Errorf("the fuzzed chain does not verify: %v %v", err, rep.Problem)
		}
	})
	f.Fuzz(func(t *testing.T, sec, nsec int64, a, b, cc, key, val string, changes []byte, repeat uint16, emptyMap bool) {
		long := strings.Repeat(b, int(repeat%2048))
		if len(long) > 1<<20 {
			long = long[:1<<20]
		}
		r := auditlog.Record{
			TenantID: "acme", RecordID: uuid.New(), Time: time.Unix(sec, nsec),
			Actor:  auditlog.Actor{Type: a, ID: a, Name: b, IP: cc, UserAgent: long},
			Action: b, Target: auditlog.Target{Type: cc, ID: a + b, Name: cc},
			Outcome: "success", Reason: long, SourceService: cc, CorrelationID: a,
		}
		if r.Actor.Type == "" {
			r.Actor.Type = "user"
		}
		if r.Actor.ID == "" {
			r.Actor.ID = "id"
		}
		if r.Action == "" {
			r.Action = "fuzz"
		}
		if json.Valid(changes) {
			r.Changes = json.RawMessage(changes)
		} else if len(changes) > 0 {
			js, err := json.Marshal(map[string]string{"after": string(changes)})
			require.NoError(t, err)
			r.Changes = js
		}
		switch {
		case emptyMap:
			r.Metadata = map[string]string{}
		case key != "" || val != "":
			r.Metadata = map[string]string{key: val, "other": a}
		}

		// The JSON hop (API body, NATS message) keeps the canonical form of
		// anything the writer accepts.
		if r.Validate() == nil {
			js, err := json.Marshal(r)
			require.NoError(t, err, "a valid record marshals")
			var back auditlog.Record
			require.NoError(t, json.Unmarshal(js, &back))
			require.Equal(t, string(r.Canonical()), string(back.Canonical()), "the JSON hop changes the record")
		}

		out, err := c.w.Append(ctx, "acme", []auditlog.Record{r})
		if err != nil {
			require.Error(t, r.Validate(), "the writer refused a record Validate accepts: %v", err)
			return
		}
		require.Len(t, out, 1)
		w := out[0]
		st, err := auditlog.Inspect(ctx, c.st, "acme", w.Seq, c.verify)
		require.NoError(t, err)
		got := st.Record
		require.True(t, st.HashOK, "stored record %d does not match its hash: wrote %s, read %s", w.Seq, w.Canonical(), got.Canonical())
		require.True(t, st.Linked, "stored record %d does not link", w.Seq)
		require.Equal(t, w.Hash, got.Hash)

		// Stored is what was written, field by field, after the writer's
		// documented normalizations: time to the millisecond, changes compacted.
		if !r.Time.IsZero() {
			require.True(t, got.Time.Equal(r.Time.Truncate(time.Millisecond)), "time %s stored as %s", r.Time.UTC(), got.Time)
		}
		require.Equal(t, r.Actor, got.Actor)
		require.Equal(t, r.Target, got.Target)
		for _, p := range [][2]string{{r.Action, got.Action}, {r.Reason, got.Reason}, {r.SourceService, got.SourceService}, {r.CorrelationID, got.CorrelationID}} {
			require.Equal(t, p[0], p[1])
		}
		if len(r.Metadata) == 0 {
			require.Empty(t, got.Metadata)
		} else {
			require.Equal(t, r.Metadata, got.Metadata)
		}
		if len(r.Changes) == 0 {
			require.Empty(t, got.Changes)
		} else {
			require.Equal(t, exactJSON(t, r.Changes), exactJSON(t, got.Changes), "changes %s stored as %s", r.Changes, got.Changes)
		}
	})
}

// exactJSON decodes JSON keeping every number's exact value (as a rational),
// so that a stored form that rounded a number does not compare equal.
func exactJSON(t *testing.T, raw []byte) any {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), "%s", raw)
	var exact func(any) any
	exact = func(v any) any {
		switch x := v.(type) {
		case json.Number:
			r, ok := new(big.Rat).SetString(x.String())
			require.True(t, ok, "number %s", x)
			return r.RatString()
		case []any:
			for i := range x {
				x[i] = exact(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = exact(x[k])
			}
		}
		return v
	}
	return exact(v)
}
