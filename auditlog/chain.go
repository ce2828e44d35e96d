package auditlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tenantscope/tenantscope/chstore"
)

// Origin is a tenant's checkpoint origin line.
func Origin(tenant string) string { return "tenantscope/audit/" + tenant }

// GenerateKey makes an ed25519 note signer key and its verifier key.
func GenerateKey() (signer, verifier string, err error) {
	return note.GenerateKey(rand.Reader, "tenantscope-audit")
}

// Writer is the one ordered writer of every tenant's chain in this process.
type Writer struct {
	// Seal, when set, encrypts each record's personal actor fields (name,
	// IP, user agent) with its actor's key before the record is hashed: the
	// chain commits to the ciphertext, so destroying the key later leaves it
	// verifiable.
	Seal   Sealer
	stores func(tenant string) (*chstore.Store, error)
	signer note.Signer
	every  int
	// Lease, when set, must be held for Append and Checkpoint to write
	// (several processes may be writers; one at a time holds the lease).
	Lease   *Lease
	mu      sync.Mutex
	tenants map[string]*chainState
	epoch   uint64 // the lease epoch the chain heads in tenants belong to
}

type chainState struct {
	seq   uint64
	hash  string
	tree  *compact.Range
	since int
	// ids of every chained record: a redelivered record is not chained twice.
	ids map[uuid.UUID]struct{}
}

var factory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// NewWriter returns a writer; stores finds a tenant's region store, signerKey
// signs checkpoints, every is the number of records between checkpoints.
func NewWriter(stores func(tenant string) (*chstore.Store, error), signerKey string, every int) (*Writer, error) {
	s, err := note.NewSigner(signerKey)
	if err != nil {
		return nil, fmt.Errorf("audit signer key: %w", err)
	}
	if every <= 0 {
		every = 1000
	}
	return &Writer{stores: stores, signer: s, every: every, tenants: map[string]*chainState{}}, nil
}

func leaf(hash string) ([]byte, error) {
	b, err := hex.DecodeString(hash)
	if err != nil {
		return nil, err
	}
	return rfc6962.DefaultHasher.HashLeaf(b), nil
}

