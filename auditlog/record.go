// Package auditlog keeps each tenant's audit trail as a tamper-evident hash
// chain: one ordered writer per tenant gives every record the next sequence
// number and hash = SHA-256(prev_hash || canonical(record)); signed
// checkpoints (RFC 6962 Merkle roots over the chain hashes, as ed25519-signed
// notes) pin the chain so that even a forger who recomputes every hash is
// caught; Verify recomputes both and names the first bad record.
package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// SchemaVersion is the version of Record and of its canonical form.
const SchemaVersion = 1

// Actor is who did it.
type Actor struct {
	Type      string `json:"type"` // user, api_key, service, system
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Target is what it was done to.
type Target struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Record is one audit record. Seq, PrevHash and Hash are assigned by the
// tenant's writer.
type Record struct {
	TenantID      string            `json:"tenant_id"`
	Seq           uint64            `json:"seq"`
	RecordID      uuid.UUID         `json:"record_id"`
	Time          time.Time         `json:"time"`
	Actor         Actor             `json:"actor"`
	Action        string            `json:"action"`
	Target        Target            `json:"target"`
	Outcome       string            `json:"outcome"` // success, failure, denied
	Reason        string            `json:"reason,omitempty"`
	SourceService string            `json:"source_service"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Changes       json.RawMessage   `json:"changes,omitempty"` // {"before":…, "after":…}
	Metadata      map[string]string `json:"metadata,omitempty"`
	SchemaVersion uint16            `json:"schema_version"`
	PrevHash      string            `json:"prev_hash,omitempty"`
	Hash          string            `json:"hash,omitempty"`
	// Purged marks a record removed by a retention purge: only its Seq and
	// Hash remain (its place in the chain and the Merkle tree).
	Purged bool `json:"purged,omitempty"`
}

// The column keeps DateTime64(3) from 1900 to 2299, and clickhouse-go
// writes it through time.UnixNano, which overflows after 2262-04-11: a time
// outside [MinStoredTime, MaxStoredTime] would come back different (2299 came
// back as 1715) and break the record's hash.
var (
	MinStoredTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxStoredTime = time.Unix(0, math.MaxInt64).UTC().Truncate(time.Millisecond)
)

// Validate checks what a caller must provide, and that the record can be
// stored and verified later: the writer refuses anything Validate refuses.
// Its time must be one the column keeps; every text must be UTF-8 (the
// canonical form writes invalid bytes as U+FFFD, so two different stored
// values would hash the same, and a JSON hop would change them); changes
// must be JSON whose canonical form keeps it exactly (no number that
// float64 rounds or cannot hold, no key twice in an object). Records from
// outside the suite pass CheckSubmitted as well.
func (r Record) Validate() error {
	var errs []error
	if r.TenantID == "" {
		errs = append(errs, errors.New("tenant_id is required"))
	}
	if r.Action == "" {
		errs = append(errs, errors.New("action is required"))
	}
	if r.Actor.Type == "" || r.Actor.ID == "" {
		errs = append(errs, errors.New("actor.type and actor.id are required"))
	}
	switch r.Outcome {
	case "success", "failure", "denied":
	default:
		errs = append(errs, fmt.Errorf("outcome %q is not success, failure or denied", r.Outcome))
	}
	if !r.Time.IsZero() && (r.Time.Before(MinStoredTime) || r.Time.After(MaxStoredTime)) {
		errs = append(errs, fmt.Errorf("time %s is outside what the store keeps (%s to %s)", r.Time.UTC().Format(time.RFC3339Nano),
			MinStoredTime.Format(time.RFC3339), MaxStoredTime.Format(time.RFC3339Nano)))
	}
	for _, f := range r.textFields() {
		if !utf8.ValidString(f.value) {
			errs = append(errs, fmt.Errorf("%s is not valid UTF-8", f.name))
		}
	}
	for k, v := range r.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			errs = append(errs, fmt.Errorf("metadata %q is not valid UTF-8", strings.ToValidUTF8(k, "\ufffd")))
		}
	}
	if len(r.Changes) > 0 {
		if err := exactJSON(r.Changes); err != nil {
			errs = append(errs, fmt.Errorf("changes: %w", err))
		}
	}
	return errors.Join(errs...)
}

type textField struct{ name, value string }

// textFields are a record's text fields and their JSON names.
func (r Record) textFields() []textField {
	return []textField{{"tenant_id", r.TenantID}, {"actor.type", r.Actor.Type}, {"actor.id", r.Actor.ID}, {"actor.name", r.Actor.Name},
		{"actor.ip", r.Actor.IP}, {"actor.user_agent", r.Actor.UserAgent}, {"action", r.Action}, {"target.type", r.Target.Type},
		{"target.id", r.Target.ID}, {"target.name", r.Target.Name}, {"outcome", r.Outcome}, {"reason", r.Reason},
		{"source_service", r.SourceService}, {"correlation_id", r.CorrelationID}}
}

// exactJSON checks that raw is one JSON value that the canonical form
// (compactJSON: decoded into Go values, encoded again) keeps exactly.
func exactJSON(raw []byte) error {
	if !json.Valid(raw) {
		return errors.New("must be JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		object, wantKey bool
		keys            map[string]struct{}
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("must be JSON: %w", err)
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			k, _ := tok.(string)
			if _, dup := stack[n-1].keys[k]; dup {
				return fmt.Errorf("key %q appears twice in one object (only one would be kept)", k)
			}
			stack[n-1].keys[k] = struct{}{}
			stack[n-1].wantKey = false
			continue
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '{':
				stack = append(stack, &frame{object: true, wantKey: true, keys: map[string]struct{}{}})
			case '[':
				stack = append(stack, &frame{})
			default: // ']' ('}' is handled with the keys)
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case json.Number:
			if !exactNumber(string(x)) {
				return fmt.Errorf("the number %s cannot be kept exactly (a float64 rounds it or cannot hold it); send it as a string", clip(string(x), 40))
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// exactNumber reports whether the JSON number n has the same value as the
// float64 that the canonical form writes for it.
func exactNumber(n string) bool {
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return false
	}
	neg, digits, exp, ok := decimalParts(n)
	fneg, fdigits, fexp, fok := decimalParts(strconv.FormatFloat(f, 'e', -1, 64))
	if !ok || !fok || digits != fdigits {
		return false
	}
	return digits == "" || neg == fneg && exp == fexp
}

// decimalParts writes a decimal number as sign, significant digits and
// exponent (value = 0.digits × 10^exp); zero has no digits.
func decimalParts(s string) (neg bool, digits string, exp int, ok bool) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 1<<20 || e < -(1<<20) {
			return false, "", 0, false
		}
		s, exp = s[:i], e
	}
	whole, frac, _ := strings.Cut(s, ".")
	all := whole + frac
	exp += len(whole)
	trimmed := strings.TrimLeft(all, "0")
	exp -= len(all) - len(trimmed)
	digits = strings.TrimRight(trimmed, "0")
	if digits == "" {
		return false, "", 0, true
	}
	return neg, digits, exp, true
}

// clip cuts s to at most n bytes without splitting a character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Canonical is the byte string the chain commits to: a JSON object with a
// fixed key order, no insignificant white space, no HTML escaping, time in
// UTC RFC 3339 with exactly millisecond precision (what is stored), metadata
// keys sorted, changes compacted, PrevHash and Hash left out. The golden
// vectors in testdata/canonical_*.json pin it; changing it is a new
// SchemaVersion.
func (r Record) Canonical() []byte { return r.canonical(compactJSON(r.Changes)) }

// canonical is Canonical with the changes already in canonical form.
func (r Record) canonical(changes []byte) []byte {
	return appendCanonical(make([]byte, 0, 512+len(changes)), &r, sortedMetadata(nil, r.Metadata), changes)
}

// metaPair is one metadata entry.
type metaPair struct{ k, v string }

// sortedMetadata appends m's entries to dst in the canonical order: by key,
// byte by byte (sort.Strings' order).
func sortedMetadata(dst []metaPair, m map[string]string) []metaPair {
	for k, v := range m {
		dst = append(dst, metaPair{k, v})
	}
	slices.SortFunc(dst, func(a, b metaPair) int { return strings.Compare(a.k, b.k) })
	return dst
}

// appendCanonical appends the canonical form of r to b, with meta (r's
// metadata, sorted by key, each key once) and changes (canonical already)
// standing in for r.Metadata and r.Changes. Record.Canonical and the
// verification read path (which reads metadata as stored pairs and changes as
// stored bytes) share it, so both write the same bytes.
func appendCanonical[C ~string | ~[]byte](b []byte, r *Record, meta []metaPair, changes C) []byte {
	b = append(b, `{"v":`...)
	b = strconv.AppendUint(b, uint64(r.SchemaVersion), 10)
	b = append(b, `,"tenant_id":`...)
	b = appendString(b, r.TenantID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"record_id":"`...)
	b = appendUUID(b, r.RecordID)
	b = append(b, `","time":"`...)
	b = r.Time.UTC().Truncate(time.Millisecond).AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","actor":{"type":`...)
	b = appendString(b, r.Actor.Type)
	b = append(b, `,"id":`...)
	b = appendString(b, r.Actor.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, r.Actor.Name)
	b = append(b, `,"ip":`...)
	b = appendString(b, r.Actor.IP)
	b = append(b, `,"user_agent":`...)
	b = appendString(b, r.Actor.UserAgent)
	b = append(b, `},"action":`...)
	b = appendString(b, r.Action)
	b = append(b, `,"target":{"type":`...)
	b = appendString(b, r.Target.Type)
	b = append(b, `,"id":`...)
	b = appendString(b, r.Target.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, r.Target.Name)
	b = append(b, `},"outcome":`...)
	b = appendString(b, r.Outcome)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Reason)
	b = append(b, `,"source_service":`...)
	b = appendString(b, r.SourceService)
	b = append(b, `,"correlation_id":`...)
	b = appendString(b, r.CorrelationID)
	b = append(b, `,"changes":`...)
	b = append(b, changes...)
	b = append(b, `,"metadata":{`...)
	for i, kv := range meta {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, kv.k)
		b = append(b, ':')
		b = appendString(b, kv.v)
	}
	return append(b, "}}"...)
}

