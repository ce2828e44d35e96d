package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/tenantscope/tenantscope/chstore"
)

// Problem is the first thing wrong with a chain.
type Problem struct {
	Seq  uint64 // the first record affected
	What string
}

func (p Problem) String() string { return fmt.Sprintf("record %d: %s", p.Seq, p.What) }

// Report is the result of verifying one tenant's chain.
type Report struct {
	Tenant      string
	Records     uint64 // records checked
	Checkpoints int    // checkpoints checked
	// Purged counts records removed by retention whose hashes remain (the
	// chain verifies from the first record kept).
	Purged uint64
	// Signed is the size of the last signed checkpoint: records after it
	// are protected by the hash chain only until the next checkpoint.
	Signed  uint64
	Problem *Problem
}

// OK reports whether the chain verified.
func (r Report) OK() bool { return r.Problem == nil }

type storedRecord struct {
	TenantID      string            `ch:"tenant_id"`
	Seq           uint64            `ch:"seq"`
	RecordID      uuid.UUID         `ch:"record_id"`
	Time          time.Time         `ch:"time"`
	ActorType     string            `ch:"actor_type"`
	ActorID       string            `ch:"actor_id"`
	ActorName     string            `ch:"actor_name"`
	ActorIP       string            `ch:"actor_ip"`
	UserAgent     string            `ch:"user_agent"`
	Action        string            `ch:"action"`
	TargetType    string            `ch:"target_type"`
	TargetID      string            `ch:"target_id"`
	TargetName    string            `ch:"target_name"`
	Outcome       string            `ch:"outcome"`
	Reason        string            `ch:"reason"`
	SourceService string            `ch:"source_service"`
	CorrelationID string            `ch:"correlation_id"`
	Changes       string            `ch:"changes"`
	Metadata      map[string]string `ch:"metadata"`
	SchemaVersion uint16            `ch:"schema_version"`
	PrevHash      string            `ch:"prev_hash"`
	Hash          string            `ch:"hash"`
}

func (s storedRecord) record() Record {
	return Record{
		TenantID: s.TenantID, Seq: s.Seq, RecordID: s.RecordID, Time: s.Time,
		Actor:  Actor{Type: s.ActorType, ID: s.ActorID, Name: s.ActorName, IP: s.ActorIP, UserAgent: s.UserAgent},
		Action: s.Action, Target: Target{Type: s.TargetType, ID: s.TargetID, Name: s.TargetName},
		Outcome: s.Outcome, Reason: s.Reason, SourceService: s.SourceService, CorrelationID: s.CorrelationID,
		Changes: json.RawMessage(s.Changes), Metadata: s.Metadata, SchemaVersion: s.SchemaVersion,
		PrevHash: s.PrevHash, Hash: s.Hash,
	}
}

// Verify recomputes a tenant's chain from seq `from` (1 for all) and every
// signed checkpoint, and reports the first problem: a record whose contents
// do not match its hash (modified), a missing sequence number (deleted), a
// record that does not link to its predecessor (inserted or reordered), or a
// checkpoint that the records no longer match (history rewritten, even with
// every hash recomputed) or whose signature is not the configured key's.
func Verify(ctx context.Context, st *chstore.Store, tenant string, from uint64, verifierKey string) (Report, error) {
	// Hashes are checked on the other CPUs while the rows are still being
	// read: reading and hashing take about as long as each other.
	type chunk struct {
		at   int // index of the chunk's first record
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
					c.ok[i] = r.Seq < from || r.Purged || r.matchesHash()
				}
				c.recs = nil
				mu.Lock()
				done = append(done, c)
				mu.Unlock()
			}
		}()
	}
	recs, cps, err := load(ctx, st, tenant, func(at int, recs []Record) { chunks <- chunk{at: at, recs: recs} })
	close(chunks)
	wg.Wait()
	if err != nil {
		return Report{Tenant: tenant}, err
	}
	hashOK := make([]bool, len(recs))
	for _, c := range done {
		copy(hashOK[c.at:], c.ok)
	}
	return verifyRecords(tenant, recs, hashOK, cps, from, verifierKey)
}

// loadChunk is how many records Verify hands to a hashing worker at once.
const loadChunk = 4096

