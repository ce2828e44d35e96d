package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// Receipt is what a purge run did to one tenant.
type Receipt struct {
	RunID    string            `json:"run_id"`
	Tenant   string            `json:"tenant"`
	Trigger  string            `json:"trigger"`
	Started  time.Time         `json:"started_at"`
	Finished time.Time         `json:"finished_at"`
	Policies map[string]int    `json:"policy_days"`
	Deleted  map[string]uint64 `json:"deleted_rows"`
	Moved    map[string]uint64 `json:"moved_rows"` // rows given their policy's or a hold's retention
	Held     map[string]uint64 `json:"held_rows"`
	// Cutoff bounds the run: it rewrote and deleted only rows the store
	// received before it (the server's clock, less the insert margin).
	Cutoff time.Time `json:"received_before"`
	// Pending are rows whose retention is not yet right: received after the
	// cutoff, or not yet visible at the copy. The next run takes them.
	Pending map[string]uint64 `json:"pending_rows,omitempty"`
	// LateWriters did not confirm the change that triggered the run in time:
	// rows they write with the old retention are left to the next run.
	LateWriters []string `json:"late_writers,omitempty"`
	Note        string   `json:"note,omitempty"`
}

// metrics of purge runs (registered once per process).
var (
	purgedRows = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_retention_purged_rows_total", Help: "Rows removed by purge runs, by tenant and signal."}, []string{"tenant", "signal"})
	heldRows   = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_retention_held_rows", Help: "Rows under a legal hold at the last purge run, by tenant and signal."}, []string{"tenant", "signal"})
	lastPurge  = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantscope_retention_last_purge_timestamp_seconds", Help: "When the last purge run finished."})
	moveEnds   = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantscope_region_moves_total", Help: "Region moves that ended in this process, by outcome (completed or failed)."}, []string{"outcome"})
	moveTime   = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantscope_region_move_seconds", Help: "How long completed region moves took, pause to transfer record.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
)

// RegisterMetrics registers the purge metrics on reg.
func RegisterMetrics(reg prometheus.Registerer, cfg config.Config) error {
	for _, c := range []prometheus.Collector{purgedRows, heldRows, lastPurge, erasureDue, moveEnds, moveTime} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("retention metrics: %w", err)
		}
	}
	for _, t := range cfg.Tenants {
		for _, sig := range []string{"events", "logs", "spans"} {
			purgedRows.WithLabelValues(t.ID, sig)
			heldRows.WithLabelValues(t.ID, sig)
		}
	}
	moveEnds.WithLabelValues(MoveCompleted)
	moveEnds.WithLabelValues(MoveFailed)
	return nil
}

// purged signals are purged row by row; audit records as a prefix of their
// chain (purgeAudit).
var purged = []string{"events", "logs", "spans"}

// Purge enforces policies and holds for tenant ("" for every tenant): rows
// an active hold covers are marked held (never expire), others get their
// policy's retention, and rows past it are deleted now (a backstop to TTL,
// which only acts at merges). Each tenant's receipt is stored and chained.
func (s *Service) Purge(ctx context.Context, tenant, trigger string, by auditlog.Actor) ([]Receipt, error) {
	ids := []string{tenant}
	if tenant == "" {
		ids = nil
		for _, t := range s.cfg.Tenants {
			ids = append(ids, t.ID)
		}
	}
	run := newID("run_")
	var out []Receipt
	for _, id := range ids {
		var r Receipt
		err := s.exclusive(ctx, id, "purge", func() error {
			release, err := s.hold(id)
			if err != nil {
				return err
			}
			defer release()
			r, err = s.purgeTenant(ctx, id, run, trigger, by, nil)
			return err
		})
		if err != nil {
			if tenant == "" && errors.Is(err, ErrConflict) {
				continue // being moved, or another change runs: the next run
			}
			return out, fmt.Errorf("purge %s: %w", id, err)
		}
		out = append(out, r)
	}
	lastPurge.SetToCurrentTime()
	return out, nil
}

