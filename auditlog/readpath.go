package auditlog

// The read path of verification. A chain can hold millions of records, and
// scanning its 22 columns row by row (a string allocated per field, a map
// per record, every Record kept until the end) cost more than hashing them.
// Instead each record is read as one string, its columns in RowBinary
// (formatRowNoNewline('RowBinary', …): lengths and fixed-width integers, no
// text escaping, so the bytes are exactly what is stored), in seq order, in
// one streamed query. The fields are substrings of that string; the
// canonical form is written from them into a reused buffer and hashed
// without further allocation.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tenantscope/tenantscope/chstore"
)

// rowColumns are the columns of audit_records a record's hash covers (all
// but tenant_id, which the query fixes, and retention_days), in the order
// parseRow reads them.
const rowColumns = `seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent, action,
	target_type, target_id, target_name, outcome, reason, source_service, correlation_id, changes, metadata,
	schema_version, prev_hash, hash`

// recordRowsQuery reads a tenant's records after seq `after` as one
// RowBinary string each, in seq order.
const recordRowsQuery = `SELECT formatRowNoNewline('RowBinary', ` + rowColumns + `)
	FROM audit_records FINAL WHERE tenant_id = ? AND seq > ? ORDER BY seq`

// pageSize is how many records a hashing worker takes at once.
const pageSize = 2048

// errRow is a record row that is not the RowBinary recordRowsQuery asks for.
var errRow = errors.New("malformed audit record row")

// parseRow reads a RowBinary row of rowColumns into r (its strings are
// substrings of row) and its metadata into meta, sorted by key (a key stored
// twice keeps the order it was stored in); twice reports such a key.
func parseRow(row string, tenant string, r *Record, meta []metaPair) (_ []metaPair, changes string, twice bool, err error) {
	p := rowReader{s: row}
	r.TenantID = tenant
	r.Seq = p.u64()
	r.RecordID = p.uuid()
	r.Time = time.UnixMilli(int64(p.u64())).UTC()
	r.Actor.Type, r.Actor.ID, r.Actor.Name, r.Actor.IP, r.Actor.UserAgent = p.str(), p.str(), p.str(), p.str(), p.str()
	r.Action, r.Target.Type, r.Target.ID, r.Target.Name = p.str(), p.str(), p.str(), p.str()
	r.Outcome, r.Reason, r.SourceService, r.CorrelationID = p.str(), p.str(), p.str(), p.str()
	changes = p.str()
	n := p.uvarint()
	meta = meta[:0]
	for i := uint64(0); i < n && p.err == nil; i++ {
		meta = append(meta, metaPair{p.str(), p.str()})
	}
	r.SchemaVersion = p.u16()
	r.PrevHash, r.Hash = p.str(), p.str()
	if p.err == nil && p.off != len(p.s) {
		p.err = fmt.Errorf("%d bytes left", len(p.s)-p.off)
	}
	if p.err != nil {
		return meta, "", false, fmt.Errorf("%w: %w", errRow, p.err)
	}
	slices.SortStableFunc(meta, func(a, b metaPair) int { return strings.Compare(a.k, b.k) })
	for i := 1; i < len(meta); i++ {
		twice = twice || meta[i].k == meta[i-1].k
	}
	return meta, changes, twice, nil
}

// rowReader reads RowBinary values from a string; the first error sticks.
type rowReader struct {
	s   string
	off int
	err error
}

func (p *rowReader) take(n uint64) string {
	if p.err != nil {
		return ""
	}
	if n > uint64(len(p.s)-p.off) {
		p.err = fmt.Errorf("value of %d bytes at %d in a row of %d", n, p.off, len(p.s))
		return ""
	}
	v := p.s[p.off : p.off+int(n)]
	p.off += int(n)
	return v
}

