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
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/chstore/chstoretest"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestMain(m *testing.M) { enginetest.Main(m) }

func sample(i int) auditlog.Record {
	return auditlog.Record{
		TenantID: "acme", RecordID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))),
		Time:   time.Date(2026, 11, 27, 10, 0, i, 123_456_789, time.UTC),
		Actor:  auditlog.Actor{Type: "user", ID: fmt.Sprintf("u-%d", i), Name: "Ann <admin> & co", IP: "10.0.0.1", UserAgent: "curl/8"},
		Action: "invoice.updated", Target: auditlog.Target{Type: "invoice", ID: fmt.Sprintf("inv-%d", i), Name: "Invoice"},
		Outcome: "success", SourceService: "billing", CorrelationID: "corr-1",
		Changes:  json.RawMessage(fmt.Sprintf(`{ "before": {"amount": %d}, "after": {"amount": %d, "note": "\u00e9\u003c"} }`, i, i+1)),
		Metadata: map[string]string{"z": "last", "a": "first", "unicode": "naïve ✓"},
	}
}

// The canonical form is pinned by golden vectors: the canonical bytes and
// chain hashes of three records from the genesis hash.
func TestCanonicalGoldenVectors(t *testing.T) {
	prev := auditlog.GenesisHash
	var got strings.Builder
	for i := 1; i <= 3; i++ {
		r := sample(i)
		r.Seq, r.SchemaVersion = uint64(i), auditlog.SchemaVersion
		h, err := auditlog.ChainHash(prev, r)
		require.NoError(t, err)
		fmt.Fprintf(&got, "%s\n%s\n", r.Canonical(), h)
		prev = h
	}
	path := filepath.Join("testdata", "canonical_v1.golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got.String()), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), got.String())
	// Semantically equal inputs give the same bytes.
	a, b := sample(1), sample(1)
	b.Changes = json.RawMessage(`{"after":{"note":"é<","amount":2},"before":{"amount":1}}`)
	b.Time = a.Time.In(time.FixedZone("x", 3600))
	require.Equal(t, string(a.Canonical()), string(b.Canonical()))
}

type chain struct {
	st     *chstore.Store
	w      *auditlog.Writer
	verify string
}

func newChain(t testing.TB, n, every int) *chain {
	ctx := context.Background()
	st := chstoretest.Migrated(t)
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return st, nil }, skey, every)
	require.NoError(t, err)
	var recs []auditlog.Record
	for i := 1; i <= n; i++ {
		recs = append(recs, sample(i))
	}
	if n > 0 {
		out, err := w.Append(ctx, "acme", recs[:n/2])
		require.NoError(t, err)
		require.Equal(t, uint64(1), out[0].Seq)
		_, err = w.Append(ctx, "acme", recs[n/2:])
		require.NoError(t, err)
		require.NoError(t, w.Checkpoint(ctx, "acme"))
	}
	return &chain{st: st, w: w, verify: vkey}
}

func (c *chain) exec(t *testing.T, sql string) {
	t.Helper()
	require.NoError(t, c.st.Exec(context.Background(), sql))
}

func (c *chain) check(t *testing.T) auditlog.Report {
	t.Helper()
	rep, err := auditlog.Verify(context.Background(), c.st, "acme", 1, c.verify)
	require.NoError(t, err)
	return rep
}

// reinsert copies record `from` as seq `to` with an optional change, the way
// someone with write access to ClickHouse would.
func (c *chain) reinsert(t *testing.T, from, to int, set string) {
	cols := "tenant_id, seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent, action, target_type, target_id, target_name, outcome, reason, source_service, correlation_id, changes, metadata, schema_version, prev_hash, hash, retention_days"
	sel := strings.Replace(cols, "seq,", fmt.Sprintf("toUInt64(%d) AS seq,", to), 1)
	if set != "" {
		sel = strings.Replace(sel, strings.SplitN(set, " AS ", 2)[1]+",", set+",", 1)
	}
	c.exec(t, fmt.Sprintf("INSERT INTO audit_records (%s) SELECT %s FROM (SELECT * FROM audit_records FINAL WHERE tenant_id = 'acme' AND seq = %d)", cols, sel, from))
}

