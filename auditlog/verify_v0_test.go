package auditlog

// The verification read path as it was before the streamed one (commit
// 9a19c8c): every column scanned row by row into Records held in memory,
// the canonical form written through a bytes.Buffer. Kept, in a test file
// only, as the baseline BenchmarkVerify measures the streamed path against
// in the same run, and as the reference the streamed path's reports are
// compared with (TestStreamedVerifyReportsAsBefore).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/tenantscope/tenantscope/chstore"
)

// VerifyV0 is Verify as it was.
var VerifyV0 = verifyV0

func verifyV0(ctx context.Context, st *chstore.Store, tenant string, from uint64, verifierKey string) (Report, error) {
	type chunk struct {
		at   int
		recs []Record
		ok   []bool
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done []chunk
	)
	chunks := make(chan chunk, 4)
	for range max(1, runtime.GOMAXPROCS(0)-1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chunks {
				c.ok = make([]bool, len(c.recs))
				for i, r := range c.recs {
					c.ok[i] = r.Seq < from || r.Purged || r.matchesHashV0()
				}
				c.recs = nil
				mu.Lock()
				done = append(done, c)
				mu.Unlock()
			}
		}()
	}
	recs, cps, err := loadV0(ctx, st, tenant, func(at int, recs []Record) { chunks <- chunk{at: at, recs: recs} })
	close(chunks)
	wg.Wait()
	if err != nil {
		return Report{Tenant: tenant}, err
	}
	hashOK := make([]bool, len(recs))
	for _, c := range done {
		copy(hashOK[c.at:], c.ok)
	}
	return verifyRecordsV0(tenant, recs, hashOK, cps, from, verifierKey)
}

func loadV0(ctx context.Context, st *chstore.Store, tenant string, chunk func(at int, recs []Record)) ([]Record, []SignedCheckpoint, error) {
	var recs []Record
	var purged []struct {
		Seq  uint64 `ch:"seq"`
		Hash string `ch:"hash"`
	}
	if err := st.Select(ctx, &purged, "SELECT seq, hash FROM audit_purged FINAL WHERE tenant_id = ? ORDER BY seq", tenant); err != nil {
		return nil, nil, fmt.Errorf("read purged audit records of %s: %w", tenant, err)
	}
	for _, p := range purged {
		recs = append(recs, Record{TenantID: tenant, Seq: p.Seq, Hash: p.Hash, Purged: true})
	}
	rows, err := st.Query(ctx, `SELECT tenant_id, seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent,
		action, target_type, target_id, target_name, outcome, reason, source_service, correlation_id, changes, metadata,
		schema_version, prev_hash, hash FROM audit_records FINAL WHERE tenant_id = ? ORDER BY seq`, tenant)
	if err != nil {
		return nil, nil, fmt.Errorf("read audit records of %s: %w", tenant, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Record
		var changes string
		if err := rows.Scan(&r.TenantID, &r.Seq, &r.RecordID, &r.Time, &r.Actor.Type, &r.Actor.ID, &r.Actor.Name, &r.Actor.IP, &r.Actor.UserAgent,
			&r.Action, &r.Target.Type, &r.Target.ID, &r.Target.Name, &r.Outcome, &r.Reason, &r.SourceService, &r.CorrelationID,
			&changes, &r.Metadata, &r.SchemaVersion, &r.PrevHash, &r.Hash); err != nil {
			return nil, nil, fmt.Errorf("read audit records of %s: %w", tenant, err)
		}
		r.Changes = json.RawMessage(changes)
		if len(purged) > 0 && r.Seq <= purged[len(purged)-1].Seq {
			continue
		}
		recs = append(recs, r)
		if chunk != nil && len(recs)%loadChunk == 0 {
			chunk(len(recs)-loadChunk, slices.Clone(recs[len(recs)-loadChunk:]))
		}
	}
	if rest := len(recs) % loadChunk; chunk != nil && rest != 0 {
		chunk(len(recs)-rest, slices.Clone(recs[len(recs)-rest:]))
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read audit records of %s: %w", tenant, err)
	}
	var cps []SignedCheckpoint
	if err := st.Select(ctx, &cps, "SELECT size, note FROM audit_checkpoints FINAL WHERE tenant_id = ? ORDER BY size", tenant); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints of %s: %w", tenant, err)
	}
	return recs, cps, nil
}

const loadChunk = 4096