func (p *rowReader) u64() uint64 {
	b := p.take(8)
	if len(b) < 8 {
		return 0
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func (p *rowReader) u16() uint16 {
	b := p.take(2)
	if len(b) < 2 {
		return 0
	}
	return uint16(b[0]) | uint16(b[1])<<8
}

// uuid reads ClickHouse's UUID: two little-endian 64-bit halves, the high
// (first) half first.
func (p *rowReader) uuid() uuid.UUID {
	var id uuid.UUID
	b := p.take(16)
	if len(b) < 16 {
		return id
	}
	for i := range 8 {
		id[i], id[8+i] = b[7-i], b[15-i]
	}
	return id
}

func (p *rowReader) uvarint() uint64 {
	if p.err != nil {
		return 0
	}
	var x uint64
	for shift := 0; shift < 64; shift += 7 {
		if p.off >= len(p.s) {
			p.err = fmt.Errorf("length cut at %d", p.off)
			return 0
		}
		c := p.s[p.off]
		p.off++
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
	p.err = fmt.Errorf("length too long at %d", p.off)
	return 0
}

func (p *rowReader) str() string { return p.take(p.uvarint()) }

// rowCheck is what a hashing worker found out about one record.
type rowCheck struct {
	seq            uint64
	prevHash, hash string
	hashOK         bool // contents match the hash (or were not to be checked)
	leafOK         bool // hash is hex; page.leaves holds its Merkle leaf hash
}

// page is pageSize records on their way from the reader through a hashing
// worker to the in-order chain check.
type page struct {
	rows   []string
	checks []rowCheck
	// leaves are the records' Merkle leaf hashes, apart from checks: the
	// compact range keeps some of them, and with them only this array.
	leaves [][sha256.Size]byte
	err    error
	done   chan struct{}
}

// rowHasher checks records' hashes with buffers reused from one to the next.
type rowHasher struct {
	tenant string
	from   uint64
	rec    Record
	meta   []metaPair
	buf    []byte
}

// check parses p's rows and checks each one's hash.
func (h *rowHasher) check(p *page) {
	defer close(p.done)
	p.checks = make([]rowCheck, len(p.rows))
	p.leaves = make([][sha256.Size]byte, len(p.rows))
	for i, row := range p.rows {
		var changes string
		var twice bool
		var err error
		if h.meta, changes, twice, err = parseRow(row, h.tenant, &h.rec, h.meta); err != nil {
			p.err = err
			return
		}
		r := &h.rec
		c := &p.checks[i]
		c.seq, c.prevHash, c.hash = r.Seq, r.PrevHash, r.Hash
		// A metadata key stored twice is not what the writer stored (it
		// writes a map): the record was modified, whatever it hashes to.
		c.hashOK = r.Seq < h.from || !twice && h.matches(changes)
		c.leafOK = h.leaf(r.Hash, &p.leaves[i])
	}
	p.rows = nil
}

// matches reports whether h.rec (with h.meta and the stored changes) hashes
// to its stored hash. As Record.matchesHash: the stored changes first, which
// the writer keeps canonical, then their canonical form.
func (h *rowHasher) matches(changes string) bool {
	if len(changes) == 0 {
		changes = "null"
	}
	return hashes(h, changes) || hashes(h, compactJSON(json.RawMessage(changes)))
}

// hashes reports whether SHA-256(prev_hash bytes ‖ canonical form) written
// as lower-case hex is h.rec's stored hash, as chainHash computes it and
// Record.matchesHash compares it.
func hashes[C ~string | ~[]byte](h *rowHasher, changes C) bool {
	r := &h.rec
	var ok bool
	if h.buf, ok = appendHex(h.buf[:0], r.PrevHash); !ok || len(h.buf) != sha256.Size || len(r.Hash) != 2*sha256.Size {
		return false
	}
	h.buf = appendCanonical(h.buf, r, h.meta, changes)
	sum := sha256.Sum256(h.buf)
	for i, c := range sum {
		if r.Hash[2*i] != hexDigits[c>>4] || r.Hash[2*i+1] != hexDigits[c&0xF] {
			return false
		}
	}
	return true
}

// leaf writes the RFC 6962 leaf hash of a record's hash (hex decoded, as
// leaf does) to out, and reports whether the hash was hex.
func (h *rowHasher) leaf(hash string, out *[sha256.Size]byte) bool {
	h.buf = append(h.buf[:0], rfc6962.RFC6962LeafHashPrefix)
	var ok bool
	if h.buf, ok = appendHex(h.buf, hash); !ok {
		return false
	}
	*out = sha256.Sum256(h.buf)
	return true
}

// appendHex appends the bytes hex-encoded in s, as hex.DecodeString decodes
// them (either case); ok is false where it fails.
func appendHex(b []byte, s string) ([]byte, bool) {
	if len(s)%2 != 0 {
		return b, false
	}
	var src [128]byte // s's bytes without converting s (which would allocate)
	for len(s) > 0 {
		n := copy(src[:], s)
		s = s[n:]
		l := len(b)
		b = slices.Grow(b, n/2)[:l+n/2]
		if _, err := hex.Decode(b[l:], src[:n]); err != nil {
			return b[:l], false
		}
	}
	return b, true
}

// purgedHash is a record removed by retention: its place and hash.
type purgedHash struct {
	seq  uint64
	hash string
}

// readHead reads a tenant's checkpoints and purged records' hashes, both in
// order, in one query: a round trip fewer a tenant against a server over a
// network (in the embedded engine one query costs what the two did, about
// 2.5 ms).
func readHead(ctx context.Context, st *chstore.Store, tenant string) ([]SignedCheckpoint, []purgedHash, error) {
	rows, err := st.Query(ctx, `SELECT kind, n, s FROM (
			SELECT toUInt8(0) AS kind, size AS n, note AS s FROM audit_checkpoints FINAL WHERE tenant_id = ?
			UNION ALL SELECT toUInt8(1), seq, hash FROM audit_purged FINAL WHERE tenant_id = ?)
		ORDER BY kind, n`, tenant, tenant)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoints and purged records of %s: %w", tenant, err)
	}
	defer rows.Close()
	var cps []SignedCheckpoint
	var purged []purgedHash
	for rows.Next() {
		var kind uint8
		var n uint64
		var s string
		if err := rows.Scan(&kind, &n, &s); err != nil {
			return nil, nil, fmt.Errorf("read checkpoints and purged records of %s: %w", tenant, err)
		}
		if kind == 0 {
			cps = append(cps, SignedCheckpoint{Size: n, Note: s})
		} else {
			purged = append(purged, purgedHash{n, s})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints and purged records of %s: %w", tenant, err)
	}
	return cps, purged, nil
}

// streamChain reads a tenant's chain into c in seq order: the purged
// records' hashes (read already), then the records kept. Records before
// from are read as seq and hash only (their contents are not checked).
// Records are hashed by workers on every CPU while the reader reads the
// next ones; c sees them in order. Reading stops at the first problem.
func streamChain(ctx context.Context, st *chstore.Store, tenant string, from uint64, c *chainCheck, purged []purgedHash) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var after uint64
	for _, p := range purged {
		if stop, err := c.add(p.seq, true, "", p.hash, true, nil); stop || err != nil {
			return err
		}
		after = p.seq
	}
	if from > after+1 {
		last, err := streamHashes(ctx, st, c, "audit records of "+tenant,
			"SELECT seq, hash FROM audit_records FINAL WHERE tenant_id = ? AND seq > ? AND seq < ? ORDER BY seq", tenant, after, from)
		if err != nil || c.rep.Problem != nil {
			return err
		}
		after = max(after, last)
	}

	workers := max(1, runtime.GOMAXPROCS(0))
	work := make(chan *page, workers)
	ordered := make(chan *page, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &rowHasher{tenant: tenant, from: from, buf: make([]byte, 0, 1024)}
			for p := range work {
				h.check(p)
			}
		}()
	}
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ordered)
		defer close(work)
		readErr = readPages(ctx, st, tenant, after, func(p *page) bool {
			// To a worker first: every page the chain check waits for is
			// one a worker has.
			for _, ch := range []chan *page{work, ordered} {
				select {
				case ch <- p:
				case <-ctx.Done():
					return false
				}
			}
			return true
		})
	}()
	var checkErr error
	for p := range ordered {
		if checkErr != nil || c.rep.Problem != nil {
			continue // drain while the reader stops
		}
		<-p.done
		if p.err != nil {
			checkErr = fmt.Errorf("read audit records of %s: %w", tenant, p.err)
			cancel()
			continue
		}
		for i, rc := range p.checks {
			var leafHash []byte
			if rc.leafOK {
				leafHash = p.leaves[i][:]
			}
			stop, err := c.add(rc.seq, false, rc.prevHash, rc.hash, rc.hashOK, leafHash)
			if err != nil {
				checkErr = err
			}
			if stop {
				cancel()
				break
			}
		}
	}
	wg.Wait()
	switch {
	case checkErr != nil:
		return checkErr
	case c.rep.Problem != nil:
		return nil // reading was cut short on purpose
	case readErr != nil:
		return fmt.Errorf("read audit records of %s: %w", tenant, readErr)
	}
	return nil
}

