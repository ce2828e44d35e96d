package auditlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
)

// The streamed read path reports exactly what the row-by-row one did
// (VerifyV0, the path before it) for chains intact and tampered with in
// every way the store allows, including ways the writer never stores:
// purged prefixes, --from, a metadata key stored twice, a time the column
// keeps but clickhouse-go does not, upper-case hashes, a hash that is not
// hex, checkpoints that do not match.
func TestStreamedVerifyReportsAsBefore(t *testing.T) {
	ctx := context.Background()
	purge := func(c *chain, t *testing.T, upTo int, deleteRecords bool) {
		c.exec(t, fmt.Sprintf("INSERT INTO audit_purged (tenant_id, seq, hash, purged_at, run_id) SELECT tenant_id, seq, hash, now64(3), 'r1' FROM audit_records FINAL WHERE tenant_id = 'acme' AND seq <= %d", upTo))
		if deleteRecords {
			c.exec(t, fmt.Sprintf("DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq <= %d", upTo))
		}
	}
	update := func(c *chain, t *testing.T, seq int, set string) {
		c.exec(t, fmt.Sprintf("ALTER TABLE audit_records UPDATE %s WHERE tenant_id = 'acme' AND seq = %d SETTINGS mutations_sync = 2", set, seq))
	}
	for _, tc := range []struct {
		name   string
		from   uint64
		tamper func(c *chain, t *testing.T)
		other  bool // verify with another key
		ok     bool
		// stronger: the row-by-row path passed the chain, the streamed one
		// finds the record modified.
		stronger bool
	}{
		{name: "intact", ok: true},
		{name: "from 5", from: 5, ok: true},
		{name: "from beyond the end", from: 100, ok: true},
		{name: "modified field", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 5, 5, "'invoice.deleted' AS action") }},
		{name: "modified before from", from: 10, tamper: func(c *chain, t *testing.T) { c.reinsert(t, 5, 5, "'invoice.deleted' AS action") }, ok: true},
		{name: "deleted record", tamper: func(c *chain, t *testing.T) {
			c.exec(t, "DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq = 7")
		}},
		{name: "deleted last record", tamper: func(c *chain, t *testing.T) {
			c.exec(t, "DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq = 30")
		}},
		{name: "inserted record", tamper: func(c *chain, t *testing.T) {
			for s := 30; s >= 10; s-- {
				c.reinsert(t, s, s+1, "")
			}
			c.reinsert(t, 10, 10, "'forged.action' AS action")
		}},
		{name: "swapped records", tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 3, 100, "")
			c.reinsert(t, 4, 3, "")
			c.reinsert(t, 100, 4, "")
			c.exec(t, "DELETE FROM audit_records WHERE tenant_id = 'acme' AND seq = 100")
		}},
		{name: "a record past the end", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 3, 32, "") }},
		{name: "checkpoint with another key", other: true},
		{name: "checkpoint row size changed", tamper: func(c *chain, t *testing.T) {
			c.exec(t, "INSERT INTO audit_checkpoints (tenant_id, size, root_hash, note) SELECT tenant_id, 25, root_hash, note FROM audit_checkpoints FINAL WHERE tenant_id = 'acme' AND size = 30")
		}},
		{name: "purged prefix", tamper: func(c *chain, t *testing.T) { purge(c, t, 6, true) }, ok: true},
		{name: "purged prefix, records not deleted yet", tamper: func(c *chain, t *testing.T) { purge(c, t, 6, false) }, ok: true},
		{name: "purged prefix and from", from: 3, tamper: func(c *chain, t *testing.T) { purge(c, t, 6, true) }, ok: true},
		{name: "purged prefix and from after it", from: 12, tamper: func(c *chain, t *testing.T) { purge(c, t, 6, true) }, ok: true},
		{name: "purged hash changed", tamper: func(c *chain, t *testing.T) {
			purge(c, t, 6, true)
			c.exec(t, "INSERT INTO audit_purged (tenant_id, seq, hash, purged_at, run_id) VALUES ('acme', 4, '"+strings.Repeat("ab", 32)+"', now64(3), 'r2')")
		}},
		{name: "purged hash not hex", tamper: func(c *chain, t *testing.T) {
			purge(c, t, 6, true)
			c.exec(t, "INSERT INTO audit_purged (tenant_id, seq, hash, purged_at, run_id) VALUES ('acme', 4, 'xyz', now64(3), 'r2')")
		}},
		{name: "hash not hex before from", from: 20, tamper: func(c *chain, t *testing.T) { update(c, t, 8, "hash = 'not hex'") }},
		{name: "hash of odd length before from", from: 20, tamper: func(c *chain, t *testing.T) { update(c, t, 8, "hash = concat(hash, 'a')") }},
		{name: "hash upper-case", tamper: func(c *chain, t *testing.T) { update(c, t, 8, "hash = upper(hash)") }},
		{name: "hash upper-case before from", from: 20, tamper: func(c *chain, t *testing.T) {
			update(c, t, 8, "hash = upper(hash)")
			update(c, t, 9, "prev_hash = upper(prev_hash)")
		}, ok: true}, // contents and links before from are not checked; the leaves are the same bytes
		{name: "prev_hash upper-case", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 8, 8, "upper(prev_hash) AS prev_hash") }},
		{name: "prev_hash not hex", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 1, 1, "'zz' AS prev_hash") }},
		// The row-by-row path read metadata into a Go map, which keeps one
		// value of a key stored twice: the stored record (which SQL reads
		// otherwise: metadata['a'] is its first value) passed for what the
		// writer committed to. The writer never stores a key twice; the
		// streamed path calls it modified.
		{name: "metadata key stored twice", stronger: true, tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 9, 9, "CAST((['a', 'unicode', 'z', 'a'], ['first', 'naïve ✓', 'last', 'first']), 'Map(LowCardinality(String), String)') AS metadata")
		}},
		{name: "metadata key stored twice, first value changed", stronger: true, tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 9, 9, "CAST((['a', 'unicode', 'z', 'a'], ['forged', 'naïve ✓', 'last', 'first']), 'Map(LowCardinality(String), String)') AS metadata")
		}},
		{name: "metadata key stored twice, last value changed", tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 9, 9, "CAST((['a', 'unicode', 'z', 'a'], ['first', 'naïve ✓', 'last', 'other']), 'Map(LowCardinality(String), String)') AS metadata")
		}},
		{name: "time after 2262", tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 11, 11, "toDateTime64('2290-01-01 00:00:00', 3, 'UTC') AS time")
		}},
		{name: "changes stored uncompacted", tamper: func(c *chain, t *testing.T) {
			c.reinsert(t, 12, 12, `'{ "after": {"note": "é<", "amount": 13},  "before": {"amount": 12} }' AS changes`)
		}, ok: true},
		{name: "changes emptied", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 12, 12, "'' AS changes") }},
		{name: "schema version", tamper: func(c *chain, t *testing.T) { c.reinsert(t, 13, 13, "toUInt16(2) AS schema_version") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChain(t, 30, 8)
			if tc.tamper != nil {
				tc.tamper(c, t)
			}
			key := c.verify
			if tc.other {
				_, other, err := auditlog.GenerateKey()
				require.NoError(t, err)
				key = other
			}
			from := max(tc.from, 1)
			before, err := auditlog.VerifyV0(ctx, c.st, "acme", from, key)
			require.NoError(t, err)
			after, err := auditlog.Verify(ctx, c.st, "acme", from, key)
			require.NoError(t, err)
			if tc.stronger {
				require.True(t, before.OK(), "%v", before.Problem)
				require.NotNil(t, after.Problem)
				require.Equal(t, uint64(9), after.Problem.Seq)
				require.Contains(t, after.Problem.What, "modified")
				return
			}
			require.Equal(t, before, after)
			require.Equal(t, tc.ok, after.OK(), "%v", after.Problem)
			// Load reads what the row-by-row scan read.
			recs, cps, err := auditlog.Load(ctx, c.st, "acme")
			require.NoError(t, err)
			recsV0, cpsV0, err := auditlog.LoadV0(ctx, c.st, "acme")
			require.NoError(t, err)
			require.Equal(t, cpsV0, cps)
			require.Equal(t, len(recsV0), len(recs))
			for i := range recs {
				require.True(t, recs[i].Time.Equal(recsV0[i].Time) || recsV0[i].Time.Year() < 1900, "record %d: %s vs %s", recs[i].Seq, recs[i].Time, recsV0[i].Time)
				recsV0[i].Time = recs[i].Time // clickhouse-go wraps times after 2262
				require.Equal(t, recsV0[i], recs[i])
			}
		})
	}
}

