package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/placement"
)

// Region move states.
const (
	// MoveCopying: the tenant is paused (nothing writes its data) while its
	// rows are copied to the destination and verified there.
	MoveCopying = "copying"
	// MoveDeleting: the copies verified; the tenant lives in the destination
	// (and is writable again) while its rows are deleted at the source.
	MoveDeleting = "deleting"
	// MoveCompleted: nothing of the tenant is left at the source; the signed
	// transfer record is in the tenant's and the platform's audit chains.
	MoveCompleted = "completed"
	// MoveFailed: the copies were removed; the tenant stays where it was.
	MoveFailed = "failed"
)

// derivedTables are filled by materialized views from tables that are
// copied (usage_hourly, meter_hourly): a copy regenerates them, so they are
// not copied themselves (that would count them twice), only deleted at the
// source.
var derivedTables = []string{"usage_daily", "meter_daily"}

// platformTables hold rows about tenants that belong to the platform store.
var platformTables = []string{"region_moves", "schema_migrations"}

// MovedTable is one table of a move: its rows of the tenant and the sum of
// their cityHash64, the same at the source before and the destination after.
type MovedTable struct {
	Table string `json:"table"`
	Rows  uint64 `json:"rows"`
	Hash  string `json:"sum_cityhash64"`
}

// Move is a job that moves a tenant's data to another region.
type Move struct {
	ID          string       `json:"id"`
	Tenant      string       `json:"tenant"`
	From        string       `json:"from_region"`
	To          string       `json:"to_region"`
	State       string       `json:"state"`
	Detail      string       `json:"detail,omitempty"`
	Reason      string       `json:"reason"`
	RequestedBy string       `json:"requested_by"`
	Tables      []MovedTable `json:"tables,omitempty"`
	ChainHead   ChainPos     `json:"chain_head"`
	Transfer    string       `json:"transfer,omitempty"`
	StartedAt   time.Time    `json:"started_at"`
	FinishedAt  *time.Time   `json:"finished_at,omitempty"`
	// UpdatedAt is the move's last heartbeat or change: a running move
	// beats every MoveHeartbeat, so one not updated for long was interrupted.
	UpdatedAt time.Time `json:"updated_at"`
	// Version orders the record's saves (its UnixNano when saved).
	Version uint64 `json:"-"`
}

// MoveHeartbeat is how often a running move updates its record;
// ResumeMoves takes a move not updated for MoveStale as interrupted.
var (
	MoveHeartbeat = 20 * time.Second
	MoveStale     = 2 * time.Minute
)

// Transfer is the signed record of a completed move, appended to the
// tenant's audit chain (in its new region) and the platform's.
type Transfer struct {
	Version     int          `json:"v"`
	Move        string       `json:"move_id"`
	Tenant      string       `json:"tenant"`
	From        string       `json:"from_region"`
	To          string       `json:"to_region"`
	Tables      []MovedTable `json:"tables"`
	Regenerated []string     `json:"regenerated"`
	ChainHead   ChainPos     `json:"chain_head"`
	Reason      string       `json:"reason"`
	RequestedBy string       `json:"requested_by"`
	StartedAt   time.Time    `json:"started_at"`
	CompletedAt time.Time    `json:"completed_at"`
	// SourceEmpty: no row of the tenant is left in any table at the source.
	SourceEmpty   bool   `json:"verified_source_empty"`
	ChainRecordID string `json:"chain_record_id"`
}

// TransferOrigin is the origin line of transfer record notes.
func TransferOrigin(tenant string) string { return "tenantscope/region-move/" + tenant }

// VerifyTransfer checks a transfer record's signature and returns it.
func VerifyTransfer(signed, verifierKey string) (Transfer, error) {
	var t Transfer
	err := openNote(signed, verifierKey, "transfer record", &t, func() string { return TransferOrigin(t.Tenant) })
	return t, err
}

// moves is a Service's region-move state: the one move it runs at a time,
// and the versions it gives move records.
type moves struct {
	mu      sync.Mutex
	running string // id of the move this Service runs ("" none)
	last    uint64 // the last version it gave a move record
}

// claim makes id the running move, unless another one runs.
func (m *moves) claim(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running != "" {
		return false
	}
	m.running = id
	return true
}

// runs reports whether id is the running move.
func (m *moves) runs(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running == id
}

// end ends id's run (nothing when another move runs).
func (m *moves) end(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running == id {
		m.running = ""
	}
}

// version is a new move record version: its UnixNano, always above the
// last one given.
func (m *moves) version() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = max(uint64(time.Now().UnixNano()), m.last+1)
	return m.last
}

func (s *Service) platformStore() *chstore.Store { return s.stores[s.cfg.Regions[0].Name] }

// LoadPlacement reads the region moves into the engine's placement.
func (s *Service) LoadPlacement(ctx context.Context) error {
	return LoadPlacement(ctx, s.cfg, s.place, s.platformStore())
}