// SignedCheckpoint is a stored checkpoint: its size and signed note.
type SignedCheckpoint struct {
	Size uint64 `ch:"size" json:"size"`
	Note string `ch:"note" json:"note"`
}

// Load reads a tenant's chain and checkpoints, in order.
func Load(ctx context.Context, st *chstore.Store, tenant string) ([]Record, []SignedCheckpoint, error) {
	return load(ctx, st, tenant, nil)
}

// load is Load calling chunk (when set) with every loadChunk records read.
func load(ctx context.Context, st *chstore.Store, tenant string, chunk func(at int, recs []Record)) ([]Record, []SignedCheckpoint, error) {
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
	// Positional scans: a chain can be millions of rows, and reflection per
	// row (ScanStruct) was a third of verification's time.
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
			continue // purged, its delete not yet done: its hash stands in for it
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

// VerifyRecords verifies a chain held in memory (from the store, or from an
// export bundle offline): see Verify.
func VerifyRecords(tenant string, recs []Record, cps []SignedCheckpoint, from uint64, verifierKey string) (Report, error) {
	return verifyRecords(tenant, recs, matchAll(recs, from), cps, from, verifierKey)
}

// verifyRecords is VerifyRecords with each record's hash check done.
func verifyRecords(tenant string, recs []Record, hashOK []bool, cps []SignedCheckpoint, from uint64, verifierKey string) (Report, error) {
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

	// Roots of the records as stored, at every checkpoint size.
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
	// Checkpoints: signed by our key, for this tenant, and matching the records.
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

// matchAll checks every record's contents against its hash on all CPUs (the
// checks are independent; links and order are checked in sequence after).
func matchAll(recs []Record, from uint64) []bool {
	ok := make([]bool, len(recs))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(recs)/2048))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(recs); i += workers {
				ok[i] = recs[i].Seq < from || recs[i].Purged || recs[i].matchesHash()
			}
		}()
	}
	wg.Wait()
	return ok
}

// checkpointRoot opens a signed checkpoint note of tenant and size.
func checkpointRoot(signed, tenant string, size uint64, verifierKey string) ([]byte, error) {
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("audit verifier key: %w", err)
	}
	cp, _, _, err := log.ParseCheckpoint([]byte(signed), Origin(tenant), verifier)
	if err != nil {
		return nil, fmt.Errorf("checkpoint does not verify: %w", err)
	}
	if cp.Size != size {
		return nil, fmt.Errorf("checkpoint is for size %d, not %d", cp.Size, size)
	}
	return cp.Hash, nil
}

// RecordStatus is what is known of one record's integrity.
type RecordStatus struct {
	Record Record
	// HashOK: the record's contents match its hash; Linked: its prev_hash
	// is its predecessor's hash.
	HashOK, Linked bool
	// Proof is set when a signed checkpoint covers the record and the
	// inclusion proof verified; ProofErr says why not otherwise.
	Proof    *Inclusion
	ProofErr string
}

// Inspect reads one record and checks its hash, its link and its inclusion
// in the latest signed checkpoint.
func Inspect(ctx context.Context, st *chstore.Store, tenant string, seq uint64, verifierKey string) (RecordStatus, error) {
	var stored []storedRecord
	if err := st.Select(ctx, &stored, "SELECT * EXCEPT (retention_days) FROM audit_records FINAL WHERE tenant_id = ? AND seq IN (?, ?) ORDER BY seq", tenant, seq-1, seq); err != nil {
		return RecordStatus{}, err
	}
	var rs RecordStatus
	prev := GenesisHash
	found := false
	for _, s := range stored {
		if s.Seq == seq {
			rs.Record, found = s.record(), true
		} else if seq > 1 {
			prev = s.Hash
		}
	}
	if !found {
		return rs, fmt.Errorf("record %d of %s: %w", seq, tenant, ErrNotFound)
	}
	rs.HashOK = rs.Record.matchesHash()
	rs.Linked = rs.Record.PrevHash == prev
	p, err := Prove(ctx, st, tenant, seq)
	switch {
	case err != nil:
		rs.ProofErr = err.Error()
	case VerifyInclusion(p, verifierKey) != nil:
		rs.ProofErr = "the inclusion proof does not verify against the signed checkpoint"
	default:
		rs.Proof = &p
	}
	return rs, nil
}

// ErrNotFound is a record that does not exist.
var ErrNotFound = errors.New("not found")