// purgeTenant runs a purge of tenant, which the caller holds exclusively.
// Everything it rewrites or deletes was received before its cutoff; each
// delete is counted with the condition it runs with, and checked after.
func (s *Service) purgeTenant(ctx context.Context, tenant, run, trigger string, by auditlog.Actor, late []string) (Receipt, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return Receipt{}, err
	}
	r := Receipt{RunID: run, Tenant: tenant, Trigger: trigger, Started: s.Now().UTC(), Policies: map[string]int{},
		Deleted: map[string]uint64{}, Moved: map[string]uint64{}, Held: map[string]uint64{}, Pending: map[string]uint64{}, LateWriters: late}
	pols, err := s.Policies(ctx, tenant)
	if err != nil {
		return r, err
	}
	holds, err := s.Holds(ctx, tenant)
	if err != nil {
		return r, err
	}
	cutoff, err := s.cutoff(ctx, st, true)
	if err != nil {
		return r, err
	}
	now := cutoff
	r.Cutoff = time.UnixMilli(cutoff).UTC()
	for _, sig := range purged {
		t, days := tables[sig], pols[sig].Days
		r.Policies[sig] = days
		held, hargs, err := s.heldWhere(sig, holds)
		if err != nil {
			return r, err
		}
		// Expired rows go first, so no copy below is past its retention
		// (TTL could drop it on the spot, uncounted).
		expired := "tenant_id = ? AND NOT " + held + " AND " + t.timeCol + " < fromUnixTimestamp64Milli(?, 'UTC') AND " + receivedBy
		eargs := append(append([]any{tenant}, hargs...), now-int64(days)*24*3600*1000, cutoff)
		n, err := deleteCounted(ctx, st, t.name, expired, eargs)
		if err != nil {
			return r, fmt.Errorf("purge %s: %w", t.name, err)
		}
		r.Deleted[sig] = n
		purgedRows.WithLabelValues(tenant, sig).Add(float64(n))
		a, err := rewrite(ctx, st, t, tenant, held, hargs, HeldDays, cutoff)
		if err != nil {
			return r, err
		}
		b, err := rewrite(ctx, st, t, tenant, "NOT "+held, hargs, uint16(days), cutoff)
		if err != nil {
			return r, err
		}
		r.Moved[sig] = a.deleted + b.deleted
		// Rows received since the cutoff with the wrong retention (written
		// before every writer had the change), and rows the copy missed.
		var after uint64
		if err := st.QueryRow(ctx, []any{&after}, "SELECT count() FROM "+t.name+" WHERE tenant_id = ? AND NOT ("+receivedBy+") AND if("+held+", retention_days != ?, retention_days != ?)",
			append(append([]any{tenant, cutoff}, hargs...), uint16(HeldDays), uint16(days))...); err != nil {
			return r, err
		}
		if p := a.left + b.left + after; p > 0 {
			r.Pending[sig] = p
		}
		var h uint64
		if err := st.QueryRow(ctx, []any{&h}, "SELECT count() FROM "+t.name+" WHERE tenant_id = ? AND retention_days = ?", tenant, uint16(HeldDays)); err != nil {
			return r, err
		}
		r.Held[sig] = h
		heldRows.WithLabelValues(tenant, sig).Set(float64(h))
	}
	r.Policies["audit_records"] = pols["audit_records"].Days
	n, err := s.purgeAudit(ctx, tenant, pols["audit_records"].Days, holds, run)
	if err != nil {
		return r, err
	}
	r.Deleted["audit_records"] = n
	r.Note = "purged audit records keep their sequence and hash (audit_purged): the checkpoints and the chain from its new start still verify"
	if len(r.Pending) > 0 {
		r.Note += "; pending rows were received after the cutoff with a retention that is not yet right: the next run rewrites them"
	}
	r.Finished = s.Now().UTC()
	body, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if err := st.Exec(ctx, "INSERT INTO purge_runs (run_id, tenant_id, started_at, finished_at, trigger, deleted, moved, receipt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		r.RunID, tenant, r.Started, r.Finished, trigger, r.Deleted, r.Moved, string(body)); err != nil {
		return r, fmt.Errorf("purge receipt: %w", err)
	}
	meta := map[string]string{"run_id": r.RunID, "trigger": trigger, "received_before": r.Cutoff.Format(time.RFC3339Nano)}
	for sig, n := range r.Deleted {
		meta["deleted."+sig] = fmt.Sprint(n)
		meta["policy_days."+sig] = fmt.Sprint(r.Policies[sig])
		meta["held."+sig] = fmt.Sprint(r.Held[sig])
	}
	for sig, n := range r.Pending {
		meta["pending."+sig] = fmt.Sprint(n)
	}
	s.record(ctx, tenant, by, "retention.purged", "purge_run", r.RunID, trigger, nil, meta)
	return r, nil
}