// LoadPlacement reads the region moves from the platform store (the first
// region's) into p: where each moved tenant lives, and which are being
// moved. A move to a region cfg no longer has is an error.
func LoadPlacement(ctx context.Context, cfg config.Config, p *placement.Placement, platform *chstore.Store) error {
	if p == nil {
		return errors.New("retention: no placement to load the region moves into")
	}
	// Only what the placement needs: this runs every few seconds in every
	// process, and the records' transfer notes and tables are large.
	var moves []struct {
		ID      string `ch:"id"`
		Tenant  string `ch:"tenant_id"`
		From    string `ch:"from_region"`
		To      string `ch:"to_region"`
		State   string `ch:"state"`
		Version uint64 `ch:"version"`
	}
	if err := platform.Select(ctx, &moves, "SELECT id, tenant_id, from_region, to_region, state, version FROM region_moves FINAL ORDER BY started_at DESC, id DESC"); err != nil {
		return fmt.Errorf("region moves: %w", err)
	}
	last := map[string]Move{}
	region := map[string]string{}
	for _, r := range moves { // newest first
		m := Move{ID: r.ID, Tenant: r.Tenant, From: r.From, To: r.To, State: r.State, Version: r.Version}
		if _, ok := last[m.Tenant]; !ok {
			last[m.Tenant] = m
		}
		if _, ok := region[m.Tenant]; !ok && (m.State == MoveCompleted || m.State == MoveDeleting) {
			region[m.Tenant] = m.To
		}
	}
	configured := func(r string) bool {
		return slices.ContainsFunc(cfg.Regions, func(c config.Region) bool { return c.Name == r })
	}
	var errs []error
	for tenant, m := range last {
		r := region[tenant]
		if r != "" && !configured(r) {
			errs = append(errs, fmt.Errorf("tenant %s was moved to region %q (move %s), which is not configured", tenant, r, m.ID))
			continue
		}
		if (m.State == MoveCopying || m.State == MoveDeleting) && (!configured(m.From) || !configured(m.To)) {
			errs = append(errs, fmt.Errorf("tenant %s is being moved from region %q to %q (move %s), and both must be configured until it ends", tenant, m.From, m.To, m.ID))
			continue
		}
		p.Set(tenant, r, m.State == MoveCopying, m.Version)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.Loaded()
	return nil
}

// WatchPlacement reloads the placement every interval, so processes other
// than the one that runs a move pause the tenant and follow it.
func (s *Service) WatchPlacement(ctx context.Context, every time.Duration) error {
	s.reload(ctx, every, s.LoadPlacement, "region placement not reloaded")
	return nil
}

// Moves lists region moves, newest first: of one tenant, or all ("").
func (s *Service) Moves(ctx context.Context, tenant string) ([]Move, error) {
	return listMoves(ctx, s.platformStore(), tenant)
}

func listMoves(ctx context.Context, platform *chstore.Store, tenant string) ([]Move, error) {
	var rows []struct {
		ID       string     `ch:"id"`
		Tenant   string     `ch:"tenant_id"`
		From     string     `ch:"from_region"`
		To       string     `ch:"to_region"`
		State    string     `ch:"state"`
		Detail   string     `ch:"detail"`
		Reason   string     `ch:"reason"`
		Tables   string     `ch:"tables"`
		Transfer string     `ch:"transfer"`
		By       string     `ch:"requested_by"`
		Started  time.Time  `ch:"started_at"`
		Finished *time.Time `ch:"finished_at"`
		Version  uint64     `ch:"version"`
	}
	q := "SELECT id, tenant_id, from_region, to_region, state, detail, reason, tables, transfer, requested_by, started_at, finished_at, version FROM region_moves FINAL"
	var args []any
	if tenant != "" {
		q += " WHERE tenant_id = ?"
		args = append(args, tenant)
	}
	if err := platform.Select(ctx, &rows, q+" ORDER BY started_at DESC, id DESC", args...); err != nil {
		return nil, fmt.Errorf("region moves: %w", err)
	}
	out := make([]Move, 0, len(rows))
	for _, r := range rows {
		m := Move{ID: r.ID, Tenant: r.Tenant, From: r.From, To: r.To, State: r.State, Detail: r.Detail, Reason: r.Reason,
			Transfer: r.Transfer, RequestedBy: r.By, StartedAt: r.Started.UTC(), FinishedAt: r.Finished, UpdatedAt: time.Unix(0, int64(r.Version)).UTC(), Version: r.Version}
		var st moveState
		if r.Tables != "" {
			if err := json.Unmarshal([]byte(r.Tables), &st); err != nil {
				return nil, fmt.Errorf("region move %s: %w", r.ID, err)
			}
		}
		m.Tables, m.ChainHead = st.Tables, st.Chain
		out = append(out, m)
	}
	return out, nil
}

// moveState is what a move has verified so far (the tables column).
type moveState struct {
	Tables []MovedTable `json:"tables"`
	Chain  ChainPos     `json:"chain"`
}

// saveMove stores m as its newest version and returns the version.
func (s *Service) saveMove(ctx context.Context, m Move) (uint64, error) {
	st, err := json.Marshal(moveState{Tables: m.Tables, Chain: m.ChainHead})
	if err != nil {
		return 0, err
	}
	v := s.moves.version()
	err = s.platformStore().Exec(ctx, `INSERT INTO region_moves (id, tenant_id, from_region, to_region, state, detail, reason, tables, transfer, requested_by, started_at, finished_at, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ID, m.Tenant, m.From, m.To, m.State, m.Detail, m.Reason, string(st), m.Transfer,
		m.RequestedBy, m.StartedAt, m.FinishedAt, v)
	if err != nil {
		return 0, fmt.Errorf("save region move %s: %w", m.ID, err)
	}
	return v, nil
}

// BeginMove checks a move of tenant to region to, records it and pauses the
// tenant: from here nothing in this process writes the tenant's data, and
// other processes stop within a reload of their placement. RunMove does the
// rest. Nothing is changed when it refuses.
func (s *Service) BeginMove(ctx context.Context, tenant, to string, by auditlog.Actor, reason string) (Move, error) {
	if strings.TrimSpace(reason) == "" {
		return Move{}, fmt.Errorf("%w: a region move needs a reason", ErrInvalid)
	}
	if tenant == config.PlatformTenant {
		return Move{}, fmt.Errorf("%w: the platform chain lives in the first region and does not move", ErrInvalid)
	}
	from, ok := s.place.RegionOf(s.cfg, tenant)
	if !ok {
		return Move{}, fmt.Errorf("%w: unknown tenant %q", ErrNotFound, tenant)
	}
	var names []string
	var dst config.Region
	for _, r := range s.cfg.Regions {
		names = append(names, r.Name)
		if r.Name == to {
			dst = r
		}
	}
	if dst.Name == "" {
		return Move{}, fmt.Errorf("%w: unknown region %q (configured: %s)", ErrInvalid, to, strings.Join(names, ", "))
	}
	if dst.Name == from.Name {
		return Move{}, fmt.Errorf("%w: tenant %s already lives in region %s", ErrInvalid, tenant, to)
	}
	if !sameServer(from, dst) {
		// The destination's server reads the source over HTTP.
		if _, _, _, err := s.httpEndpoint(from); err != nil {
			return Move{}, err
		}
	}
	id := "mv_" + uuid.NewString()
	if !s.moves.claim(id) {
		return Move{}, fmt.Errorf("%w: another region move is running in this process", ErrConflict)
	}
	begun := false
	defer func() {
		if !begun {
			s.moves.end(id)
		}
	}()
	if s.place.Moving(tenant) {
		return Move{}, fmt.Errorf("%w: tenant %s is being moved already", ErrConflict, tenant)
	}
	// Another process may be moving it (or have left a move to finish).
	prev, err := s.Moves(ctx, tenant)
	if err != nil {
		return Move{}, err
	}
	if len(prev) > 0 && (prev[0].State == MoveCopying || prev[0].State == MoveDeleting) {
		return Move{}, fmt.Errorf("%w: tenant %s has a move in state %s (%s); it is finished or undone first", ErrConflict, tenant, prev[0].State, prev[0].ID)
	}
	src, dstStore := s.stores[from.Name], s.stores[dst.Name]
	if src == nil || dstStore == nil {
		return Move{}, fmt.Errorf("retention: no store for region %s or %s", from.Name, dst.Name)
	}
	tabs, err := tenantTables(ctx, src)
	if err != nil {
		return Move{}, err
	}
	held, err := rowCounts(ctx, dstStore, tabs, tenant)
	if err != nil {
		return Move{}, fmt.Errorf("region %s: %w", to, err)
	}
	if len(held) > 0 {
		return Move{}, fmt.Errorf("%w: region %s already holds %d rows of tenant %s in %s; see the residency report", ErrConflict, to, held[0].Rows, tenant, held[0].Table)
	}
	m := Move{ID: id, Tenant: tenant, From: from.Name, To: to, State: MoveCopying, Reason: reason,
		RequestedBy: by.ID, StartedAt: s.Now().UTC().Truncate(time.Millisecond)}
	v, err := s.saveMove(ctx, m)
	if err != nil {
		return Move{}, err
	}
	s.place.Pause(tenant, v)
	begun = true // RunMove ends it
	return m, nil
}

// StartMove begins a move and runs it in the background: its state is in
// Moves (the API answers 202 with the move). The Service owns the run:
// Close waits for it, and once Close has begun no move starts.
func (s *Service) StartMove(ctx context.Context, tenant, to string, by auditlog.Actor, reason string) (Move, error) {
	if !s.jobs.add() {
		return Move{}, fmt.Errorf("%w: the retention engine is shutting down; start the move again once it runs", ErrConflict)
	}
	m, err := s.BeginMove(ctx, tenant, to, by, reason)
	if err != nil {
		s.jobs.done()
		return m, err
	}
	go func() {
		defer s.jobs.done()
		if _, err := s.RunMove(context.WithoutCancel(ctx), m, nil); err != nil {
			s.log.Error().Err(err).Str("tenant_id", tenant).Str("move_id", m.ID).Msg("region move")
		}
	}()
	return m, nil
}

// Close refuses new background moves and waits for those StartMove runs
// until ctx ends. A move cut short by the process ending is finished or
// undone by ResumeMoves (Run) at the next start.
func (s *Service) Close(ctx context.Context) error {
	if err := s.jobs.close(ctx); err != nil {
		return fmt.Errorf("retention: a region move still runs at shutdown (it is finished or undone at the next start): %w", err)
	}
	return nil
}

// jobs owns the goroutines a Service starts for work that outlives the
// request that asked for it (StartMove's runs).
type jobs struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// add counts a job about to start (done ends it), unless close has begun.
func (j *jobs) add() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return false
	}
	j.wg.Add(1)
	return true
}

func (j *jobs) done() { j.wg.Done() }

func (j *jobs) refuse() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
}

// close refuses new jobs and waits for the running ones until ctx ends.
func (j *jobs) close(ctx context.Context) error {
	j.refuse()
	ended := make(chan struct{})
	go func() { // ends with the last job, even when ctx ends first
		j.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tenantTable is a table with tenant rows and the columns a copy names.
type tenantTable struct {
	name    string
	columns []string
	// hashed are the columns as cityHash64 arguments: a Nullable column
	// as (isNull, value), since one NULL argument makes the hash NULL; an
	// aggregate state by its value, since a state read and written again
	// (a uniq set) may serialize in another order.
	hashed  []string
	derived bool
}

// tenantTables lists st's tables that hold tenant rows (a tenant_id
// column), with their stored columns.
func tenantTables(ctx context.Context, st *chstore.Store) ([]tenantTable, error) {
	var rows []struct {
		Table string `ch:"table"`
		Name  string `ch:"name"`
		Type  string `ch:"type"`
	}
	err := st.Select(ctx, &rows, `SELECT c.table AS table, c.name AS name, c.type AS type FROM system.columns AS c
		INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
		WHERE c.database = currentDatabase() AND t.engine LIKE '%MergeTree' AND c.default_kind NOT IN ('MATERIALIZED', 'ALIAS', 'EPHEMERAL')
		AND c.table IN (SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'tenant_id')
		ORDER BY c.table, c.position`)
	if err != nil {
		return nil, fmt.Errorf("tenant tables: %w", err)
	}
	var out []tenantTable
	for _, r := range rows {
		if slices.Contains(platformTables, r.Table) {
			continue
		}
		if len(out) == 0 || out[len(out)-1].name != r.Table {
			out = append(out, tenantTable{name: r.Table, derived: slices.Contains(derivedTables, r.Table)})
		}
		t := &out[len(out)-1]
		t.columns = append(t.columns, ident(r.Name))
		h := ident(r.Name)
		switch {
		case strings.HasPrefix(r.Type, "Nullable("):
			h = "tuple(isNull(" + h + "), assumeNotNull(" + h + "))"
		case strings.HasPrefix(r.Type, "AggregateFunction("):
			h = "finalizeAggregation(" + h + ")"
		}
		t.hashed = append(t.hashed, h)
	}
	if len(out) == 0 {
		return nil, errors.New("tenant tables: none found (are the migrations applied?)")
	}
	return out, nil
}

// rowCounts counts tenant's rows in each of tabs with one query, and
// returns the tables that have any, in the order of tabs.
func rowCounts(ctx context.Context, st *chstore.Store, tabs []tenantTable, tenant string) ([]MovedTable, error) {
	parts := make([]string, len(tabs))
	args := make([]any, len(tabs))
	for i, t := range tabs {
		parts[i] = "SELECT toUInt32(" + strconv.Itoa(i) + ") AS i, count() AS n FROM " + ident(t.name) + " WHERE tenant_id = ?"
		args[i] = tenant
	}
	var rows []struct {
		I uint32 `ch:"i"`
		N uint64 `ch:"n"`
	}
	if err := st.Select(ctx, &rows, "SELECT i, n FROM ("+strings.Join(parts, " UNION ALL ")+") WHERE n > 0 ORDER BY i", args...); err != nil {
		return nil, fmt.Errorf("count tenant rows: %w", err)
	}
	out := make([]MovedTable, len(rows))
	for k, r := range rows {
		out[k] = MovedTable{Table: tabs[r.I].name, Rows: r.N}
	}
	return out, nil
}

func ident(s string) string { return "`" + strings.ReplaceAll(s, "`", "\\`") + "`" }

// fingerprint is the count and sum(cityHash64(columns)) of tenant's rows
// in db.t.
func fingerprint(ctx context.Context, d side, t tenantTable, tenant string) (MovedTable, error) {
	var n, h uint64
	err := d.st.QueryRow(ctx, []any{&n, &h}, "SELECT count(), sum(cityHash64("+strings.Join(t.hashed, ", ")+")) FROM "+d.table(t)+" WHERE tenant_id = ?", tenant)
	if err != nil {
		return MovedTable{}, fmt.Errorf("fingerprint %s in region %s: %w", t.name, d.region.Name, err)
	}
	return MovedTable{Table: t.name, Rows: n, Hash: fmt.Sprintf("%016x", h)}, nil
}

// MoveProgress reports a move's steps as it goes.
type MoveProgress func(step string, table string, done, total int)

// RunMove copies the tenant's rows table by table (merges stopped on both
// sides and none on insert, so counts and hashes hold still), verifies every table at the
// destination against the source, switches the tenant to its new region,
// deletes its rows at the source, verifies none remain, and appends the
// signed transfer record to the tenant's and the platform's chains. On a
// failure before the switch the copies are removed and the tenant stays.
func (s *Service) RunMove(ctx context.Context, m Move, progress MoveProgress) (Move, error) {
	if !s.moves.runs(m.ID) {
		return m, fmt.Errorf("%w: region move %s was not begun by this service (BeginMove), or has run already", ErrConflict, m.ID)
	}
	defer s.moves.end(m.ID)
	// A move finishes even if its caller goes away: half a move is worse.
	ctx = context.WithoutCancel(ctx)
	src, dst := s.side(m.From), s.side(m.To)
	tr := s.track(ctx, m, progress)
	if s.MoveSettle > 0 {
		tr.step(ctx, "waiting for other processes to pause the tenant", "", 0, 0)
		time.Sleep(s.MoveSettle)
	}
	tabs, err := tenantTables(ctx, src.st)
	if err == nil {
		m, err = s.copyTables(ctx, m, src, dst, tabs, tr)
	}
	tr.stop()
	m.Detail = ""
	if err != nil {
		return s.failMove(ctx, m, dst, tabs, err)
	}
	// The move must still be ours: a process that took it for interrupted
	// (no heartbeat for MoveStale) may have undone it meanwhile.
	cur, err := s.moveRecord(ctx, m)
	if err != nil {
		return m, fmt.Errorf("region move %s: %w; the tenant stays paused until the move is resumed or undone", m.ID, err)
	}
	if cur.State != MoveCopying {
		return s.failMove(ctx, m, dst, tabs, fmt.Errorf("the move was %s by another process meanwhile", cur.State))
	}
	m.State = MoveDeleting
	v, err := s.saveMove(ctx, m)
	if err != nil {
		// The save may have landed anyway: read it back before undoing.
		cur, rerr := s.moveRecord(ctx, m)
		switch {
		case rerr == nil && cur.State == MoveCopying:
			m.State = MoveCopying
			return s.failMove(ctx, m, dst, tabs, err)
		case rerr == nil && cur.State == MoveDeleting:
			v = cur.Version
		default:
			return m, fmt.Errorf("region move %s: the switch could not be recorded or read back: %w; the tenant stays paused until the move is resumed", m.ID, errors.Join(err, rerr))
		}
	}
	s.place.Set(m.Tenant, m.To, false, v)
	m, err = s.finishMove(ctx, m, progress)
	if err == nil {
		moveTime.Observe(m.FinishedAt.Sub(m.StartedAt).Seconds())
	}
	return m, err
}

// moveRecord reads m's stored record.
func (s *Service) moveRecord(ctx context.Context, m Move) (Move, error) {
	ms, err := s.Moves(ctx, m.Tenant)
	if err != nil {
		return Move{}, err
	}
	for _, x := range ms {
		if x.ID == m.ID {
			return x, nil
		}
	}
	return Move{}, fmt.Errorf("region move %s is not recorded", m.ID)
}

// tracker keeps a running move's record current: the step it is at (in
// Detail, for the API and the page) at every step, and a heartbeat every
// MoveHeartbeat, so ResumeMoves in another process never takes it for
// interrupted. Saves are serialized; stop ends it before the move's next
// save of its own, which must be the newest.
type tracker struct {
	s        *Service
	progress MoveProgress
	mu       sync.Mutex
	m        Move
	stopped  bool
	stop     func()
}

func (s *Service) track(ctx context.Context, m Move, progress MoveProgress) *tracker {
	if progress == nil {
		progress = func(string, string, int, int) {}
	}
	tr := &tracker{s: s, m: m, progress: progress}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(MoveHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				tr.save(ctx, nil)
			}
		}
	}()
	var once sync.Once
	tr.stop = func() {
		once.Do(func() {
			tr.mu.Lock()
			tr.stopped = true
			tr.mu.Unlock()
			close(done)
			wg.Wait()
		})
	}
	return tr
}

// save stores the record, changed by change first (when not nil).
func (tr *tracker) save(ctx context.Context, change func(*Move)) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.stopped {
		return
	}
	if change != nil {
		change(&tr.m)
	}
	if _, err := tr.s.saveMove(ctx, tr.m); err != nil {
		tr.s.log.Warn().Err(err).Str("move_id", tr.m.ID).Msg("region move progress not saved")
	}
}

// step reports a step to the caller and in the move's record.
func (tr *tracker) step(ctx context.Context, step, table string, done, total int) {
	tr.progress(step, table, done, total)
	detail := step
	if table != "" && total > 0 {
		detail = fmt.Sprintf("%s %s (table %d of %d)", step, table, min(done+1, total), total)
	}
	tr.save(ctx, func(m *Move) { m.Detail = detail })
}

func (s *Service) regionNamed(name string) config.Region {
	for _, r := range s.cfg.Regions {
		if r.Name == name {
			return r
		}
	}
	return config.Region{Name: name}
}

// side is one end of a move: a region's store and database, and how the
// other end's server reaches it over ClickHouse's HTTP interface.
type side struct {
	region config.Region
	st     *chstore.Store
}

func (s *Service) side(region string) side {
	r := s.regionNamed(region)
	return side{region: r, st: s.stores[r.Name]}
}

// table is t qualified by the side's database.
func (d side) table(t tenantTable) string { return ident(d.region.Database) + "." + ident(t.name) }

// merges stops or starts merges on the tables of a side.
func merges(ctx context.Context, d side, verb string, tabs []tenantTable) error {
	var errs []error
	for _, t := range tabs {
		if err := d.st.Exec(ctx, "SYSTEM "+verb+" MERGES "+d.table(t)); err != nil {
			errs = append(errs, fmt.Errorf("%s merges of %s.%s: %w", strings.ToLower(verb), d.region.Name, t.name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) copyTables(ctx context.Context, m Move, src, dst side, tabs []tenantTable, tr *tracker) (Move, error) {
	err := merges(ctx, src, "STOP", tabs)
	if err == nil {
		err = merges(ctx, dst, "STOP", tabs)
	}
	defer func() {
		if err := errors.Join(merges(ctx, src, "START", tabs), merges(ctx, dst, "START", tabs)); err != nil {
			s.log.Error().Err(err).Str("move_id", m.ID).Msg("merges not restarted after a region move")
		}
	}()
	if err != nil {
		return m, err
	}
	head0, err := head(ctx, src.st, m.Tenant)
	if err != nil {
		return m, err
	}
	m.ChainHead = head0
	m.Tables = nil
	for i, t := range tabs {
		if t.derived {
			continue
		}
		tr.step(ctx, "copying", t.name, i, len(tabs))
		before, err := fingerprint(ctx, src, t, m.Tenant)
		if err != nil {
			return m, err
		}
		if before.Rows > 0 {
			q, args, err := s.copySQL(src, dst, t, m.Tenant)
			if err == nil {
				err = dst.st.Exec(ctx, q, args...)
			}
			if err != nil {
				return m, fmt.Errorf("copy %s: %w", t.name, err)
			}
		}
		after, err := fingerprint(ctx, dst, t, m.Tenant)
		if err != nil {
			return m, err
		}
		if after != before {
			return m, fmt.Errorf("verify %s: the source has %d rows (hash %s), the destination %d (hash %s)", t.name, before.Rows, before.Hash, after.Rows, after.Hash)
		}
		m.Tables = append(m.Tables, before)
	}
	// A write that reached the source after its table was copied would be
	// lost with the source rows: check nothing changed while copying.
	tr.step(ctx, "verifying the source did not change", "", len(tabs), len(tabs))
	i := 0
	for _, t := range tabs {
		if t.derived {
			continue
		}
		again, err := fingerprint(ctx, src, t, m.Tenant)
		if err != nil {
			return m, err
		}
		if again != m.Tables[i] {
			return m, fmt.Errorf("verify %s: the source changed during the copy (%d rows, then %d): something still writes the tenant's data", t.name, m.Tables[i].Rows, again.Rows)
		}
		i++
	}
	return m, nil
}

// copySQL is the statement, run at the destination, that copies the
// tenant's rows of t: INSERT … SELECT from the source database when both
// regions are on one server, else from the source server's HTTP interface
// with the url() table function (Native format, so every type, aggregate
// states included, arrives as it is stored).
func (s *Service) copySQL(src, dst side, t tenantTable, tenant string) (string, []any, error) {
	cols := strings.Join(t.columns, ", ")
	insert := "INSERT INTO " + dst.table(t) + " (" + cols + ") SELECT " + cols + " FROM "
	// No merge on insert (it would collapse rows before they are counted),
	// no deduplication of blocks a retried move inserts again.
	settings := " SETTINGS log_comment = '" + moveComment + "', optimize_on_insert = 0, insert_deduplicate = 0"
	if sameServer(src.region, dst.region) {
		return insert + src.table(t) + " WHERE tenant_id = ?" + settings, []any{tenant}, nil
	}
	base, user, password, err := s.httpEndpoint(src.region)
	if err != nil {
		return "", nil, err
	}
	q := url.Values{"database": {src.region.Database}, "param_tenant": {tenant},
		"query": {"SELECT " + cols + " FROM " + ident(t.name) + " WHERE tenant_id = {tenant:String} FORMAT Native"}}
	from := base + "/?" + q.Encode()
	if user == "" {
		return insert + "url(?, 'Native')" + settings, []any{from}, nil
	}
	return insert + "url(?, 'Native', headers('X-ClickHouse-User' = ?, 'X-ClickHouse-Key' = ?))" + settings, []any{from, user, password}, nil
}

// sameServer reports whether two regions' databases are on one ClickHouse
// server: neither names a server of its own, or both name the same host.
func sameServer(a, b config.Region) bool {
	return serverOf(a.DSN) == serverOf(b.DSN)
}

func serverOf(dsn string) string {
	if dsn == "" {
		return ""
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	return strings.ToLower(u.Host)
}

// httpEndpoint is where another ClickHouse server reaches region r over the
// HTTP interface: its http_url, else its DSN when that is HTTP, else the
// embedded engine; with the user and password to send.
func (s *Service) httpEndpoint(r config.Region) (base, user, password string, err error) {
	raw := r.HTTPURL
	if raw == "" {
		raw = r.DSN
	}
	if raw == "" {
		raw = s.cfg.ClickHouse.DSN
	}
	if raw == "" {
		if s.EngineAddr == "" {
			return "", "", "", fmt.Errorf("%w: region %s is on the embedded engine, whose address this process does not know", ErrInvalid, r.Name)
		}
		return "http://" + s.EngineAddr, s.cfg.ClickHouse.User, s.cfg.ClickHouse.Password, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", "", fmt.Errorf("%w: region %s is reached with the native protocol; set regions[].http_url to its HTTP interface (http://host:8123) so the other region's server can read from it", ErrInvalid, r.Name)
	}
	if u.User != nil {
		user = u.User.Username()
		password, _ = u.User.Password()
	}
	if v := u.Query().Get("username"); v != "" {
		user = v
	}
	if v := u.Query().Get("password"); v != "" {
		password = v
	}
	return u.Scheme + "://" + u.Host, user, password, nil
}

// failMove removes the copies and leaves the tenant where it was.
func (s *Service) failMove(ctx context.Context, m Move, dst side, tabs []tenantTable, cause error) (Move, error) {
	var errs []error
	for _, t := range tabs {
		if err := dst.st.Exec(ctx, "ALTER TABLE "+dst.table(t)+" DELETE WHERE tenant_id = ? SETTINGS mutations_sync = 2", m.Tenant); err != nil {
			errs = append(errs, fmt.Errorf("remove the copies in %s: %w", t.name, err))
		}
	}
	done := s.Now().UTC().Truncate(time.Millisecond)
	m.State, m.Detail, m.FinishedAt = MoveFailed, cause.Error(), &done
	if len(errs) > 0 {
		m.Detail += "; " + errors.Join(errs...).Error()
	}
	v, err := s.saveMove(ctx, m)
	errs = append(errs, err)
	if v == 0 { // not recorded: this process stops waiting all the same
		v = uint64(time.Now().UnixNano())
	}
	s.place.Set(m.Tenant, "", false, v)
	moveEnds.WithLabelValues(MoveFailed).Inc()
	actor := auditlog.Actor{Type: "user", ID: m.RequestedBy}
	meta := map[string]string{"move_id": m.ID, "from_region": m.From, "to_region": m.To}
	for _, chain := range []string{m.Tenant, config.PlatformTenant} {
		s.recordOutcome(ctx, chain, actor, "tenant.region_move_failed", m.Tenant, m.Reason, "failure", m.Detail, meta)
	}
	s.log.Error().Err(cause).Str("tenant_id", m.Tenant).Str("move_id", m.ID).Msg("region move failed; the tenant stays in its region")
	return m, errors.Join(append([]error{fmt.Errorf("%w: region move failed, the tenant stays in %s: %w", ErrConflict, m.From, cause)}, errs...)...)
}

// finishMove deletes the tenant's rows at the source, checks none remain,
// and issues the signed transfer record.
func (s *Service) finishMove(ctx context.Context, m Move, progress MoveProgress) (Move, error) {
	src := s.stores[m.From]
	if src == nil {
		return m, fmt.Errorf("region move %s: region %s is not configured", m.ID, m.From)
	}
	tabs, err := tenantTables(ctx, src)
	if err != nil {
		return m, err
	}
	// A long delete beats too, so no other process takes the move for
	// interrupted and finishes it a second time.
	tr := s.track(ctx, m, progress)
	defer tr.stop()
	for i, t := range tabs {
		tr.step(ctx, "deleting at the source", t.name, i, len(tabs))
		if err := src.Exec(ctx, "ALTER TABLE "+ident(t.name)+" DELETE WHERE tenant_id = ? SETTINGS mutations_sync = 2", m.Tenant); err != nil {
			return m, fmt.Errorf("delete %s at the source: %w", t.name, err)
		}
	}
	left, err := rowCounts(ctx, src, tabs, m.Tenant)
	if err != nil {
		return m, err
	}
	if len(left) > 0 {
		n := uint64(0)
		for _, t := range left {
			n += t.Rows
		}
		return m, fmt.Errorf("%d rows of tenant %s remain in region %s after the deletes; the move stays in state %s", n, m.Tenant, m.From, MoveDeleting)
	}
	done := s.Now().UTC().Truncate(time.Millisecond)
	note := Transfer{Version: 1, Move: m.ID, Tenant: m.Tenant, From: m.From, To: m.To, Tables: m.Tables, Regenerated: derivedTables,
		ChainHead: m.ChainHead, Reason: m.Reason, RequestedBy: m.RequestedBy, StartedAt: m.StartedAt, CompletedAt: done,
		SourceEmpty: true, ChainRecordID: uuid.NewString()}
	signed, err := s.signNote(TransferOrigin(m.Tenant), note)
	if err != nil {
		return m, err
	}
	m.State, m.Transfer, m.FinishedAt, m.Detail = MoveCompleted, signed, &done, ""
	tr.stop() // the completed record must be the newest
	if _, err := s.saveMove(ctx, m); err != nil {
		return m, err
	}
	actor := auditlog.Actor{Type: "user", ID: m.RequestedBy}
	meta := map[string]string{"move_id": m.ID, "from_region": m.From, "to_region": m.To, "transfer": signed}
	rec := auditlog.Record{RecordID: uuid.MustParse(note.ChainRecordID), TenantID: m.Tenant, Time: done, Actor: actor, Action: "tenant.region_moved",
		Target: auditlog.Target{Type: "tenant", ID: m.Tenant}, Outcome: "success", Reason: m.Reason, SourceService: "tenantscope-retention", Metadata: meta}
	if err := s.audit.Record(ctx, rec); err != nil {
		s.log.Error().Err(err).Str("tenant_id", m.Tenant).Str("move_id", m.ID).Msg("could not chain a transfer record")
	}
	s.recordOutcome(ctx, config.PlatformTenant, actor, "tenant.region_moved", m.Tenant, m.Reason, "success", "", meta)
	moveEnds.WithLabelValues(MoveCompleted).Inc()
	tr.progress("completed", "", len(tabs), len(tabs))
	s.log.Info().Str("tenant_id", m.Tenant).Str("move_id", m.ID).Str("from", m.From).Str("to", m.To).Msg("tenant moved to another region")
	return m, nil
}

func (s *Service) recordOutcome(ctx context.Context, chain string, by auditlog.Actor, action, tenant, reason, outcome, why string, meta map[string]string) {
	rec := auditlog.Record{RecordID: uuid.New(), TenantID: chain, Time: s.Now().UTC(), Actor: by, Action: action,
		Target: auditlog.Target{Type: "tenant", ID: tenant}, Outcome: outcome, Reason: reason, SourceService: "tenantscope-retention", Metadata: meta}
	if why != "" {
		rec.Reason = why
	}
	if err := s.audit.Record(ctx, rec); err != nil {
		s.log.Error().Err(err).Str("tenant_id", chain).Str("action", action).Msg("could not audit a region move")
	}
}

// ResumeMoves finishes what a process stopped in the middle of a move left:
// a move still copying is undone (the copies removed, the tenant stays), a
// move deleting at the source is finished. The process that runs purges
// calls it at start.
func (s *Service) ResumeMoves(ctx context.Context) error {
	moves, err := s.Moves(ctx, "")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var errs []error
	for _, m := range moves {
		if seen[m.Tenant] {
			continue
		}
		seen[m.Tenant] = true
		if (m.State != MoveCopying && m.State != MoveDeleting) || s.Now().Sub(m.UpdatedAt) < MoveStale {
			continue
		}
		if !s.moves.claim(m.ID) {
			continue // a move runs in this process: it is not interrupted
		}
		err := s.resumeMove(ctx, m)
		s.moves.end(m.ID)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resumeMove undoes an interrupted move that was copying, or finishes one
// that was deleting at the source.
func (s *Service) resumeMove(ctx context.Context, m Move) error {
	if m.State != MoveCopying {
		_, err := s.finishMove(ctx, m, nil)
		return err
	}
	src, dst := s.side(m.From), s.side(m.To)
	if src.st == nil || dst.st == nil {
		return fmt.Errorf("region move %s: region %s or %s is not configured", m.ID, m.From, m.To)
	}
	tabs, err := tenantTables(ctx, src.st)
	if err == nil {
		err = errors.Join(merges(ctx, src, "START", tabs), merges(ctx, dst, "START", tabs))
	}
	if err != nil {
		return err
	}
	_, err = s.failMove(ctx, m, dst, tabs, errors.New("interrupted while copying (the process stopped)"))
	s.log.Warn().Str("tenant_id", m.Tenant).Str("move_id", m.ID).Msg("an interrupted region move was undone")
	if err != nil && !errors.Is(err, ErrConflict) {
		return err
	}
	return nil
}
