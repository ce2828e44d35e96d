package retention_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/retention"
)

// publish sends one acme event with the given actor, customer email and
// time, and returns its id once the collector stored it.
func (f *fixture) publish(t *testing.T, js jetstream.JetStream, actor, email string, at time.Time) string {
	t.Helper()
	id := uuid.NewString()
	msg := nats.NewMsg("tenant.acme.crm.updated")
	msg.Header.Set("Tenant-Id", "acme")
	msg.Header.Set(nats.MsgIdHdr, id)
	msg.Data = fmt.Appendf(nil, `{"actor":%q,"time":%q,"customer":{"email":%q}}`, actor, at.UTC().Format(time.RFC3339Nano), email)
	_, err := js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return f.count(t, "SELECT count() FROM events WHERE event_id = toUUID(?)", id) == 1
	}, 30*time.Second, 20*time.Millisecond)
	return id
}

func (f *fixture) days(t *testing.T, id string) uint64 {
	t.Helper()
	return f.count(t, "SELECT toUInt64(any(retention_days)) FROM events WHERE event_id = toUUID(?)", id)
}

// Rows get their retention as they are stored, with no purge run to fix
// them: holds of a subject (by any identifier) and of a time range, and a
// policy as soon as the change returns.
func TestRowsGetTheirRetentionAtIngest(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	js, err := jetstream.New(f.p.TenantConn(t, "acme"))
	require.NoError(t, err)
	now := time.Now().UTC()
	from, to := now.Add(-80*24*time.Hour), now.Add(-70*24*time.Hour)
	_, err = f.svc.PlaceHold(ctx, "acme", "subject", "alice", nil, nil, "litigation", carol)
	require.NoError(t, err)
	_, err = f.svc.PlaceHold(ctx, "acme", "subject", "erin@example.com", nil, nil, "litigation", carol)
	require.NoError(t, err)
	_, err = f.svc.PlaceHold(ctx, "acme", "time_range", "", &from, &to, "inquiry", carol)
	require.NoError(t, err)
	runs, err := f.svc.PurgeRuns(ctx, "acme", 10)
	require.NoError(t, err)
	require.Len(t, runs, 3, "each hold ran a purge")

	byActor := f.publish(t, js, "alice", "a@example.com", now)
	byPayload := f.publish(t, js, "someone", "erin@example.com", now)
	inRange := f.publish(t, js, "bob", "b@example.com", now.Add(-75*24*time.Hour))
	outside := f.publish(t, js, "bob", "b@example.com", now.Add(-60*24*time.Hour))
	plain := f.publish(t, js, "bob", "b@example.com", now)
	require.EqualValues(t, retention.HeldDays, f.days(t, byActor), "subject hold, by actor")
	require.EqualValues(t, retention.HeldDays, f.days(t, byPayload), "subject hold, by payload.customer.email")
	require.EqualValues(t, retention.HeldDays, f.days(t, inRange), "time-range hold")
	require.EqualValues(t, 90, f.days(t, outside), "the default policy")
	require.EqualValues(t, 90, f.days(t, plain))

	// A policy reaches the collector before SetPolicy returns.
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 120, carol, "contract")
	require.NoError(t, err)
	require.EqualValues(t, 120, f.days(t, f.publish(t, js, "bob", "b@example.com", now)))
	require.EqualValues(t, 120, f.days(t, plain), "rewritten")
	require.EqualValues(t, retention.HeldDays, f.days(t, byActor), "still held")
	runs, err = f.svc.PurgeRuns(ctx, "acme", 1)
	require.NoError(t, err)
	require.Empty(t, runs[0].Pending, "nothing left for the next run")
	require.Empty(t, runs[0].LateWriters)
	require.False(t, runs[0].Cutoff.IsZero())

	// Lifting a hold: the subject's new rows get the policy at once.
	hs, err := f.svc.Holds(ctx, "acme")
	require.NoError(t, err)
	for _, h := range hs {
		if h.Subject == "alice" {
			_, err = f.svc.LiftHold(ctx, "acme", h.ID, "settled", carol)
			require.NoError(t, err)
		}
	}
	require.EqualValues(t, 120, f.days(t, f.publish(t, js, "alice", "a@example.com", now)))
	require.EqualValues(t, 120, f.days(t, byActor), "returned to the policy")
}

// A writer that does not confirm a change in time is named in the receipt;
// the change still applies, and rows it writes later are left to the next
// run, never deleted.
func TestAChangeWaitsForEveryWriter(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	kv, err := f.p.JS.KeyValue(ctx, "TENANTSCOPE_RETENTION")
	require.NoError(t, err)
	// A writer stuck before the change: it reports, but never loads again.
	stuck, err := json.Marshal(map[string]any{"epoch": 0, "refresh": 10 * time.Second, "owner": "stuck"})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "writer.w_stuck", stuck)
	require.NoError(t, err)
	f.svc.WriterWait = 300 * time.Millisecond
	t0 := time.Now()
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 30, carol, "minimisation")
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(t0), 300*time.Millisecond, "it waited for the stuck writer")
	runs, err := f.svc.PurgeRuns(ctx, "acme", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"w_stuck"}, runs[0].LateWriters)

	// Once it reports the change's epoch (or stops), nobody waits.
	require.NoError(t, kv.Delete(ctx, "writer.w_stuck"))
	t0 = time.Now()
	_, err = f.svc.SetPolicy(ctx, "acme", "events", 40, carol, "minimisation")
	require.NoError(t, err)
	runs, err = f.svc.PurgeRuns(ctx, "acme", 1)
	require.NoError(t, err)
	require.Empty(t, runs[0].LateWriters)
	require.Less(t, time.Since(t0), 10*time.Second)
}

// Retention changes of one tenant run one at a time, across processes: a
// change waits while another process holds the tenant (and gives up with a
// conflict after LockWait).
func TestRetentionChangesOfATenantRunOneAtATime(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	kv, err := f.p.JS.KeyValue(ctx, "TENANTSCOPE_RETENTION")
	require.NoError(t, err)
	// Another process holds acme.
	rev, err := kv.Create(ctx, "lock.acme", []byte(`{"owner":"other","what":"purge"}`))
	require.NoError(t, err)
	f.svc.LockWait = 500 * time.Millisecond
	_, err = f.svc.Purge(ctx, "acme", "on demand", carol)
	require.ErrorIs(t, err, retention.ErrConflict)
	require.ErrorContains(t, err, "purge by other")
	// globex is not held.
	_, err = f.svc.Purge(ctx, "globex", "on demand", carol)
	require.NoError(t, err)
	// The other process ends: acme's purge runs, and releases the lock.
	require.NoError(t, kv.Delete(ctx, "lock.acme", jetstream.LastRevision(rev)))
	_, err = f.svc.Purge(ctx, "acme", "on demand", carol)
	require.NoError(t, err)
	_, err = kv.Get(ctx, "lock.acme")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "released")
}
