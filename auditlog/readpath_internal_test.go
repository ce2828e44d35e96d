package auditlog

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// rowBinary writes r as ClickHouse writes rowColumns in RowBinary.
func rowBinary(r Record, meta []metaPair) string {
	var b []byte
	str := func(s string) { b = append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	b = binary.LittleEndian.AppendUint64(b, binary.BigEndian.Uint64(r.RecordID[:8]))
	b = binary.LittleEndian.AppendUint64(b, binary.BigEndian.Uint64(r.RecordID[8:]))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Time.UnixMilli()))
	for _, s := range []string{r.Actor.Type, r.Actor.ID, r.Actor.Name, r.Actor.IP, r.Actor.UserAgent, r.Action, r.Target.Type,
		r.Target.ID, r.Target.Name, r.Outcome, r.Reason, r.SourceService, r.CorrelationID, string(r.Changes)} {
		str(s)
	}
	b = binary.AppendUvarint(b, uint64(len(meta)))
	for _, kv := range meta {
		str(kv.k)
		str(kv.v)
	}
	b = binary.LittleEndian.AppendUint16(b, r.SchemaVersion)
	str(r.PrevHash)
	str(r.Hash)
	return string(b)
}

// parseRow reads what RowBinary holds: any string either parses to a
// record that, written again, reads back the same, or is refused; never a
// panic.
func FuzzParseRow(f *testing.F) {
	r := Record{Seq: 7, RecordID: uuid.MustParse("0193a5c4-1f2e-7d3c-9b8a-112233445566"), Time: time.UnixMilli(-2208988800000).UTC(),
		Actor: Actor{Type: "user", ID: "u", UserAgent: string(make([]byte, 300))}, Action: "a\u2028", Outcome: "success",
		Changes: []byte(`{"a":1}`), SchemaVersion: 1, PrevHash: GenesisHash, Hash: GenesisHash}
	f.Add(rowBinary(r, []metaPair{{"b", "2"}, {"a", "1"}}))
	f.Add(rowBinary(r, nil))
	f.Add("")
	f.Add("\x01\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
	f.Fuzz(func(t *testing.T, row string) {
		var got Record
		meta, changes, _, err := parseRow(row, "acme", &got, nil)
		if err != nil {
			require.ErrorIs(t, err, errRow)
			return
		}
		got.Changes = []byte(changes)
		// Written again (metadata sorted, lengths in their shortest form),
		// it reads back the same.
		again := rowBinary(got, meta)
		var back Record
		meta2, changes2, _, err := parseRow(again, "acme", &back, nil)
		require.NoError(t, err)
		back.Changes = []byte(changes2)
		require.Equal(t, got, back)
		require.Equal(t, meta, meta2)
		require.Equal(t, changes, changes2)
	})
}

// The RFC 6962 leaf and the hash check of the read path agree with leaf
// and chainHash, for any hex the store may hold.
func TestRowHasherAgreesWithChainHash(t *testing.T) {
	r := Record{TenantID: "acme", Seq: 3, RecordID: uuid.MustParse("0193a5c4-1f2e-7d3c-9b8a-112233445566"),
		Time: time.Date(2026, 11, 27, 10, 0, 0, 123_000_000, time.UTC), Actor: Actor{Type: "user", ID: "u-1", Name: "Ann \"A\" <x>"},
		Action: "invoice.updated", Outcome: "success", Changes: []byte(`{"after":{"a":1}}`), Metadata: map[string]string{"z": "1", "a": "\x00"},
		SchemaVersion: 1, PrevHash: GenesisHash}
	var err error
	r.Hash, err = ChainHash(r.PrevHash, r)
	require.NoError(t, err)
	h := &rowHasher{tenant: "acme", from: 1}
	for _, hash := range []string{r.Hash, GenesisHash, "ab", "AB", "abc", "zz", "", "00" + r.Hash} {
		var out [32]byte
		want, werr := leaf(hash)
		ok := h.leaf(hash, &out)
		require.Equal(t, werr == nil, ok, hash)
		if ok {
			require.Equal(t, want, out[:], hash)
		}
	}
	for name, mutate := range map[string]func(r *Record){
		"as chained":      func(*Record) {},
		"hash upper-case": func(r *Record) { r.Hash = string(appendUpper(r.Hash)) },
		"prev upper-case": func(r *Record) { r.PrevHash = string(appendUpper(r.PrevHash)) },
		"prev short":      func(r *Record) { r.PrevHash = r.PrevHash[2:] },
		"prev not hex":    func(r *Record) { r.PrevHash = "zz" + r.PrevHash[2:] },
		"hash short":      func(r *Record) { r.Hash = r.Hash[:62] },
		"action":          func(r *Record) { r.Action = "x" },
		"changes spaced":  func(r *Record) { r.Changes = []byte(`{ "after" : {"a":1} }`) },
		"changes empty":   func(r *Record) { r.Changes = nil },
	} {
		c := r
		mutate(&c)
		row := rowBinary(c, sortedMetadata(nil, c.Metadata))
		p := &page{rows: []string{row}, done: make(chan struct{})}
		h.check(p)
		require.NoError(t, p.err, name)
		require.Equal(t, c.matchesHashV0(), p.checks[0].hashOK, name)
	}
}

func appendUpper(s string) []byte {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}
