package retention_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// moveFixture is a pipeline with two regions ("default" and "us") in one
// engine, and a retention engine whose audit records go through NATS into
// the real chains.
type moveFixture struct {
	p    *collectortest.Pipeline
	svc  *retention.Service
	vkey string
}

func startMove(t *testing.T, regions ...config.Region) *moveFixture {
	if len(regions) == 0 {
		regions = []config.Region{{Name: "us"}}
	}
	p := collectortest.Start(t, func(c *config.Config) {
		c.Regions = append(c.Regions, regions...)
	}, "acme", "globex")
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	svc := retention.New(p.Config, p.Placement, p.Stores, auditlog.JetStreamPublisher(p.JS), p.JS, skey, zerolog.Nop())
	svc.EngineAddr = p.EngineAddr
	return &moveFixture{p: p, svc: svc, vkey: vkey}
}

// publishEvents publishes n events of tenant with its service credentials.
func (f *moveFixture) publishEvents(t *testing.T, tenant string, n int) {
	ctx := context.Background()
	js, err := jetstream.New(f.p.TenantConn(t, tenant))
	require.NoError(t, err)
	for i := range n {
		m := nats.NewMsg("tenant." + tenant + ".crm.contact_updated")
		m.Header.Set("Tenant-Id", tenant)
		m.Data = fmt.Appendf(nil, `{"actor":"agent-%d","n":%d}`, i%7, i)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
}

// rows counts tenant's rows in every table of region that has tenant rows.
func (f *moveFixture) rows(t *testing.T, region, tenant string) map[string]uint64 {
	ctx := context.Background()
	st := f.p.Stores[region]
	var tables []struct {
		Name string `ch:"table"`
	}
	require.NoError(t, st.Select(ctx, &tables, "SELECT DISTINCT table FROM system.columns WHERE database = currentDatabase() AND name = 'tenant_id' AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree') AND table != 'region_moves'"))
	require.Greater(t, len(tables), 15)
	out := map[string]uint64{}
	for _, tb := range tables {
		var n uint64
		require.NoError(t, st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+tb.Name+" WHERE tenant_id = ?", tenant))
		if n > 0 {
			out[tb.Name] = n
		}
	}
	return out
}

func (f *moveFixture) count(t *testing.T, region, q string, args ...any) uint64 {
	var n uint64
	require.NoError(t, f.p.Stores[region].QueryRow(context.Background(), []any{&n}, q, args...))
	return n
}

