package auditlog_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
)

// writeStoredChain rewrites testdata/stored_chain_v1.json from the current
// writer. Do not: the file is a chain as the writer stored it before the
// verification read path changed (commit 9a19c8c), and it must keep
// verifying as it is. Only a new schema version gets a new file.
var writeStoredChain = flag.Bool("write-stored-chain", false, "rewrite testdata/stored_chain_v1.json (never for v1)")

const storedChainFile = "stored_chain_v1.json"

// storedChain is a tenant's chain as ClickHouse held it: every column of
// audit_records and audit_checkpoints, and the key that signed it.
type storedChain struct {
	Tenant      string             `json:"tenant"`
	VerifierKey string             `json:"verifier_key"`
	Records     []storedChainRow   `json:"records"`
	Checkpoints []storedCheckpoint `json:"checkpoints"`
}

type storedChainRow struct {
	TenantID      string            `ch:"tenant_id" json:"tenant_id"`
	Seq           uint64            `ch:"seq" json:"seq"`
	RecordID      uuid.UUID         `ch:"record_id" json:"record_id"`
	Time          time.Time         `ch:"time" json:"time"`
	ActorType     string            `ch:"actor_type" json:"actor_type"`
	ActorID       string            `ch:"actor_id" json:"actor_id"`
	ActorName     string            `ch:"actor_name" json:"actor_name"`
	ActorIP       string            `ch:"actor_ip" json:"actor_ip"`
	UserAgent     string            `ch:"user_agent" json:"user_agent"`
	Action        string            `ch:"action" json:"action"`
	TargetType    string            `ch:"target_type" json:"target_type"`
	TargetID      string            `ch:"target_id" json:"target_id"`
	TargetName    string            `ch:"target_name" json:"target_name"`
	Outcome       string            `ch:"outcome" json:"outcome"`
	Reason        string            `ch:"reason" json:"reason"`
	SourceService string            `ch:"source_service" json:"source_service"`
	CorrelationID string            `ch:"correlation_id" json:"correlation_id"`
	Changes       string            `ch:"changes" json:"changes"`
	Metadata      map[string]string `ch:"metadata" json:"metadata"`
	SchemaVersion uint16            `ch:"schema_version" json:"schema_version"`
	PrevHash      string            `ch:"prev_hash" json:"prev_hash"`
	Hash          string            `ch:"hash" json:"hash"`
	RetentionDays uint16            `ch:"retention_days" json:"retention_days"`
}

type storedCheckpoint struct {
	TenantID string `ch:"tenant_id" json:"tenant_id"`
	Size     uint64 `ch:"size" json:"size"`
	RootHash string `ch:"root_hash" json:"root_hash"`
	Note     string `ch:"note" json:"note"`
}

