package retention_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/auditlog/audittest"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/retention"
)

func TestMain(m *testing.M) {
	serveChild() // the test binary may be the other process of a load test
	enginetest.Main(m)
}

type fixture struct {
	p        *collectortest.Pipeline
	st       *chstore.Store
	svc      *retention.Service
	verifier string
	audited  audittest.Recorder
}

var carol = auditlog.Actor{Type: "user", ID: "carol", Name: "compliance"}

func start(t *testing.T, more ...func(*config.Config)) *fixture {
	p := collectortest.Start(t, func(c *config.Config) {
		c.Retention.Identifiers["events"] = []string{"actor", "payload.customer.email"}
		for _, m := range more {
			m(c)
		}
	}, "acme", "globex")
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	f := &fixture{p: p, st: p.Store, verifier: vkey}
	f.svc = retention.New(p.Config, p.Placement, map[string]*chstore.Store{"default": p.Store}, f.audited.Publish, p.JS, skey, zerolog.Nop())
	return f
}

func (f *fixture) count(t *testing.T, q string, args ...any) uint64 {
	t.Helper()
	var n uint64
	require.NoError(t, f.st.QueryRow(context.Background(), []any{&n}, q, args...))
	return n
}

// seed stores n events, logs and spans of tenant, aged days, for actor.
func (f *fixture) seed(t *testing.T, tenant, actor string, n, days int) {
	ctx := context.Background()
	at := time.Now().UTC().Add(-time.Duration(days) * 24 * time.Hour)
	require.NoError(t, f.st.Exec(ctx, `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
		SELECT ?, 'crm', 'updated', ? + toIntervalSecond(number), generateUUIDv4(number), ?, 'e', 1,
		concat(char(123), '"customer":', char(123), '"email":"', ?, '@example.com"', char(125), char(125)), 3650 FROM numbers(?)`, tenant, at, actor, actor, n))
	require.NoError(t, f.st.Exec(ctx, `INSERT INTO logs (tenant_id, service, time, log_id, severity_text, severity_number, body, attributes, retention_days)
		SELECT ?, 'crm', ? + toIntervalSecond(number), generateUUIDv4(number), 'INFO', 9, 'hello', map('user_id', ?), 3650 FROM numbers(?)`, tenant, at, actor, n))
	require.NoError(t, f.st.Exec(ctx, `INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, attributes, retention_days)
		SELECT ?, 'crm', 'GET /', ? + toIntervalSecond(number), hex(number), hex(rand()), 'server', 1000, 'ok', map('user_id', ?), 3650 FROM numbers(?)`, tenant, at, actor, n))
}

func (f *fixture) actions() []string {
	var out []string
	for _, r := range f.audited.Records() {
		out = append(out, r.TenantID+":"+r.Action)
	}
	return out
}

