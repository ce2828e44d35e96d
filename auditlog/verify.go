package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
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
//
// The chain is streamed (readpath.go): records are read in seq order as one
// RowBinary string each, hashed on every CPU while the next ones are read,
// and linked and folded into the Merkle tree in order; memory does not grow
// with the chain, and reading stops at the first problem.
func Verify(ctx context.Context, st *chstore.Store, tenant string, from uint64, verifierKey string) (Report, error) {
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return Report{Tenant: tenant}, fmt.Errorf("audit verifier key: %w", err)
	}
	if from == 0 {
		from = 1
	}
	// Checkpoints first: the writer stores a checkpoint after the records it
	// covers, so every record a checkpoint read here covers is read below,
	// even while the chain grows.
	cps, purged, err := readHead(ctx, st, tenant)
	if err != nil {
		return Report{Tenant: tenant}, err
	}
	// Their signatures are checked while the records are read.
	var opened []openedCheckpoint
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		opened = openCheckpoints(tenant, cps, verifier)
	}()
	c := newChainCheck(tenant, cps, from)
	err = streamChain(ctx, st, tenant, from, c, purged)
	wg.Wait()
	if err != nil {
		return Report{Tenant: tenant}, err
	}
	if c.rep.Problem == nil {
		c.checkCheckpoints(cps, opened)
	}
	return c.rep, nil
}

// SignedCheckpoint is a stored checkpoint: its size and signed note.
type SignedCheckpoint struct {
	Size uint64 `ch:"size" json:"size"`
	Note string `ch:"note" json:"note"`
}

// VerifyRecords verifies a chain held in memory (from the store, or from an
// export bundle offline): see Verify.
func VerifyRecords(tenant string, recs []Record, cps []SignedCheckpoint, from uint64, verifierKey string) (Report, error) {
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return Report{Tenant: tenant}, fmt.Errorf("audit verifier key: %w", err)
	}
	if from == 0 {
		from = 1
	}
	hashOK := matchAll(recs, from)
	c := newChainCheck(tenant, cps, from)
	for i, r := range recs {
		if stop, err := c.add(r.Seq, r.Purged, r.PrevHash, r.Hash, hashOK[i], nil); stop || err != nil {
			return c.rep, err
		}
	}
	c.checkCheckpoints(cps, openCheckpoints(tenant, cps, verifier))
	return c.rep, nil
}

// chainCheck checks a chain's records in seq order, one at a time, and then
// its checkpoints against the Merkle roots of the records as stored. It
// keeps only the chain's head, its compact Merkle range and the roots at
// checkpoint sizes.
type chainCheck struct {
	rep      Report
	from     uint64
	tree     *compact.Range
	roots    map[uint64][]byte
	wantRoot map[uint64]bool
	prev     string // the hash of the record before expect
	expect   uint64 // the next seq
}

func newChainCheck(tenant string, cps []SignedCheckpoint, from uint64) *chainCheck {
	c := &chainCheck{rep: Report{Tenant: tenant}, from: from, tree: factory.NewEmptyRange(0),
		roots: map[uint64][]byte{}, wantRoot: make(map[uint64]bool, len(cps)), prev: GenesisHash, expect: 1}
	for _, cp := range cps {
		c.wantRoot[cp.Size] = true
	}
	return c
}

func (c *chainCheck) fail(seq uint64, format string, a ...any) {
	c.rep.Problem = &Problem{Seq: seq, What: fmt.Sprintf(format, a...)}
}