func TestVerifyDetectsAndLocatesTampering(t *testing.T) {
	t.Run("intact", func(t *testing.T) {
		c := newChain(t, 20, 8)
		rep := c.check(t)
		require.True(t, rep.OK(), "%v", rep.Problem)
		require.Equal(t, uint64(20), rep.Records)
		require.Equal(t, 2, rep.Checkpoints) // after each append of 10 (every 8), and the explicit one at 20 replaces the second
	})
	t.Run("modified field", func(t *testing.T) {
		c := newChain(t, 20, 8)
		c.reinsert(t, 5, 5, "'invoice.deleted' AS action")
		rep := c.check(t)
		require.NotNil(t, rep.Problem)
		require.Equal(t, uint64(5), rep.Problem.Seq)
		require.Contains(t, rep.Problem.What, "modified")
	})
	t.Run("deleted record", func(t *testing.T) {
		c := newChain(t, 20, 8)
		c.exec(t, "DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq = 7")
		rep := c.check(t)
		require.NotNil(t, rep.Problem)
		require.Equal(t, uint64(7), rep.Problem.Seq)
		require.Contains(t, rep.Problem.What, "missing")
	})
	t.Run("inserted record", func(t *testing.T) {
		c := newChain(t, 20, 8)
		// Shift 10..20 up by one and put a forged record at 10.
		for s := 20; s >= 10; s-- {
			c.reinsert(t, s, s+1, "")
		}
		c.reinsert(t, 10, 10, "'forged.action' AS action")
		rep := c.check(t)
		require.NotNil(t, rep.Problem)
		require.Contains(t, []uint64{10, 11}, rep.Problem.Seq, rep.Problem.String())
	})
	t.Run("swapped records", func(t *testing.T) {
		c := newChain(t, 20, 8)
		c.reinsert(t, 3, 100, "")
		c.reinsert(t, 4, 3, "")
		c.reinsert(t, 100, 4, "")
		c.exec(t, "DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq = 100")
		rep := c.check(t)
		require.NotNil(t, rep.Problem)
		require.Equal(t, uint64(3), rep.Problem.Seq)
		require.Contains(t, rep.Problem.What, "does not link")
	})
	t.Run("rewritten history with every hash recomputed", func(t *testing.T) {
		c := newChain(t, 20, 8)
		// A forger who knows the scheme edits record 12 and rechains 12..20:
		// the chain verifies, the checkpoint signed at 20 does not.
		var recs []auditlog.Record
		for i := 1; i <= 20; i++ {
			recs = append(recs, sample(i))
		}
		recs[11].Action = "forged.action"
		prev := auditlog.GenesisHash
		var values []string
		for i := range recs {
			r := recs[i]
			r.Seq, r.SchemaVersion, r.PrevHash = uint64(i+1), auditlog.SchemaVersion, prev
			r.Time = r.Time.Truncate(time.Millisecond)
			h, err := auditlog.ChainHash(prev, r)
			require.NoError(t, err)
			prev = h
			if i >= 11 {
				values = append(values, fmt.Sprintf("UPDATE audit_records SET action = '%s', prev_hash = '%s', hash = '%s' WHERE tenant_id = 'acme' AND seq = %d", r.Action, r.PrevHash, h, r.Seq))
			}
		}
		for _, v := range values {
			c.exec(t, strings.Replace(v, "UPDATE audit_records SET", "ALTER TABLE audit_records UPDATE", 1)+" SETTINGS mutations_sync = 2")
		}
		rep := c.check(t)
		require.NotNil(t, rep.Problem)
		require.Equal(t, uint64(11), rep.Problem.Seq, rep.Problem.String())
		require.Contains(t, rep.Problem.What, "records 11..20 do not match the checkpoint signed at size 20")
	})
	t.Run("checkpoint signed by another key", func(t *testing.T) {
		c := newChain(t, 10, 100)
		_, other, err := auditlog.GenerateKey()
		require.NoError(t, err)
		rep, err := auditlog.Verify(context.Background(), c.st, "acme", 1, other)
		require.NoError(t, err)
		require.NotNil(t, rep.Problem)
		require.Contains(t, rep.Problem.What, "does not verify")
	})
}

func TestWriterContinuesTheChainAfterRestart(t *testing.T) {
	c := newChain(t, 6, 100)
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	_ = vkey
	w2, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return c.st, nil }, skey, 100)
	require.NoError(t, err)
	out, err := w2.Append(context.Background(), "acme", []auditlog.Record{sample(7)})
	require.NoError(t, err)
	require.Equal(t, uint64(7), out[0].Seq)
	rep := c.check(t)
	require.True(t, rep.OK(), "%v", rep.Problem)
	_, err = w2.Append(context.Background(), "acme", []auditlog.Record{{TenantID: "acme"}})
	require.ErrorContains(t, err, "action is required")
	old := sample(8)
	old.Time = time.Date(1850, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = w2.Append(context.Background(), "acme", []auditlog.Record{old})
	require.ErrorContains(t, err, "outside what the store keeps")
	// A record without a time gets the time it is chained, and verifies.
	now := sample(9)
	now.Time = time.Time{}
	_, err = w2.Append(context.Background(), "acme", []auditlog.Record{now})
	require.NoError(t, err)
	require.True(t, c.check(t).OK())
}

func TestInclusionProofsVerifyOffline(t *testing.T) {
	c := newChain(t, 21, 100) // one checkpoint at 21: an unbalanced tree
	for _, seq := range []uint64{1, 2, 11, 16, 17, 21} {
		p, err := auditlog.Prove(context.Background(), c.st, "acme", seq)
		require.NoError(t, err)
		require.Equal(t, uint64(21), p.Size)
		require.NoError(t, auditlog.VerifyInclusion(p, c.verify), "seq %d", seq)
		// A proof for other contents fails.
		bad := p
		bad.LeafHash = strings.Repeat("0", 64)
		require.Error(t, auditlog.VerifyInclusion(bad, c.verify))
	}
	_, err := auditlog.Prove(context.Background(), c.st, "acme", 22)
	require.ErrorContains(t, err, "not covered by a checkpoint")
	_, other, err := auditlog.GenerateKey()
	require.NoError(t, err)
	p, err := auditlog.Prove(context.Background(), c.st, "acme", 5)
	require.NoError(t, err)
	require.ErrorContains(t, auditlog.VerifyInclusion(p, other), "does not verify")
}

// appendString (via Canonical) matches encoding/json without HTML escaping
// for any string, including control characters, U+2028 and invalid UTF-8.
func FuzzCanonicalStrings(f *testing.F) {
	for _, s := range []string{"plain", "a\"b\\c", "\x00\x1f\n\r\t", "<>&", "\u2028\u2029", "\xff\xfe", `\u003c`, "é✓"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := auditlog.Record{Action: s}
		var want strings.Builder
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(s))
		require.Contains(t, string(r.Canonical()), `"action":`+strings.TrimSuffix(want.String(), "\n")+`,"target"`)
	})
}