func TestPoliciesApplyToStoredDataAndRespectBounds(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	f.seed(t, "acme", "alice", 10, 40)  // 40 days old
	f.seed(t, "acme", "bob", 10, 5)     // 5 days old
	f.seed(t, "globex", "gina", 10, 40) // another tenant, same age
	usage := f.count(t, "SELECT sum(count) FROM usage_hourly WHERE tenant_id = 'acme' AND signal = 'events'")
	require.EqualValues(t, 20, usage)

	// Bad input: below the legal minimum, unknown signal, no reason.
	_, err := f.svc.SetPolicy(ctx, "acme", "audit_records", 30, carol, "cost")
	require.ErrorIs(t, err, retention.ErrInvalid)
	require.ErrorContains(t, err, "legal minimum of 2555 days")
	_, err = f.svc.SetPolicy(ctx, "acme", "metrics", 30, carol, "x")
	require.ErrorIs(t, err, retention.ErrInvalid)
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 30, carol, " ")
	require.ErrorIs(t, err, retention.ErrInvalid)
	_, err = f.svc.SetPolicy(ctx, "nobody", "events", 30, carol, "x")
	require.ErrorIs(t, err, retention.ErrNotFound)
	require.Zero(t, f.count(t, "SELECT count() FROM retention_policies"), "nothing applied")

	// Shortening to 30 days purges acme's 40-day-old rows at once, not globex's.
	p, err := f.svc.SetPolicy(ctx, "acme", "events", 30, carol, "data minimisation")
	require.NoError(t, err)
	require.EqualValues(t, 1, p.Version)
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'bob' AND retention_days = 30"))
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'globex'"))
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM logs WHERE tenant_id = 'acme'"), "logs: the default 30 days purged the 40-day-old ones in the same run")
	// Moving rows between partitions is not new usage.
	require.EqualValues(t, usage, f.count(t, "SELECT sum(count) FROM usage_hourly WHERE tenant_id = 'acme' AND signal = 'events'"))

	// Lengthening keeps what is there, with the new retention.
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 365, carol, "contract")
	require.NoError(t, err)
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND retention_days = 365"))
	pols, err := f.svc.Policies(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, 365, pols["events"].Days)
	require.EqualValues(t, 2, pols["events"].Version)
	require.True(t, pols["spans"].Default)
	require.Contains(t, f.actions(), "acme:retention.policy_changed")
	require.Contains(t, f.actions(), "acme:retention.purged")
	runs, err := f.svc.PurgeRuns(ctx, "acme", 10)
	require.NoError(t, err)
	require.NotEmpty(t, runs)
	require.EqualValues(t, 10, runs[len(runs)-1].Deleted["events"], "the first run's receipt names what it removed")
}