// deleteCounted deletes the rows of table matching cond and returns how
// many it deleted: counted before, less those still there after (cond is
// bounded by a cutoff, so only an insert slower than the margin could
// match later; such rows are left to the next run).
func deleteCounted(ctx context.Context, st *chstore.Store, table, cond string, args []any) (uint64, error) {
	var before, after uint64
	if err := st.QueryRow(ctx, []any{&before}, "SELECT count() FROM "+table+" WHERE "+cond, args...); err != nil || before == 0 {
		return 0, err
	}
	if err := st.Exec(ctx, "ALTER TABLE "+table+" DELETE WHERE "+cond+" SETTINGS mutations_sync = 2", args...); err != nil {
		return 0, err
	}
	if err := st.QueryRow(ctx, []any{&after}, "SELECT count() FROM "+table+" WHERE "+cond, args...); err != nil {
		return 0, err
	}
	return before - min(before, after), nil
}

// purgeAudit removes the oldest audit records past the policy, as a prefix
// of the chain (the chain must stay contiguous: it stops at the first record
// that is held or not yet expired), keeping each one's sequence number and
// hash in audit_purged.
func (s *Service) purgeAudit(ctx context.Context, tenant string, days int, holds []Hold, run string) (uint64, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return 0, err
	}
	held, hargs, err := s.heldWhere("audit_records", holds)
	if err != nil {
		return 0, err
	}
	stay := "NOT (time < now64(3) - toIntervalDay(?) AND NOT " + held + ")"
	args := append(append([]any{days}, hargs...), append([]any{days}, hargs...)...)
	var staying, first, last uint64
	if err := st.QueryRow(ctx, []any{&staying, &first, &last}, "SELECT countIf("+stay+"), minIf(seq, "+stay+"), max(seq) FROM audit_records FINAL WHERE tenant_id = ?",
		append(args, tenant)...); err != nil {
		return 0, fmt.Errorf("purge audit records: %w", err)
	}
	cut := first
	if staying == 0 {
		cut = last + 1
	}
	var n uint64
	if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM audit_records FINAL WHERE tenant_id = ? AND seq < ?", tenant, cut); err != nil || n == 0 {
		return 0, err
	}
	if err := st.Exec(ctx, "INSERT INTO audit_purged (tenant_id, seq, hash, purged_at, run_id) SELECT tenant_id, seq, hash, now64(3), ? FROM audit_records FINAL WHERE tenant_id = ? AND seq < ?",
		run, tenant, cut); err != nil {
		return 0, fmt.Errorf("purge audit records: %w", err)
	}
	if err := st.Exec(ctx, "ALTER TABLE audit_records DELETE WHERE tenant_id = ? AND seq < ? SETTINGS mutations_sync = 2", tenant, cut); err != nil {
		return 0, fmt.Errorf("purge audit records: %w", err)
	}
	return n, nil
}

// PurgeRuns lists a tenant's recent purge receipts, newest first.
func (s *Service) PurgeRuns(ctx context.Context, tenant string, limit int) ([]Receipt, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Receipt string `ch:"receipt"`
	}
	if err := st.Select(ctx, &rows, "SELECT receipt FROM purge_runs WHERE tenant_id = ? ORDER BY started_at DESC LIMIT ?", tenant, limit); err != nil {
		return nil, fmt.Errorf("purge runs: %w", err)
	}
	out := make([]Receipt, 0, len(rows))
	for _, row := range rows {
		var r Receipt
		if err := json.Unmarshal([]byte(row.Receipt), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// NextPurge is when the scheduled run will next pass.
func (s *Service) NextPurge(last time.Time) time.Time {
	return last.Add(time.Duration(s.cfg.Retention.PurgeEvery))
}

// Run purges every tenant each purge_every and keeps the erasure reminders
// current, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(time.Duration(s.cfg.Retention.PurgeEvery))
	defer t.Stop()
	resume := time.NewTicker(MoveStale / 2)
	defer resume.Stop()
	system := auditlog.Actor{Type: "system", ID: "purge-scheduler", Name: "tenantscope retention"}
	for {
		if _, err := s.Purge(ctx, "", "schedule", system); err != nil && ctx.Err() == nil {
			s.log.Error().Err(err).Msg("purge run failed")
		}
		s.remind(ctx)
		for purge := false; !purge; {
			select {
			case <-ctx.Done():
				return nil
			case <-resume.C:
				// A region move whose process stopped is finished or undone.
				if err := s.ResumeMoves(ctx); err != nil && ctx.Err() == nil {
					s.log.Error().Err(err).Msg("interrupted region moves not resumed")
				}
			case <-t.C:
				purge = true
			}
		}
	}
}