// appendUUID appends id as uuid.UUID.String writes it (lower-case hex,
// 8-4-4-4-12).
func appendUUID(b []byte, id uuid.UUID) []byte {
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xF])
	}
	return b
}

func compactJSON(raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return []byte("null")
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return []byte("null")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) //nolint:errcheck // decoded JSON encodes
	return bytes.TrimRight(b.Bytes(), "\n")
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json writes it
// with HTML escaping off: \" \\ \n \r \t \b \f, other control characters
// and U+2028/U+2029 as \u00XX/\u20XX, invalid UTF-8 as \ufffd.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, `\n`...)
			case '\r':
				b = append(b, `\r`...)
			case '\t':
				b = append(b, `\t`...)
			case '\b':
				b = append(b, `\b`...)
			case '\f':
				b = append(b, `\f`...)
			default:
				b = append(b, `\u00`...)
				b = append(b, hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// GenesisHash is the prev_hash of a tenant's first record.
var GenesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// ChainHash is SHA-256(prev_hash bytes || canonical(record)), hex.
func ChainHash(prevHash string, r Record) (string, error) {
	return chainHash(prevHash, r.Canonical())
}

func chainHash(prevHash string, canonical []byte) (string, error) {
	prev, err := hex.DecodeString(prevHash)
	if err != nil || len(prev) != sha256.Size {
		return "", fmt.Errorf("prev_hash %q is not a SHA-256 hex digest", prevHash)
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// matchesHash reports whether r's contents match r.Hash. The writer stores
// changes in canonical form, so the stored bytes are tried first; only when
// they do not match is the canonical form recomputed (a record stored by an
// older writer, or re-serialized by an export). Matching the stored bytes is
// as strong as matching the recomputed ones: either way the hash's pre-image
// is what the writer committed to.
func (r Record) matchesHash() bool {
	changes := []byte(r.Changes)
	if len(changes) == 0 {
		changes = []byte("null")
	}
	if h, err := chainHash(r.PrevHash, r.canonical(changes)); err == nil && h == r.Hash {
		return true
	}
	h, err := ChainHash(r.PrevHash, r)
	return err == nil && h == r.Hash
}