// storedChainRecords are the records of the stored chain: what the read
// path must carry byte for byte (unicode, NUL and other control characters,
// U+2028, quotes, strings longer than 127 bytes, empty and missing fields,
// metadata in any order, changes of every JSON shape, the ends of the times
// the column keeps, times before 1970).
func storedChainRecords() []auditlog.Record {
	var recs []auditlog.Record
	for i := 1; i <= 20; i++ {
		recs = append(recs, sample(i))
	}
	odd := []func(r *auditlog.Record){
		func(r *auditlog.Record) {
			r.Actor.Name, r.Reason = "é✓ 漢字 🙂", "\u2028\u2029 \x00\x01\x1f\x7f"
		},
		func(r *auditlog.Record) { r.Actor.UserAgent = strings.Repeat("Mozilla/5.0 ", 40) },
		func(r *auditlog.Record) { r.Reason = strings.Repeat("ü", 20_000) },
		func(r *auditlog.Record) { r.Metadata, r.Changes = nil, nil },
		func(r *auditlog.Record) { r.Metadata = map[string]string{} },
		func(r *auditlog.Record) {
			r.Metadata = map[string]string{"": "empty key", "nul\x00key": "nul\x00val", "Z": "upper", "a": "", "ä": "umlaut", "a b": `"quoted" \back\`}
		},
		func(r *auditlog.Record) { r.Changes = json.RawMessage(`null`) },
		func(r *auditlog.Record) { r.Changes = json.RawMessage(`[]`) },
		func(r *auditlog.Record) { r.Changes = json.RawMessage(`"just a string \u003c\/"`) },
		func(r *auditlog.Record) {
			r.Changes = json.RawMessage(` {"b" : [1, 2.50, "\u003c\/", 1E2, -0, 1.0, 9007199254740993e-5], "a":true, "c": {"z":null,"y":{}}} `)
		},
		func(r *auditlog.Record) { r.Time = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC) },
		func(r *auditlog.Record) { r.Time = time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC) },
		func(r *auditlog.Record) { r.Time = time.Date(2262, 4, 11, 23, 47, 16, 854_000_000, time.UTC) },
		func(r *auditlog.Record) { r.Time = time.Date(2026, 11, 27, 10, 0, 0, 0, time.FixedZone("x", -5*3600)) },
		func(r *auditlog.Record) {
			r.Actor = auditlog.Actor{Type: "api_key", ID: "k-1"}
			r.Target = auditlog.Target{Type: "t", ID: ""}
			r.Outcome, r.Reason, r.CorrelationID = "denied", "no", ""
		},
		func(r *auditlog.Record) { r.Action, r.SourceService, r.Outcome = `a"b\c<>&`, "svc\ttab", "failure" },
	}
	for i, f := range odd {
		r := sample(100 + i)
		f(&r)
		recs = append(recs, r)
	}
	for i := 40; i <= 45; i++ {
		recs = append(recs, sample(i))
	}
	return recs
}

// oldWriterChanges is stored instead of the canonical changes of one record,
// as a writer before stored changes compacted left them: its hash is over the
// canonical form, which verification must then recompute.
const (
	oldWriterSeq     = 7
	oldWriterChanges = "{ \"before\": {\"amount\": 7},\n  \"after\": {\"amount\": 8, \"note\": \"\\u00e9\\u003c\"} }"
)

// A chain stored before the read path of verification changed (the file
// holds every column as ClickHouse kept it) still verifies, record for
// record, and tampering with it is still found where it was.
func TestStoredChainFromBeforeVerifies(t *testing.T) {
	path := filepath.Join("testdata", storedChainFile)
	if *writeStoredChain {
		writeStoredChainFile(t, path)
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var sc storedChain
	require.NoError(t, json.Unmarshal(b, &sc))
	require.Len(t, sc.Records, 42)

	load := func(t *testing.T, mutate func(rows []storedChainRow) []storedChainRow) *chain {
		t.Helper()
		c := newChain(t, 0, 1000)
		var fresh storedChain // a deep copy: mutate may change maps
		require.NoError(t, json.Unmarshal(b, &fresh))
		rows := fresh.Records
		if mutate != nil {
			rows = mutate(rows)
		}
		ctx := context.Background()
		batch, err := c.st.PrepareBatch(ctx, "INSERT INTO audit_records")
		require.NoError(t, err)
		for i := range rows {
			require.NoError(t, batch.AppendStruct(&rows[i]))
		}
		require.NoError(t, batch.Send())
		cb, err := c.st.PrepareBatch(ctx, "INSERT INTO audit_checkpoints (tenant_id, size, root_hash, note)")
		require.NoError(t, err)
		for _, cp := range sc.Checkpoints {
			require.NoError(t, cb.Append(cp.TenantID, cp.Size, cp.RootHash, cp.Note))
		}
		require.NoError(t, cb.Send())
		return c
	}
	verify := func(t *testing.T, c *chain, from uint64) auditlog.Report {
		t.Helper()
		rep, err := auditlog.Verify(context.Background(), c.st, sc.Tenant, from, sc.VerifierKey)
		require.NoError(t, err)
		return rep
	}

	t.Run("intact", func(t *testing.T) {
		c := load(t, nil)
		rep := verify(t, c, 1)
		require.True(t, rep.OK(), "%v", rep.Problem)
		require.Equal(t, uint64(42), rep.Records)
		require.Equal(t, len(sc.Checkpoints), rep.Checkpoints)
		require.Equal(t, uint64(42), rep.Signed)
		rep = verify(t, c, 30)
		require.True(t, rep.OK(), "%v", rep.Problem)
		require.Equal(t, uint64(13), rep.Records)
		// Every record, read back through the store, hashes as stored.
		recs, _, err := auditlog.Load(context.Background(), c.st, sc.Tenant)
		require.NoError(t, err)
		require.Len(t, recs, 42)
		for i, r := range recs {
			require.Equal(t, sc.Records[i].Hash, r.Hash)
			h, err := auditlog.ChainHash(r.PrevHash, r)
			require.NoError(t, err)
			require.Equal(t, r.Hash, h, "record %d", r.Seq)
		}
	})
	for _, tc := range []struct {
		name   string
		mutate func(rows []storedChainRow) []storedChainRow
		seq    uint64
		what   string
	}{
		{"a metadata value", func(rows []storedChainRow) []storedChainRow {
			rows[25].Metadata = map[string]string{"": "empty key", "nul\x00key": "nul\x00val", "Z": "upper", "a": "x", "ä": "umlaut", "a b": `"quoted" \back\`}
			return rows
		}, 26, "modified"},
		{"a metadata entry added", func(rows []storedChainRow) []storedChainRow {
			rows[2].Metadata["zz"] = "added"
			return rows
		}, 3, "modified"},
		{"a long field", func(rows []storedChainRow) []storedChainRow {
			rows[22].Reason = strings.Repeat("ü", 19_999) + "u"
			return rows
		}, 23, "modified"},
		{"a time by a millisecond", func(rows []storedChainRow) []storedChainRow {
			rows[31].Time = rows[31].Time.Add(time.Millisecond)
			return rows
		}, 32, "modified"},
		{"the record id", func(rows []storedChainRow) []storedChainRow {
			rows[40].RecordID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("other"))
			return rows
		}, 41, "modified"},
		{"the old writer's changes", func(rows []storedChainRow) []storedChainRow {
			rows[oldWriterSeq-1].Changes = strings.Replace(rows[oldWriterSeq-1].Changes, "8", "9", 1)
			return rows
		}, oldWriterSeq, "modified"},
		{"the schema version", func(rows []storedChainRow) []storedChainRow {
			rows[0].SchemaVersion = 2
			return rows
		}, 1, "modified"},
		{"a deleted record", func(rows []storedChainRow) []storedChainRow {
			return append(rows[:14:14], rows[15:]...)
		}, 15, "missing"},
		{"a hash that is not hex", func(rows []storedChainRow) []storedChainRow {
			rows[41].Hash = strings.Repeat("z", 64)
			return rows
		}, 42, "modified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := verify(t, load(t, tc.mutate), 1)
			require.NotNil(t, rep.Problem)
			require.Equal(t, tc.seq, rep.Problem.Seq, rep.Problem.String())
			require.Contains(t, rep.Problem.What, tc.what)
		})
	}
}

// writeStoredChainFile chains storedChainRecords with the writer, stores
// one record's changes as an older writer did, and dumps the tables.
func writeStoredChainFile(t *testing.T, path string) {
	ctx := context.Background()
	c := newChain(t, 0, 16)
	recs := storedChainRecords()
	for i := 0; i < len(recs); i += 10 {
		_, err := c.w.Append(ctx, "acme", recs[i:min(i+10, len(recs))])
		require.NoError(t, err)
	}
	require.NoError(t, c.w.Checkpoint(ctx, "acme"))
	require.NoError(t, c.st.Exec(ctx, fmt.Sprintf("ALTER TABLE audit_records UPDATE changes = ? WHERE tenant_id = 'acme' AND seq = %d SETTINGS mutations_sync = 2", oldWriterSeq), oldWriterChanges))
	sc := storedChain{Tenant: "acme", VerifierKey: c.verify}
	require.NoError(t, c.st.Select(ctx, &sc.Records, "SELECT * FROM audit_records FINAL WHERE tenant_id = 'acme' ORDER BY seq"))
	require.NoError(t, c.st.Select(ctx, &sc.Checkpoints, "SELECT tenant_id, size, root_hash, note FROM audit_checkpoints FINAL WHERE tenant_id = 'acme' ORDER BY size"))
	rep := c.check(t)
	require.True(t, rep.OK(), "%v", rep.Problem)
	out, err := json.MarshalIndent(sc, "", " ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(out, '\n'), 0o644))
}
