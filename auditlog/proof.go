package auditlog

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tenantscope/tenantscope/chstore"
)

// Inclusion is a proof that record Seq is in a tenant's chain as committed
// to by the checkpoint of size Size: the RFC 6962 audit path from the
// record's leaf (its chain hash) to the checkpoint's root.
type Inclusion struct {
	Tenant   string   `json:"tenant"`
	Seq      uint64   `json:"seq"`
	Size     uint64   `json:"size"`
	LeafHash string   `json:"leaf_hash"` // the record's chain hash
	Path     []string `json:"path"`      // hex node hashes, leaf to root
	Note     string   `json:"checkpoint"`
}

// Prove builds the inclusion proof of record seq against the tenant's
// latest checkpoint that covers it.
func Prove(ctx context.Context, st *chstore.Store, tenant string, seq uint64) (Inclusion, error) {
	var cps []struct {
		Size uint64 `ch:"size"`
		Note string `ch:"note"`
	}
	if err := st.Select(ctx, &cps, "SELECT size, note FROM audit_checkpoints FINAL WHERE tenant_id = ? AND size >= ? ORDER BY size DESC LIMIT 1", tenant, seq); err != nil {
		return Inclusion{}, err
	}
	if len(cps) == 0 {
		return Inclusion{}, fmt.Errorf("record %d of %s is not covered by a checkpoint yet", seq, tenant)
	}
	size := cps[0].Size
	var rows []struct {
		Hash string `ch:"hash"`
	}
	// Purged records keep their hashes: the tree is the same.
	if err := st.Select(ctx, &rows, `SELECT any(hash) AS hash FROM (
			SELECT seq, hash FROM audit_records FINAL WHERE tenant_id = ? AND seq <= ?
			UNION ALL SELECT seq, hash FROM audit_purged FINAL WHERE tenant_id = ? AND seq <= ?)
		GROUP BY seq ORDER BY seq`, tenant, size, tenant, size); err != nil {
		return Inclusion{}, err
	}
	hashes := make([]string, len(rows))
	for i, r := range rows {
		hashes[i] = r.Hash
	}
	if uint64(len(hashes)) != size || seq == 0 {
		return Inclusion{}, fmt.Errorf("chain of %s has %d records below checkpoint size %d: run verify", tenant, len(hashes), size)
	}
	leaves := make([][]byte, len(hashes))
	for i, h := range hashes {
		l, err := leaf(h)
		if err != nil {
			return Inclusion{}, err
		}
		leaves[i] = l
	}
	path := auditPath(seq-1, leaves)
	out := Inclusion{Tenant: tenant, Seq: seq, Size: size, LeafHash: hashes[seq-1], Note: cps[0].Note}
	for _, p := range path {
		out.Path = append(out.Path, hex.EncodeToString(p))
	}
	return out, nil
}

// auditPath is RFC 6962's PATH(m, D[n]) over leaf hashes.
func auditPath(m uint64, leaves [][]byte) [][]byte {
	n := uint64(len(leaves))
	if n <= 1 {
		return nil
	}
	k := largestPowerOfTwoBelow(n)
	if m < k {
		return append(auditPath(m, leaves[:k]), treeHash(leaves[k:]))
	}
	return append(auditPath(m-k, leaves[k:]), treeHash(leaves[:k]))
}

func treeHash(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := largestPowerOfTwoBelow(uint64(len(leaves)))
	return rfc6962.DefaultHasher.HashChildren(treeHash(leaves[:k]), treeHash(leaves[k:]))
}

func largestPowerOfTwoBelow(n uint64) uint64 {
	k := uint64(1)
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// VerifyInclusion checks a proof offline: the checkpoint note is signed by
// verifierKey for the tenant, and the path leads from the leaf to its root.
func VerifyInclusion(p Inclusion, verifierKey string) error {
	root, err := checkpointRoot(p.Note, p.Tenant, p.Size, verifierKey)
	if err != nil {
		return err
	}
	leafHash, err := leaf(p.LeafHash)
	if err != nil {
		return err
	}
	path := make([][]byte, len(p.Path))
	for i, h := range p.Path {
		if path[i], err = hex.DecodeString(h); err != nil {
			return err
		}
	}
	return proof.VerifyInclusion(rfc6962.DefaultHasher, p.Seq-1, p.Size, leafHash, path, root)
}