// state loads a tenant's chain head and Merkle range from its store once.
func (w *Writer) state(ctx context.Context, st *chstore.Store, tenant string) (*chainState, error) {
	if cs, ok := w.tenants[tenant]; ok {
		return cs, nil
	}
	rows, err := st.Query(ctx, `SELECT seq, any(hash), any(record_id) FROM (
			SELECT seq, hash, record_id FROM audit_records FINAL WHERE tenant_id = ?
			UNION ALL SELECT seq, hash, toUUID('00000000-0000-0000-0000-000000000000') FROM audit_purged FINAL WHERE tenant_id = ?)
		GROUP BY seq ORDER BY seq`, tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("load audit chain of %s: %w", tenant, err)
	}
	defer rows.Close()
	cs := &chainState{hash: GenesisHash, tree: factory.NewEmptyRange(0), ids: map[uuid.UUID]struct{}{}}
	for rows.Next() {
		var seq uint64
		var hash string
		var id uuid.UUID
		if err := rows.Scan(&seq, &hash, &id); err != nil {
			return nil, err
		}
		cs.ids[id] = struct{}{}
		if seq != cs.seq+1 {
			return nil, fmt.Errorf("audit chain of %s has a gap before seq %d: run 'tenantscope verify --tenant %s'", tenant, seq, tenant)
		}
		l, err := leaf(hash)
		if err != nil {
			return nil, err
		}
		if err := cs.tree.Append(l, nil); err != nil {
			return nil, err
		}
		cs.seq, cs.hash = seq, hash
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	w.tenants[tenant] = cs
	return cs, nil
}

// Append chains and stores records of one tenant, in order, returning them
// with seq, prev_hash and hash set. Nothing is chained unless it is stored.
// A record whose record_id is already in the chain (a redelivery) is skipped.
func (w *Writer) Append(ctx context.Context, tenant string, recs []Record) ([]Record, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel, err := w.fence(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	st, err := w.stores(tenant)
	if err != nil {
		return nil, err
	}
	cs, err := w.state(ctx, st, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(recs))
	seq, prev := cs.seq, cs.hash
	batch := map[uuid.UUID]struct{}{}
	for _, r := range recs {
		if r.TenantID != tenant {
			return nil, fmt.Errorf("record for tenant %q in tenant %q's chain", r.TenantID, tenant)
		}
		if err := r.Validate(); err != nil {
			return nil, err
		}
		if r.RecordID == uuid.Nil {
			r.RecordID = uuid.Must(uuid.NewV7())
		}
		if _, dup := cs.ids[r.RecordID]; dup {
			continue
		}
		if _, dup := batch[r.RecordID]; dup {
			continue
		}
		batch[r.RecordID] = struct{}{}
		if r.Time.IsZero() {
			r.Time = time.Now()
		}
		r.Time = r.Time.UTC().Truncate(time.Millisecond)
		r.SchemaVersion = SchemaVersion
		if w.Seal != nil {
			for _, v := range r.actorPII() {
				if *v == "" {
					continue
				}
				if *v, err = w.Seal(ctx, tenant, r.Actor.ID, *v); err != nil {
					return nil, fmt.Errorf("seal actor fields: %w", err)
				}
			}
		}
		seq++
		r.Seq, r.PrevHash = seq, prev
		// Stored in canonical form, so verification can hash the stored bytes.
		if len(r.Changes) > 0 {
			r.Changes = compactJSON(r.Changes)
		}
		if r.Hash, err = ChainHash(prev, r); err != nil {
			return nil, err
		}
		prev = r.Hash
		out = append(out, r)
	}
	if len(out) == 0 {
		return out, nil
	}
	if err := insert(ctx, st, out); err != nil {
		// Some rows may have landed: read the head again next time.
		delete(w.tenants, tenant)
		return nil, err
	}
	for _, r := range out {
		l, err := leaf(r.Hash)
		if err != nil {
			return nil, err
		}
		if err := cs.tree.Append(l, nil); err != nil {
			return nil, err
		}
		cs.ids[r.RecordID] = struct{}{}
	}
	cs.seq, cs.hash = seq, prev
	cs.since += len(out)
	if cs.since >= w.every {
		if err := w.checkpoint(ctx, st, tenant, cs); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Writing reports whether Append may chain now: no lease is required, or
// this process holds it.
func (w *Writer) Writing() bool {
	if w.Lease == nil {
		return true
	}
	_, _, ok := w.Lease.Held()
	return ok
}

// fence checks the lease (when there is one) and bounds ctx by it. A lease
// gained anew means another writer may have appended: the chain heads are
// read again from the store. Callers hold w.mu.
func (w *Writer) fence(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if w.Lease == nil {
		return ctx, func() {}, nil
	}
	until, epoch, ok := w.Lease.Held()
	if !ok {
		return nil, nil, ErrNotWriter
	}
	if epoch != w.epoch {
		w.tenants = map[string]*chainState{}
		w.epoch = epoch
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	return ctx, cancel, nil
}

// Checkpoint signs and stores a checkpoint of the tenant's chain now.
func (w *Writer) Checkpoint(ctx context.Context, tenant string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel, err := w.fence(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	st, err := w.stores(tenant)
	if err != nil {
		return err
	}
	cs, err := w.state(ctx, st, tenant)
	if err != nil {
		return err
	}
	return w.checkpoint(ctx, st, tenant, cs)
}

func (w *Writer) checkpoint(ctx context.Context, st *chstore.Store, tenant string, cs *chainState) error {
	if cs.seq == 0 {
		return nil
	}
	root, err := cs.tree.GetRootHash(nil)
	if err != nil {
		return err
	}
	cp := log.Checkpoint{Origin: Origin(tenant), Size: cs.seq, Hash: root}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, w.signer)
	if err != nil {
		return fmt.Errorf("sign checkpoint: %w", err)
	}
	if err := st.Exec(ctx, "INSERT INTO audit_checkpoints (tenant_id, size, root_hash, note) VALUES (?, ?, ?, ?)",
		tenant, cs.seq, hex.EncodeToString(root), string(signed)); err != nil {
		return fmt.Errorf("store checkpoint: %w", err)
	}
	cs.since = 0
	return nil
}

func insert(ctx context.Context, st *chstore.Store, recs []Record) error {
	b, err := st.PrepareBatch(ctx, "INSERT INTO audit_records (tenant_id, seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent, action, target_type, target_id, target_name, outcome, reason, source_service, correlation_id, changes, metadata, schema_version, prev_hash, hash, retention_days)")
	if err != nil {
		return err
	}
	for _, r := range recs {
		md := r.Metadata
		if md == nil {
			md = map[string]string{}
		}
		if err := b.Append(r.TenantID, r.Seq, r.RecordID, r.Time, r.Actor.Type, r.Actor.ID, r.Actor.Name, r.Actor.IP, r.Actor.UserAgent,
			r.Action, r.Target.Type, r.Target.ID, r.Target.Name, r.Outcome, r.Reason, r.SourceService, r.CorrelationID,
			string(r.Changes), md, r.SchemaVersion, r.PrevHash, r.Hash, uint16(2555)); err != nil {
			return fmt.Errorf("append audit record: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert audit records: %w", err)
	}
	return nil
}