func verifyRecordsV0(tenant string, recs []Record, hashOK []bool, cps []SignedCheckpoint, from uint64, verifierKey string) (Report, error) {
	rep := Report{Tenant: tenant}
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return rep, fmt.Errorf("audit verifier key: %w", err)
	}
	if from == 0 {
		from = 1
	}
	fail := func(seq uint64, format string, a ...any) (Report, error) {
		rep.Problem = &Problem{Seq: seq, What: fmt.Sprintf(format, a...)}
		return rep, nil
	}
	tree := factory.NewEmptyRange(0)
	roots := map[uint64][]byte{}
	wantRoot := map[uint64]bool{}
	for _, c := range cps {
		wantRoot[c.Size] = true
	}
	prev := GenesisHash
	expect := uint64(1)
	for i, r := range recs {
		if r.Seq != expect {
			if r.Seq > expect {
				return fail(expect, "missing: the chain jumps from record %d to %d (deleted)", expect-1, r.Seq)
			}
			return fail(r.Seq, "out of order")
		}
		if r.Purged {
			rep.Purged++
		} else if r.Seq >= from {
			rep.Records++
			if r.PrevHash != prev {
				return fail(r.Seq, "does not link to record %d: prev_hash %.16s… but record %d's hash is %.16s… (a record was inserted, deleted or reordered here)", r.Seq-1, r.PrevHash, r.Seq-1, prev)
			}
			if !hashOK[i] {
				return fail(r.Seq, "contents do not match its hash (modified after it was written)")
			}
		}
		l, err := leaf(r.Hash)
		if err != nil {
			return fail(r.Seq, "hash is not hex: %v", err)
		}
		if err := tree.Append(l, nil); err != nil {
			return rep, err
		}
		if wantRoot[r.Seq] {
			root, err := tree.GetRootHash(nil)
			if err != nil {
				return rep, err
			}
			roots[r.Seq] = root
		}
		prev = r.Hash
		expect++
	}
	last := uint64(0)
	for _, c := range cps {
		rep.Checkpoints++
		cp, _, _, err := log.ParseCheckpoint([]byte(c.Note), Origin(tenant), verifier)
		if err != nil {
			return fail(last+1, "checkpoint at size %d does not verify: %v", c.Size, err)
		}
		if cp.Size != c.Size {
			return fail(last+1, "checkpoint row says size %d but its signed note says %d", c.Size, cp.Size)
		}
		root, ok := roots[c.Size]
		if !ok {
			return fail(expect, "checkpoint at size %d covers records that are missing (only %d exist)", c.Size, expect-1)
		}
		if !bytes.Equal(root, cp.Hash) {
			return fail(last+1, "records %d..%d do not match the checkpoint signed at size %d (history rewritten, hashes recomputed)", last+1, c.Size, c.Size)
		}
		last = c.Size
	}
	rep.Signed = last
	return rep, nil
}

func (r Record) matchesHashV0() bool {
	changes := []byte(r.Changes)
	if len(changes) == 0 {
		changes = []byte("null")
	}
	if h, err := chainHash(r.PrevHash, r.canonicalV0(changes)); err == nil && h == r.Hash {
		return true
	}
	h, err := chainHash(r.PrevHash, r.canonicalV0(compactJSON(r.Changes)))
	return err == nil && h == r.Hash
}

func (r Record) canonicalV0(changes []byte) []byte {
	var b bytes.Buffer
	b.Grow(512 + len(changes))
	str := func(s string) { appendStringV0(&b, s) }
	field := func(name string, first bool) {
		if !first {
			b.WriteByte(',')
		}
		str(name)
		b.WriteByte(':')
	}
	b.WriteByte('{')
	field("v", true)
	b.WriteString(strconv.Itoa(int(r.SchemaVersion)))
	field("tenant_id", false)
	str(r.TenantID)
	field("seq", false)
	b.WriteString(strconv.FormatUint(r.Seq, 10))
	field("record_id", false)
	str(r.RecordID.String())
	field("time", false)
	str(r.Time.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z"))
	field("actor", false)
	b.WriteByte('{')
	field("type", true)
	str(r.Actor.Type)
	for _, kv := range [][2]string{{"id", r.Actor.ID}, {"name", r.Actor.Name}, {"ip", r.Actor.IP}, {"user_agent", r.Actor.UserAgent}} {
		field(kv[0], false)
		str(kv[1])
	}
	b.WriteByte('}')
	field("action", false)
	str(r.Action)
	field("target", false)
	b.WriteByte('{')
	field("type", true)
	str(r.Target.Type)
	field("id", false)
	str(r.Target.ID)
	field("name", false)
	str(r.Target.Name)
	b.WriteByte('}')
	for _, kv := range [][2]string{{"outcome", r.Outcome}, {"reason", r.Reason}, {"source_service", r.SourceService}, {"correlation_id", r.CorrelationID}} {
		field(kv[0], false)
		str(kv[1])
	}
	field("changes", false)
	b.Write(changes)
	field("metadata", false)
	b.WriteByte('{')
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		field(k, i == 0)
		str(r.Metadata[k])
	}
	b.WriteString("}}")
	return b.Bytes()
}

func appendStringV0(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(s[start:i])
			b.WriteString(`\ufffd`)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b.WriteString(s[start:i])
			b.WriteString(`\u202`)
			b.WriteByte(hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// LoadV0 is Load as it was.
func LoadV0(ctx context.Context, st *chstore.Store, tenant string) ([]Record, []SignedCheckpoint, error) {
	return loadV0(ctx, st, tenant, nil)
}

// CanonicalV0 is Record.Canonical as it was.
func CanonicalV0(r Record) string { return string(r.canonicalV0(compactJSON(r.Changes))) }