// Every record of the stored chain reads back through Load as the
// row-by-row scan read it, and hashes to what is stored.
func TestLoadReadsTheStoredChainAsBefore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", storedChainFile))
	require.NoError(t, err)
	var sc storedChain
	require.NoError(t, json.Unmarshal(b, &sc))
	c := newChain(t, 0, 1000)
	ctx := context.Background()
	batch, err := c.st.PrepareBatch(ctx, "INSERT INTO audit_records")
	require.NoError(t, err)
	for i := range sc.Records {
		require.NoError(t, batch.AppendStruct(&sc.Records[i]))
	}
	require.NoError(t, batch.Send())
	recs, _, err := auditlog.Load(ctx, c.st, sc.Tenant)
	require.NoError(t, err)
	recsV0, _, err := auditlog.LoadV0(ctx, c.st, sc.Tenant)
	require.NoError(t, err)
	require.Equal(t, recsV0, recs)
	for _, r := range recs {
		require.Equal(t, auditlog.CanonicalV0(r), string(r.Canonical()))
	}
}

// Across pages (the streamed path hashes 2,048 records at a time), a
// problem is found at the same record as before, reading stops there, and
// every goroutine of the read path has ended when Verify returns.
func TestStreamedVerifyAcrossPages(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 0, 1000)
	const total = 5000
	for start := 0; start < total; start += 1000 {
		recs := make([]auditlog.Record, 1000)
		for i := range recs {
			recs[i] = sample(start + i)
		}
		_, err := c.w.Append(ctx, "acme", recs)
		require.NoError(t, err)
	}
	rep, err := auditlog.Verify(ctx, c.st, "acme", 1, c.verify)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.Equal(t, uint64(total), rep.Records)
	require.Equal(t, 5, rep.Checkpoints)
	require.Equal(t, uint64(total), rep.Signed)
	for _, seq := range []int{1, 2047, 2048, 2049, 4096, 4097, total} {
		c.exec(t, fmt.Sprintf("ALTER TABLE audit_records UPDATE action = 'forged' WHERE tenant_id = 'acme' AND seq = %d SETTINGS mutations_sync = 2", seq))
		for _, from := range []uint64{1, 2049} {
			before, err := auditlog.VerifyV0(ctx, c.st, "acme", from, c.verify)
			require.NoError(t, err)
			after, err := auditlog.Verify(ctx, c.st, "acme", from, c.verify)
			require.NoError(t, err)
			require.Equal(t, before, after, "seq %d from %d", seq, from)
			if uint64(seq) >= from {
				require.NotNil(t, after.Problem)
				require.Equal(t, uint64(seq), after.Problem.Seq)
			} else {
				require.True(t, after.OK(), "%v", after.Problem)
			}
		}
		c.exec(t, fmt.Sprintf("ALTER TABLE audit_records UPDATE action = 'invoice.updated' WHERE tenant_id = 'acme' AND seq = %d SETTINGS mutations_sync = 2", seq))
	}
	// No goroutine of the read path outlives Verify.
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	require.NotContains(t, stacks, "auditlog.streamChain")
	require.NotContains(t, stacks, "auditlog.Verify")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = auditlog.Verify(cctx, c.st, "acme", 1, c.verify)
	require.ErrorIs(t, err, context.Canceled)
}