func TestHeldDataSurvivesPoliciesPurgesAndErasure(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	f.seed(t, "acme", "alice", 10, 40)
	f.seed(t, "acme", "bob", 10, 40)

	_, err := f.svc.PlaceHold(ctx, "acme", "subject", "alice", nil, nil, "", carol)
	require.ErrorIs(t, err, retention.ErrInvalid, "a hold needs a reason")
	_, err = f.svc.PlaceHold(ctx, "acme", "subject", "", nil, nil, "litigation", carol)
	require.ErrorIs(t, err, retention.ErrInvalid)
	h, err := f.svc.PlaceHold(ctx, "acme", "subject", "alice", nil, nil, "litigation 2026-17", carol)
	require.NoError(t, err)
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'alice' AND retention_days = 65535"))

	// Shortening the policy purges bob's old rows, not alice's held ones.
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 30, carol, "minimisation")
	require.NoError(t, err)
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'alice'"))
	require.Zero(t, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'bob'"))
	// Merges (TTL) do not remove held rows either.
	require.NoError(t, f.st.Exec(ctx, "OPTIMIZE TABLE events FINAL"))
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'alice'"))

	// Erasure of a held subject is a conflict shown to compliance, not resolved.
	e, err := f.svc.Erase(ctx, "acme", "alice", false, "carol")
	require.NoError(t, err)
	require.Equal(t, "blocked_by_hold", e.Status)
	require.Contains(t, e.Detail, "legal hold")
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'alice'"))

	// Lifting the hold returns alice's rows to the policy, and they go.
	_, err = f.svc.LiftHold(ctx, "acme", h.ID, "", carol)
	require.ErrorIs(t, err, retention.ErrInvalid)
	_, err = f.svc.LiftHold(ctx, "acme", h.ID, "case closed", carol)
	require.NoError(t, err)
	_, err = f.svc.LiftHold(ctx, "acme", h.ID, "again", carol)
	require.ErrorIs(t, err, retention.ErrConflict)
	require.Zero(t, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'alice'"))
	require.Contains(t, f.actions(), "acme:retention.hold_placed")
	require.Contains(t, f.actions(), "acme:retention.hold_lifted")

	// A tenant-wide hold keeps everything; a time range hold its window.
	f.seed(t, "acme", "carl", 5, 40)
	_, err = f.svc.PlaceHold(ctx, "acme", "tenant", "", nil, nil, "regulator inquiry", carol)
	require.NoError(t, err)
	_, err = f.svc.Purge(ctx, "acme", "test", carol)
	require.NoError(t, err)
	require.EqualValues(t, 5, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'carl'"))
	from, to := time.Now().Add(-50*24*time.Hour), time.Now().Add(-30*24*time.Hour)
	_, err = f.svc.PlaceHold(ctx, "acme", "time_range", "", &to, &from, "bad range", carol)
	require.ErrorIs(t, err, retention.ErrInvalid)
}

func TestErasureLeavesZeroRowsAndAVerifiableCertificate(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	f.seed(t, "acme", "dana", 25, 1)
	f.seed(t, "acme", "erin", 5, 1)
	f.seed(t, "globex", "dana", 7, 1) // the same identifier in another tenant
	// A dead letter naming her.
	m := nats.NewMsg("deadletter.acme.invalid_json")
	m.Data = []byte(`{"customer":"dana@example.com", broken`)
	_, err := f.p.JS.PublishMsg(ctx, m)
	require.NoError(t, err)

	_, err = f.svc.Erase(ctx, "acme", " ", true, "carol")
	require.ErrorIs(t, err, retention.ErrInvalid)
	_, err = f.svc.Erase(ctx, "acme", "gina", false, "carol")
	require.ErrorIs(t, err, retention.ErrNotFound, "a subject with no data in this tenant (another tenant's) is refused")

	dry, err := f.svc.Erase(ctx, "acme", "dana", true, "carol")
	require.NoError(t, err)
	require.Equal(t, "dry_run", dry.Status)
	require.EqualValues(t, 25, dry.Counts["events"])
	require.EqualValues(t, 25, dry.Counts["logs"])
	require.EqualValues(t, 25, dry.Counts["spans"])
	require.EqualValues(t, 1, dry.Counts["dead_letters"])
	require.EqualValues(t, 25, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'dana'"), "a dry run erases nothing")

	e, err := f.svc.Erase(ctx, "acme", "dana", false, "carol")
	require.NoError(t, err)
	require.Equal(t, "completed", e.Status, e.Detail)
	for _, q := range []string{
		"SELECT count() FROM events WHERE tenant_id = 'acme' AND (actor = 'dana' OR positionCaseInsensitive(payload, 'dana') > 0)",
		"SELECT count() FROM logs WHERE tenant_id = 'acme' AND attributes['user_id'] = 'dana'",
		"SELECT count() FROM spans WHERE tenant_id = 'acme' AND attributes['user_id'] = 'dana'",
	} {
		require.Zero(t, f.count(t, q), q)
	}
	require.EqualValues(t, 5, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND actor = 'erin'"), "others stay")
	require.EqualValues(t, 7, f.count(t, "SELECT count() FROM events WHERE tenant_id = 'globex' AND actor = 'dana'"), "other tenants stay")
	left, err := f.svc.Erase(ctx, "acme", "dana", true, "carol")
	require.ErrorIs(t, err, retention.ErrNotFound, "nothing left, dead letters included: %+v", left)

	cert, err := retention.VerifyCertificate(e.Certificate, f.verifier)
	require.NoError(t, err)
	require.True(t, cert.Verified)
	require.EqualValues(t, 25, cert.Deleted["events"])
	require.EqualValues(t, 1, cert.Deleted["dead_letters"])
	require.Equal(t, "carol", cert.ExecutedBy)
	require.NotContains(t, e.Certificate, "dana", "the certificate names the subject by hash only")
	_, err = retention.VerifyCertificate(e.Certificate+"x", f.verifier)
	require.Error(t, err)
	var chained *auditlog.Record
	audited := f.audited.Records()
	for i, r := range audited {
		if r.Action == "erasure.completed" {
			chained = &audited[i]
		}
	}
	require.NotNil(t, chained)
	require.Equal(t, "acme", chained.TenantID)
	require.Equal(t, cert.ChainRecordID, chained.RecordID.String())
	require.Equal(t, e.Certificate, chained.Metadata["certificate"])

	list, err := f.svc.Erasures(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "completed", list[0].Status)
	require.Zero(t, f.count(t, "SELECT count() FROM erasure_requests WHERE subject = 'dana' AND status = 'completed'"), "the subject is not kept once done")
}

func TestResidencyReportReadsTheStores(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	f.seed(t, "acme", "a", 3, 1)
	rep, err := f.svc.Residency(ctx, "acme")
	require.NoError(t, err)
	require.True(t, rep.OK)
	require.Equal(t, "default", rep.Pinned)
	at := map[string]uint64{}
	for _, l := range rep.Locations {
		at[l.Table] = l.Rows
	}
	require.EqualValues(t, 3, at["events"])
	require.EqualValues(t, 3, at["logs"])
	require.EqualValues(t, 3, at["spans"])
	require.NotZero(t, at["usage_hourly"], "derived tables count too: all of the tenant's rows")
	require.NotContains(t, at, "audit_records", "none were written")
	_, err = f.svc.Residency(ctx, "nobody")
	require.ErrorIs(t, err, retention.ErrNotFound)
}

// Old audit records go as a prefix of the chain; their hashes stay, so the
// checkpoints, the chain from its new start, inclusion proofs, the writer
// and offline exports all still verify.
func TestPurgedAuditRecordsKeepTheChainVerifiable(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	cfg := f.p.Config
	cfg.Retention.Minimum["audit_records"] = 1
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	svc := retention.New(cfg, f.p.Placement, map[string]*chstore.Store{"default": f.st}, nil, nil, skey, zerolog.Nop())
	w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return f.st, nil }, skey, 5)
	require.NoError(t, err)
	rec := func(i int, at time.Time) auditlog.Record {
		return auditlog.Record{TenantID: "acme", Time: at, Actor: auditlog.Actor{Type: "user", ID: fmt.Sprint("u", i)}, Action: "thing.done", Outcome: "success"}
	}
	var recs []auditlog.Record
	for i := range 10 {
		recs = append(recs, rec(i, time.Now().Add(-40*24*time.Hour)))
	}
	for i := range 10 {
		recs = append(recs, rec(10+i, time.Now().Add(-time.Hour)))
	}
	_, err = w.Append(ctx, "acme", recs[:10]) // a checkpoint at 10: all of it is purged below
	require.NoError(t, err)
	_, err = w.Append(ctx, "acme", recs[10:]) // and one at 20
	require.NoError(t, err)

	_, err = svc.SetPolicy(ctx, "acme", "audit_records", 30, carol, "minimisation")
	require.NoError(t, err)
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM audit_records WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 10, f.count(t, "SELECT count() FROM audit_purged WHERE tenant_id = 'acme'"))
	runs, err := svc.PurgeRuns(ctx, "acme", 1)
	require.NoError(t, err)
	require.EqualValues(t, 10, runs[0].Deleted["audit_records"])

	rep, err := auditlog.Verify(ctx, f.st, "acme", 1, vkey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.EqualValues(t, 10, rep.Records)
	require.EqualValues(t, 10, rep.Purged)
	require.Equal(t, 2, rep.Checkpoints, "the checkpoint over purged records still verifies")
	p, err := auditlog.Prove(ctx, f.st, "acme", 15)
	require.NoError(t, err)
	require.NoError(t, auditlog.VerifyInclusion(p, vkey))
	// An export verifies offline with the purged records' hashes.
	var bundle bytes.Buffer
	_, err = export.Write(ctx, f.st, "acme", skey, vkey, &bundle, io.Discard)
	require.NoError(t, err)
	sum, err := export.VerifyBundle(&bundle, vkey)
	require.NoError(t, err)
	require.EqualValues(t, 10, sum.Audit.Purged)
	// A fresh writer (a restart) continues the chain.
	w2, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return f.st, nil }, skey, 5)
	require.NoError(t, err)
	out, err := w2.Append(ctx, "acme", []auditlog.Record{rec(99, time.Now())})
	require.NoError(t, err)
	require.EqualValues(t, 21, out[0].Seq)
	rep, err = auditlog.Verify(ctx, f.st, "acme", 1, vkey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
	// Tampering with what remains is still caught.
	require.NoError(t, f.st.Exec(ctx, "ALTER TABLE audit_records UPDATE action = 'forged' WHERE tenant_id = 'acme' AND seq = 12 SETTINGS mutations_sync = 2"))
	rep, err = auditlog.Verify(ctx, f.st, "acme", 1, vkey)
	require.NoError(t, err)
	require.False(t, rep.OK())
	require.EqualValues(t, 12, rep.Problem.Seq)
}