// add checks the next record: seq, whether it was purged, its prev_hash and
// hash as stored, whether its contents match its hash (known for records
// from c.from on that were not purged), and its Merkle leaf hash (nil: it
// is computed from hash here). stop is true once a problem is found
// (c.rep.Problem).
func (c *chainCheck) add(seq uint64, purged bool, prevHash, hash string, hashOK bool, leafHash []byte) (stop bool, err error) {
	if seq != c.expect {
		if seq > c.expect {
			c.fail(c.expect, "missing: the chain jumps from record %d to %d (deleted)", c.expect-1, seq)
		} else {
			c.fail(seq, "out of order")
		}
		return true, nil
	}
	if purged {
		c.rep.Purged++
	} else if seq >= c.from {
		c.rep.Records++
		if prevHash != c.prev {
			c.fail(seq, "does not link to record %d: prev_hash %.16s… but record %d's hash is %.16s… (a record was inserted, deleted or reordered here)", seq-1, prevHash, seq-1, c.prev)
			return true, nil
		}
		if !hashOK {
			c.fail(seq, "contents do not match its hash (modified after it was written)")
			return true, nil
		}
	}
	if leafHash == nil {
		l, err := leaf(hash)
		if err != nil {
			c.fail(seq, "hash is not hex: %v", err)
			return true, nil
		}
		leafHash = l
	}
	if err := c.tree.Append(leafHash, nil); err != nil {
		return true, err
	}
	if c.wantRoot[seq] {
		root, err := c.tree.GetRootHash(nil)
		if err != nil {
			return true, err
		}
		c.roots[seq] = root
	}
	c.prev = hash
	c.expect++
	return false, nil
}

// openedCheckpoint is a stored checkpoint's note opened with the verifier
// key: the checkpoint it signs, or why it does not verify.
type openedCheckpoint struct {
	cp  *log.Checkpoint
	err error
}

func openCheckpoints(tenant string, cps []SignedCheckpoint, verifier note.Verifier) []openedCheckpoint {
	out := make([]openedCheckpoint, len(cps))
	for i, c := range cps {
		out[i].cp, _, _, out[i].err = log.ParseCheckpoint([]byte(c.Note), Origin(tenant), verifier)
	}
	return out
}

// checkCheckpoints checks, after every record was added, that each
// checkpoint is signed by the verifier's key for this tenant and matches the
// records' Merkle root at its size.
func (c *chainCheck) checkCheckpoints(cps []SignedCheckpoint, opened []openedCheckpoint) {
	last := uint64(0)
	for i, cp := range cps {
		c.rep.Checkpoints++
		if err := opened[i].err; err != nil {
			c.fail(last+1, "checkpoint at size %d does not verify: %v", cp.Size, err)
			return
		}
		signed := opened[i].cp
		if signed.Size != cp.Size {
			c.fail(last+1, "checkpoint row says size %d but its signed note says %d", cp.Size, signed.Size)
			return
		}
		root, ok := c.roots[cp.Size]
		if !ok {
			c.fail(c.expect, "checkpoint at size %d covers records that are missing (only %d exist)", cp.Size, c.expect-1)
			return
		}
		if !bytes.Equal(root, signed.Hash) {
			c.fail(last+1, "records %d..%d do not match the checkpoint signed at size %d (history rewritten, hashes recomputed)", last+1, cp.Size, cp.Size)
			return
		}
		last = cp.Size
	}
	c.rep.Signed = last
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

// VerifyEach verifies n chains (chain(i) is the i-th one's store and
// tenant) with Verify, a few at a time, and hands each report to report in
// order, 0 first. A tenant's chain is mostly read while the next one's
// queries start: on many small chains, one at a time left the CPUs waiting
// on round trips. It returns the first error in that order, from Verify or
// from report, and then stops the verifications under way.
func VerifyEach(ctx context.Context, n int, chain func(i int) (*chstore.Store, string), from uint64, verifierKey string, report func(i int, rep Report) error) error {
	return verifyEach(ctx, n, chain, from, verifierKey, report, verifyAhead)
}

// verifyAhead is how many chains VerifyEach verifies at once.
const verifyAhead = 2

func verifyEach(ctx context.Context, n int, chain func(i int) (*chstore.Store, string), from uint64, verifierKey string, report func(i int, rep Report) error, ahead int) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: deferred calls run last first
	defer cancel()
	type result struct {
		rep  Report
		err  error
		done chan struct{}
	}
	results := make([]*result, n)
	start := func(i int) {
		r := &result{done: make(chan struct{})}
		results[i] = r
		st, tenant := chain(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(r.done)
			r.rep, r.err = Verify(ctx, st, tenant, from, verifierKey)
		}()
	}
	for i := range min(n, ahead) {
		start(i)
	}
	for i := range n {
		r := results[i]
		<-r.done
		if i+ahead < n {
			start(i + ahead)
		}
		if r.err != nil {
			return r.err
		}
		if err := report(i, r.rep); err != nil {
			return err
		}
	}
	return nil
}
