package retention

import (
	"context"
	"fmt"
	"strings"

	"github.com/tenantscope/tenantscope/chstore"
)

// A rewrite gives stored rows another retention_days (their partition): it
// copies them with the new value and deletes the old copies. Collectors
// insert into the same tables meanwhile, so a rewrite is bounded and keyed:
//
//   - bounded by a cutoff read from the server's clock before the copy, which
//     then waits InsertMargin: rows are stamped received_at by the server as
//     they are inserted, so every insert stamped before the cutoff is (in
//     all but a pathological case) visible when the copy runs, and rows
//     received after it are left for the next run;
//   - keyed: an old copy is deleted only when a row with its sort key and
//     received_at exists with the new retention. A row the copy did not see
//     (an insert slower than the margin) is never deleted: it stays as it
//     is, and the next run rewrites it.
//
// It reports the rows it copied and deleted, and checks afterwards that no
// copied row is left twice.

// cutoff reads the server's clock (Unix milliseconds), then, when it
// settles, waits InsertMargin for the inserts in flight then to land (what
// only counts need not wait).
func (s *Service) cutoff(ctx context.Context, st *chstore.Store, settle bool) (int64, error) {
	var now int64
	if err := st.QueryRow(ctx, []any{&now}, "SELECT toUnixTimestamp64Milli(now64(3))"); err != nil {
		return 0, fmt.Errorf("read the server's clock: %w", err)
	}
	if !settle {
		return now, nil
	}
	return now, sleep(ctx, s.InsertMargin)
}

// receivedBy bounds rows to those received by a cutoff (Unix ms).
const receivedBy = "received_at <= fromUnixTimestamp64Milli(?, 'UTC')"

// rewritten is what one rewrite did.
type rewritten struct {
	copied, deleted uint64
	// left are rows received before the cutoff that matched but were not
	// copied (not yet visible at the copy): the next run takes them.
	left uint64
}

// rewrite gives tenant's rows of t that match where (with args) and were
// received by cutoff the retention days (rows already at days are left
// alone).
func rewrite(ctx context.Context, st *chstore.Store, t table, tenant, where string, args []any, days uint16, cutoff int64) (rewritten, error) {
	var r rewritten
	cond := "tenant_id = ? AND retention_days != ? AND " + receivedBy + " AND (" + where + ")"
	all := append([]any{tenant, days, cutoff}, args...)
	var n uint64
	if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+t.name+" WHERE "+cond, all...); err != nil || n == 0 {
		return r, err
	}
	// Columns named one by one: "SELECT * REPLACE (…)" inserted no rows (and
	// no error) on the embedded engine.
	var rows []struct {
		Name string `ch:"name"`
	}
	if err := st.Select(ctx, &rows, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS', 'EPHEMERAL') ORDER BY position", t.name); err != nil {
		return r, fmt.Errorf("rewrite %s rows: %w", t.name, err)
	}
	cols := make([]string, len(rows))
	sel := make([]string, len(rows))
	for i, c := range rows {
		cols[i], sel[i] = ident(c.Name), ident(c.Name)
		if c.Name == "retention_days" {
			sel[i] = "toUInt16(?)"
		}
	}
	// Inserted as copies: no usage counted (moveComment), no deduplication
	// of a block a retried rewrite inserts again.
	if err := st.Exec(ctx, "INSERT INTO "+t.name+" ("+strings.Join(cols, ", ")+") SELECT "+strings.Join(sel, ", ")+" FROM "+t.name+" WHERE "+cond+
		" SETTINGS log_comment = '"+moveComment+"', insert_deduplicate = 0", append([]any{days}, all...)...); err != nil {
		return r, fmt.Errorf("rewrite %s rows: %w", t.name, err)
	}
	// The copies: rows at the new retention received by the cutoff.
	key := "(" + strings.Join(append(append([]string{}, t.key...), "received_at"), ", ") + ")"
	copies := key + " IN (SELECT " + strings.Join(append(append([]string{}, t.key...), "received_at"), ", ") + " FROM " + t.name +
		" WHERE tenant_id = ? AND retention_days = ? AND " + receivedBy + ")"
	copyArgs := []any{tenant, days, cutoff}
	if err := st.QueryRow(ctx, []any{&r.copied}, "SELECT count() FROM "+t.name+" WHERE tenant_id = ? AND retention_days = ? AND "+receivedBy+" AND "+key+
		" IN (SELECT "+strings.Join(append(append([]string{}, t.key...), "received_at"), ", ")+" FROM "+t.name+" WHERE "+cond+")", append(copyArgs, all...)...); err != nil {
		return r, fmt.Errorf("rewrite %s rows: count the copies: %w", t.name, err)
	}
	del := cond + " AND " + copies
	delArgs := append(append([]any{}, all...), copyArgs...)
	if err := st.QueryRow(ctx, []any{&r.deleted}, "SELECT count() FROM "+t.name+" WHERE "+del, delArgs...); err != nil {
		return r, fmt.Errorf("rewrite %s rows: %w", t.name, err)
	}
	if r.deleted > 0 {
		if err := st.Exec(ctx, "ALTER TABLE "+t.name+" DELETE WHERE "+del+" SETTINGS mutations_sync = 2", delArgs...); err != nil {
			return r, fmt.Errorf("rewrite %s rows: delete the old copies: %w", t.name, err)
		}
	}
	var twice uint64
	if err := st.QueryRow(ctx, []any{&twice, &r.left}, "SELECT countIf("+copies+"), count() FROM "+t.name+" WHERE "+cond, append(append([]any{}, copyArgs...), all...)...); err != nil {
		return r, fmt.Errorf("rewrite %s rows: verify: %w", t.name, err)
	}
	if twice > 0 {
		return r, fmt.Errorf("rewrite %s rows: %d rows are stored with both retentions after the delete", t.name, twice)
	}
	return r, nil
}