// A tenant moves to another region: every table is copied and verified by
// counts and hashes, the source keeps nothing, the signed transfer record
// is in the tenant's chain (in its new region) and the platform's, messages
// sent during the move wait and then land in the new region, usage is not
// counted twice, and a restarted process finds the tenant where it moved.
func TestRegionMoveCopiesVerifiesDeletesAndSigns(t *testing.T) {
	f := startMove(t)
	ctx := context.Background()
	carol := auditlog.Actor{Type: "user", ID: "carol", Name: "compliance"}
	f.publishEvents(t, "acme", 200)
	f.publishEvents(t, "globex", 50)
	_, err := f.svc.SetPolicy(ctx, "acme", "events", 400, carol, "contract")
	require.NoError(t, err)
	_, err = f.svc.PlaceHold(ctx, "acme", "subject", "agent-3", nil, nil, "litigation 7", carol)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'acme'") == 200 &&
			f.count(t, "default", "SELECT count() FROM audit_records WHERE tenant_id = 'acme'") >= 2
	}, 30*time.Second, 50*time.Millisecond)
	// A user-defined meter's hourly row with aggregate states (a uniq set
	// serializes differently once read and written again).
	require.NoError(t, f.p.Store.Exec(ctx, `INSERT INTO meter_hourly (tenant_id, meter, hour, group_key, count, sum, max, uniq, latest)
		SELECT 'acme', 'active_users', toStartOfHour(now()), '', 50, 0, 0, uniqState(concat('user-', toString(number))), argMaxState(toFloat64(number), now64(3))
		FROM numbers(50)`))
	before := f.rows(t, "default", "acme")
	for _, tb := range []string{"events", "audit_records", "retention_policies", "legal_holds", "usage_hourly", "usage_daily"} {
		require.NotZero(t, before[tb], tb)
	}
	require.Empty(t, f.rows(t, "us", "acme"))

	// Refused, with nothing changed.
	for _, c := range []struct {
		tenant, to, reason, want string
	}{
		{"acme", "mars", "r", "unknown region \"mars\" (configured: default, us)"},
		{"acme", "default", "r", "already lives in region default"},
		{"acme", "us", " ", "needs a reason"},
		{config.PlatformTenant, "us", "r", "does not move"},
	} {
		_, err := f.svc.BeginMove(ctx, c.tenant, c.to, carol, c.reason)
		require.ErrorIs(t, err, retention.ErrInvalid)
		require.ErrorContains(t, err, c.want)
	}
	_, err = f.svc.BeginMove(ctx, "nobody", "us", carol, "r")
	require.ErrorIs(t, err, retention.ErrNotFound)
	ms, err := f.svc.Moves(ctx, "")
	require.NoError(t, err)
	require.Empty(t, ms)

	m, err := f.svc.BeginMove(ctx, "acme", "us", carol, "customer asked for US hosting")
	require.NoError(t, err)
	require.Equal(t, retention.MoveCopying, m.State)
	require.True(t, f.p.Placement.Moving("acme"))
	// While paused: changes are refused, and new messages wait in the stream.
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 300, carol, "x")
	require.ErrorIs(t, err, retention.ErrConflict)
	_, err = f.svc.Erase(ctx, "acme", "agent-1", false, "carol")
	require.ErrorIs(t, err, retention.ErrConflict, "an erasure waits for the move")
	dry, err := f.svc.Erase(ctx, "acme", "agent-1", true, "carol")
	require.NoError(t, err, "a dry run only reads")
	require.NotZero(t, dry.Counts["events"])
	f.publishEvents(t, "acme", 100)
	var mu sync.Mutex
	var steps []string
	var shown string // what the API and the page showed at the copy of logs
	m, err = f.svc.RunMove(ctx, m, func(step, table string, done, total int) {
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, step+" "+table)
		if step == "copying" && table == "logs" {
			ms, err := f.svc.Moves(ctx, "acme")
			require.NoError(t, err)
			shown = ms[0].State + ": " + ms[0].Detail
		}
	})
	require.NoError(t, err)
	require.Regexp(t, `^copying: copying \w+ \(table \d+ of \d+\)$`, shown, "a running move shows its step")
	require.Equal(t, retention.MoveCompleted, m.State)
	require.Contains(t, steps, "copying events")
	require.Contains(t, steps, "deleting at the source events")
	require.False(t, f.p.Placement.Moving("acme"))
	r, _ := f.p.Placement.RegionOf(f.p.Config, "acme")
	require.Equal(t, "us", r.Name)

	// Every copied table verified; the derived daily rollups regenerated.
	copied := map[string]retention.MovedTable{}
	for _, tb := range m.Tables {
		copied[tb.Table] = tb
	}
	require.EqualValues(t, 200, copied["events"].Rows)
	require.EqualValues(t, 1, copied["meter_hourly"].Rows)
	require.NotContains(t, copied, "usage_daily")
	for tb, n := range before { // audit records may have arrived since
		if tb != "usage_daily" && tb != "meter_daily" { // regenerated, not copied
			require.GreaterOrEqual(t, copied[tb].Rows, n, tb)
		}
	}

	// Nothing of acme is left at the source; globex is untouched there.
	require.Empty(t, f.rows(t, "default", "acme"))
	require.EqualValues(t, 50, f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'globex'"))
	// The messages sent during the move land in the new region.
	require.Eventually(t, func() bool {
		return f.count(t, "us", "SELECT count() FROM events WHERE tenant_id = 'acme'") == 300
	}, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	// Usage counted once: the copied hourly rollups plus the new events.
	usage := func(table string) uint64 {
		return f.count(t, "us", "SELECT sum(count) FROM "+table+" WHERE tenant_id = 'acme' AND signal = 'events'")
	}
	require.Eventually(t, func() bool { return usage("usage_hourly") == 300 && usage("usage_daily") == 300 }, 10*time.Second, 50*time.Millisecond,
		"usage of events: hourly %d, daily %d", usage("usage_hourly"), usage("usage_daily"))
	// The policy and the hold moved with the data.
	pols, err := f.svc.Policies(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, 400, pols["events"].Days)
	holds, err := f.svc.Holds(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, holds, 1)

	// The signed transfer record.
	tr, err := retention.VerifyTransfer(m.Transfer, f.vkey)
	require.NoError(t, err)
	require.Equal(t, "acme", tr.Tenant)
	require.Equal(t, "default", tr.From)
	require.Equal(t, "us", tr.To)
	require.True(t, tr.SourceEmpty)
	require.Equal(t, m.Tables, tr.Tables)
	require.Equal(t, "carol", tr.RequestedBy)
	_, err = retention.VerifyTransfer(strings.Replace(m.Transfer, `"to_region":"us"`, `"to_region":"eu"`, 1), f.vkey)
	require.ErrorContains(t, err, "does not verify")
	// ... in the tenant's chain, now in the new region, which verifies,
	// and in the platform chain.
	require.Eventually(t, func() bool {
		return f.count(t, "us", "SELECT count() FROM audit_records WHERE tenant_id = 'acme' AND action = 'tenant.region_moved' AND metadata['transfer'] = ?", m.Transfer) == 1 &&
			f.count(t, "default", "SELECT count() FROM audit_records WHERE tenant_id = ? AND action = 'tenant.region_moved'", config.PlatformTenant) == 1
	}, 30*time.Second, 50*time.Millisecond)
	rep, err := auditlog.Verify(ctx, f.p.Stores["us"], "acme", 1, f.p.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep.Problem)
	require.Greater(t, rep.Records, uint64(2))

	// The residency report, read from the stores.
	res, err := f.svc.Residency(ctx, "acme")
	require.NoError(t, err)
	require.True(t, res.OK)
	require.Equal(t, "us", res.Pinned)
	for _, l := range res.Locations {
		require.Equal(t, "us", l.Region)
	}

	// A restarted process reads where acme lives from the platform store.
	restarted := f.p.Config
	restartedPlace := placement.New()
	r, _ = restartedPlace.RegionOf(restarted, "acme")
	require.Equal(t, "default", r.Name, "the configuration alone still says default")
	r, _ = restarted.RegionOf("acme")
	require.Equal(t, "default", r.Name, "the configuration stays a plain value")
	require.NoError(t, retention.New(restarted, restartedPlace, f.p.Stores, nil, nil, "", zerolog.Nop()).LoadPlacement(ctx))
	r, _ = restartedPlace.RegionOf(restarted, "acme")
	require.Equal(t, "us", r.Name)
	ms, err = f.svc.Moves(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, retention.MoveCompleted, ms[0].State)
	// A region that no longer exists in the configuration is an error.
	gone := restarted
	gone.Regions = gone.Regions[:1]
	require.ErrorContains(t, retention.New(gone, placement.New(), f.p.Stores, nil, nil, "", zerolog.Nop()).LoadPlacement(ctx), `moved to region "us"`)
}

// A destination that already holds rows of the tenant is refused; a move
// whose process stopped while copying is undone (the copies removed, the
// tenant stays and is writable again).
func TestRegionMoveRefusesAFullDestinationAndUndoesAnInterruptedCopy(t *testing.T) {
	f := startMove(t)
	ctx := context.Background()
	carol := auditlog.Actor{Type: "user", ID: "carol"}
	f.publishEvents(t, "globex", 20)
	require.Eventually(t, func() bool {
		return f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'globex'") == 20
	}, 30*time.Second, 50*time.Millisecond)
	us := f.p.Stores["us"]
	require.NoError(t, us.Exec(ctx, "INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days) SELECT 'globex', 'crm', 'stray', now64(3), generateUUIDv4(number), 'a', 'e', 1, '{}', 30 FROM numbers(3)"))
	res, err := f.svc.Residency(ctx, "globex")
	require.NoError(t, err)
	require.False(t, res.OK, "the report reads the stores: rows outside the pinned region show")
	require.Contains(t, res.Locations, retention.Location{Region: "us", Table: "events", Rows: 3})
	_, err = f.svc.BeginMove(ctx, "globex", "us", carol, "r")
	require.ErrorIs(t, err, retention.ErrConflict)
	require.ErrorContains(t, err, "region us already holds 3 rows of tenant globex in events")
	require.False(t, f.p.Placement.Moving("globex"))

	// A process that was copying globex stopped: its move is still
	// "copying", and some rows reached the destination.
	require.NoError(t, f.p.Stores["default"].Exec(ctx, `INSERT INTO region_moves (id, tenant_id, from_region, to_region, state, detail, reason, tables, transfer, requested_by, started_at, finished_at, version)
		VALUES ('mv_old', 'globex', 'default', 'us', 'copying', '', 'r', '', '', 'carol', now64(3) - 600, NULL, ?)`, uint64(time.Now().Add(-10*time.Minute).UnixNano())))
	_, err = f.svc.BeginMove(ctx, "globex", "us", carol, "r")
	require.ErrorIs(t, err, retention.ErrConflict, "a move recorded by another process is in the way")
	require.ErrorContains(t, err, "has a move in state copying (mv_old)")
	cfg, place := f.p.Config, f.p.Placement
	require.NoError(t, f.svc.LoadPlacement(ctx))
	require.True(t, place.Moving("globex"), "a process that starts during a move keeps the tenant paused")
	require.NoError(t, f.svc.ResumeMoves(ctx))
	require.Zero(t, f.count(t, "us", "SELECT count() FROM events WHERE tenant_id = 'globex'"))
	require.EqualValues(t, 20, f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'globex'"))
	require.False(t, place.Moving("globex"))
	r, _ := place.RegionOf(cfg, "globex")
	require.Equal(t, "default", r.Name)
	ms, err := f.svc.Moves(ctx, "globex")
	require.NoError(t, err)
	require.Equal(t, retention.MoveFailed, ms[0].State)
	require.Contains(t, ms[0].Detail, "interrupted while copying")

	// Now the move goes through.
	m, err := f.svc.BeginMove(ctx, "globex", "us", carol, "r")
	require.NoError(t, err)
	m, err = f.svc.RunMove(ctx, m, nil)
	require.NoError(t, err)
	require.Equal(t, retention.MoveCompleted, m.State)
	require.EqualValues(t, 20, f.count(t, "us", "SELECT count() FROM events WHERE tenant_id = 'globex'"))
}

// Regions on two ClickHouse servers: the destination's server reads the
// tenant's rows from the source's HTTP interface (url(), Native format,
// aggregate states included), and the move verifies, deletes and signs as
// on one server — there and back.
func TestRegionMoveBetweenServers(t *testing.T) {
	far := enginetest.OtherServer(t)
	f := startMove(t, config.Region{Name: "far", Database: "far_db", DSN: "http://" + far})
	ctx := context.Background()
	carol := auditlog.Actor{Type: "user", ID: "carol"}
	f.publishEvents(t, "acme", 120)
	f.publishEvents(t, "globex", 30)
	require.Eventually(t, func() bool {
		return f.count(t, "default", "SELECT count() FROM events WHERE tenant_id IN ('acme', 'globex')") == 150
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, f.p.Store.Exec(ctx, `INSERT INTO meter_hourly (tenant_id, meter, hour, group_key, count, sum, max, uniq, latest)
		SELECT 'acme', 'active_users', toStartOfHour(now()), '', 50, 0, 0, uniqState(concat('user-', toString(number))), argMaxState(toFloat64(number), now64(3))
		FROM numbers(50)`))

	move := func(to string) retention.Move {
		m, err := f.svc.BeginMove(ctx, "acme", to, carol, "data must live on the far server")
		require.NoError(t, err)
		m, err = f.svc.RunMove(ctx, m, nil)
		require.NoError(t, err)
		require.Equal(t, retention.MoveCompleted, m.State)
		_, err = retention.VerifyTransfer(m.Transfer, f.vkey)
		require.NoError(t, err)
		return m
	}
	m := move("far")
	require.Empty(t, f.rows(t, "default", "acme"))
	require.EqualValues(t, 120, f.count(t, "far", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 50, f.count(t, "far", "SELECT finalizeAggregation(uniq) FROM meter_hourly WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 30, f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'globex'"))
	for _, tb := range m.Tables {
		if tb.Table == "events" {
			require.EqualValues(t, 120, tb.Rows)
		}
	}
	// New messages go to the far server; then the tenant comes back.
	f.publishEvents(t, "acme", 10)
	require.Eventually(t, func() bool {
		return f.count(t, "far", "SELECT count() FROM events WHERE tenant_id = 'acme'") == 130
	}, 30*time.Second, 50*time.Millisecond)
	move("default")
	require.Empty(t, f.rows(t, "far", "acme"))
	require.EqualValues(t, 130, f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	rep, err := auditlog.Verify(ctx, f.p.Store, "acme", 1, f.p.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep.Problem)
}

// A move started in the background belongs to the Service: Close waits for
// it (a deadline that ends first is an error, the move runs on), and once
// Close has begun no move starts. Before, StartMove's goroutine had no
// owner: a shutdown closed the stores under a running move.
func TestCloseWaitsForABackgroundMove(t *testing.T) {
	f := startMove(t)
	ctx := context.Background()
	carol := auditlog.Actor{Type: "user", ID: "carol"}
	f.publishEvents(t, "acme", 20)
	require.Eventually(t, func() bool {
		return f.count(t, "default", "SELECT count() FROM events WHERE tenant_id = 'acme'") == 20
	}, 30*time.Second, 50*time.Millisecond)
	f.svc.MoveSettle = time.Second // the move runs at least this long
	m, err := f.svc.StartMove(ctx, "acme", "us", carol, "customer moved")
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, f.svc.Close(short), context.DeadlineExceeded, "the move still runs")
	_, err = f.svc.StartMove(ctx, "globex", "us", carol, "r")
	require.ErrorIs(t, err, retention.ErrConflict, "no move starts once Close has begun")
	require.False(t, f.p.Placement.Moving("globex"), "a refused move pauses nothing")

	long, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	require.NoError(t, f.svc.Close(long))
	// Close returned: the move has ended, no polling needed.
	ms, err := f.svc.Moves(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, m.ID, ms[0].ID)
	require.Equal(t, retention.MoveCompleted, ms[0].State, ms[0].Detail)
	require.False(t, f.p.Placement.Moving("acme"))
	require.EqualValues(t, 20, f.count(t, "us", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
}