// readPages streams the RowBinary rows of a tenant's records after seq
// `after` to emit, pageSize at a time, until emit returns false.
func readPages(ctx context.Context, st *chstore.Store, tenant string, after uint64, emit func(*page) bool) error {
	rows, err := st.Query(ctx, recordRowsQuery, tenant, after)
	if err != nil {
		return err
	}
	defer rows.Close()
	p := &page{rows: make([]string, 0, pageSize), done: make(chan struct{})}
	for rows.Next() {
		var row string
		if err := rows.Scan(&row); err != nil {
			return err
		}
		p.rows = append(p.rows, row)
		if len(p.rows) == pageSize {
			if !emit(p) {
				return ctx.Err()
			}
			p = &page{rows: make([]string, 0, pageSize), done: make(chan struct{})}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(p.rows) > 0 && !emit(p) {
		return ctx.Err()
	}
	return nil
}

// streamHashes adds rows of (seq, hash) of records kept to c in order and
// returns the last seq read.
func streamHashes(ctx context.Context, st *chstore.Store, c *chainCheck, what, query string, args ...any) (uint64, error) {
	rows, err := st.Query(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", what, err)
	}
	defer rows.Close()
	var last uint64
	for rows.Next() {
		var seq uint64
		var hash string
		if err := rows.Scan(&seq, &hash); err != nil {
			return 0, fmt.Errorf("read %s: %w", what, err)
		}
		if stop, err := c.add(seq, false, "", hash, true, nil); stop || err != nil {
			return 0, err
		}
		last = seq
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", what, err)
	}
	return last, nil
}

// Load reads a tenant's chain and checkpoints, in order: the purged records
// (seq and hash), then the records kept.
func Load(ctx context.Context, st *chstore.Store, tenant string) ([]Record, []SignedCheckpoint, error) {
	var recs []Record
	rows, err := st.Query(ctx, "SELECT seq, hash FROM audit_purged FINAL WHERE tenant_id = ? ORDER BY seq", tenant)
	if err != nil {
		return nil, nil, fmt.Errorf("read purged audit records of %s: %w", tenant, err)
	}
	defer rows.Close()
	var after uint64
	for rows.Next() {
		r := Record{TenantID: tenant, Purged: true}
		if err := rows.Scan(&r.Seq, &r.Hash); err != nil {
			return nil, nil, fmt.Errorf("read purged audit records of %s: %w", tenant, err)
		}
		recs, after = append(recs, r), r.Seq
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read purged audit records of %s: %w", tenant, err)
	}
	var meta []metaPair
	var parseErr error
	err = readPages(ctx, st, tenant, after, func(p *page) bool {
		for _, row := range p.rows {
			var r Record
			var changes string
			if meta, changes, _, parseErr = parseRow(row, tenant, &r, meta); parseErr != nil {
				return false
			}
			r.Changes = json.RawMessage(changes)
			r.Metadata = make(map[string]string, len(meta))
			for _, kv := range meta { // a key stored twice: its last value, as a map scan kept it
				r.Metadata[kv.k] = kv.v
			}
			recs = append(recs, r)
		}
		return true
	})
	if err = errors.Join(err, parseErr); err != nil {
		return nil, nil, fmt.Errorf("read audit records of %s: %w", tenant, err)
	}
	var cps []SignedCheckpoint
	if err := st.Select(ctx, &cps, "SELECT size, note FROM audit_checkpoints FINAL WHERE tenant_id = ? ORDER BY size", tenant); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints of %s: %w", tenant, err)
	}
	return recs, cps, nil
}