// VerifyEach verifies several chains at once and reports them in order;
// the first error, of Verify or of report, ends it.
func TestVerifyEachReportsInOrder(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 12, 5)
	tenants := []string{"acme", "globex", "initech", "umbrella", "hooli"}
	for _, tn := range tenants[1:] {
		recs := make([]auditlog.Record, 7)
		for i := range recs {
			recs[i] = sample(i)
			recs[i].TenantID = tn
		}
		_, err := c.w.Append(ctx, tn, recs)
		require.NoError(t, err)
	}
	c.exec(t, "ALTER TABLE audit_records UPDATE action = 'forged' WHERE tenant_id = 'initech' AND seq = 4 SETTINGS mutations_sync = 2")
	chain := func(i int) (*chstore.Store, string) { return c.st, tenants[i] }
	var got []string
	require.NoError(t, auditlog.VerifyEach(ctx, len(tenants), chain, 1, c.verify, func(i int, rep auditlog.Report) error {
		require.Equal(t, tenants[i], rep.Tenant)
		got = append(got, fmt.Sprintf("%s %d %v", rep.Tenant, rep.Records, rep.Problem))
		return nil
	}))
	require.Equal(t, []string{"acme 12 <nil>", "globex 7 <nil>", "initech 4 record 4: contents do not match its hash (modified after it was written)",
		"umbrella 7 <nil>", "hooli 7 <nil>"}, got)

	stop := errors.New("stop")
	got = nil
	err := auditlog.VerifyEach(ctx, len(tenants), chain, 1, c.verify, func(i int, rep auditlog.Report) error {
		got = append(got, rep.Tenant)
		if !rep.OK() {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []string{"acme", "globex", "initech"}, got)

	err = auditlog.VerifyEach(ctx, len(tenants), chain, 1, "not a key", func(int, auditlog.Report) error { return nil })
	require.ErrorContains(t, err, "audit verifier key")
	require.NoError(t, auditlog.VerifyEach(ctx, 0, chain, 1, c.verify, nil))
}
