// Package retention keeps each tenant's data exactly as long as its policy
// says and only where it may live: per-tenant retention policies enforced
// through the per-row retention_days column (TTL) and purge runs, legal
// holds that nothing removes, erasure of a data subject with a signed
// certificate in the tenant's audit chain, and a residency report read from
// the stores themselves.
package retention

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// HeldDays is the retention_days of held rows: they never expire.
const HeldDays = 65535

// moveComment marks inserts that only move rows between partitions; the
// usage views skip them (migration 0007).
const moveComment = "tenantscope:retention-move"

// Errors callers map to statuses.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// table is where a signal lives and which column holds its time.
type table struct{ name, timeCol string }

var tables = map[string]table{
	"events": {"events", "time"}, "logs": {"logs", "time"}, "spans": {"spans", "start_time"}, "audit_records": {"audit_records", "time"},
}

// Service is the retention engine.
type Service struct {
	cfg    config.Config
	stores map[string]*chstore.Store
	audit  auditlog.Publisher
	js     jetstream.JetStream // dead letters (may be nil)
	signer string              // signs erasure certificates (note signer key)
	log    zerolog.Logger
	// Shred, when set, holds the crypto-shredding keys: an erasure also
	// destroys the subject's key.
	Shred *Shredder
	// Now is the clock.
	Now func() time.Time
	// MoveSettle is how long a region move waits after pausing the tenant
	// before it copies, so collectors in other processes notice the pause
	// (they reload the placement every few seconds). Zero when the move runs
	// in the only process that writes.
	MoveSettle time.Duration
	// EngineAddr is the embedded engine's HTTP address (host:port), which
	// a region on another server reads from when a tenant moves there.
	EngineAddr string
}

// hold holds a tenant's data for a change until release (which may be
// called more than once), so a region move waits for it; while a move runs
// the change is refused. The tenant's store is looked up after this, so it
// is the one the change lands in.
func (s *Service) hold(tenant string) (release func(), err error) {
	r, ok := s.cfg.Placement().Write(tenant)
	if !ok {
		return func() {}, fmt.Errorf("%w: tenant %s is being moved to another region (or where it lives could not be read); try again when the move ends", ErrConflict, tenant)
	}
	var once sync.Once
	return func() { once.Do(r) }, nil
}

// change holds tenant (see hold) and returns the store its change goes to.
func (s *Service) change(tenant string) (st *chstore.Store, release func(), err error) {
	if release, err = s.hold(tenant); err != nil {
		return nil, release, err
	}
	if st, err = s.StoreOf(tenant); err != nil {
		release()
	}
	return st, release, err
}

// New builds the engine. audit records every action in the tenant's chain;
// js (optional) reaches the dead-letter stream; signerKey signs erasure
// certificates.
func New(cfg config.Config, stores map[string]*chstore.Store, audit auditlog.Publisher, js jetstream.JetStream, signerKey string, log zerolog.Logger) *Service {
	return &Service{cfg: cfg, stores: stores, audit: audit, js: js, signer: signerKey, log: log.With().Str("component", "retention").Logger(), Now: time.Now}
}

// StoreOf is the one place the engine finds a tenant's store.
func (s *Service) StoreOf(tenant string) (*chstore.Store, error) {
	if r, ok := s.cfg.RegionOf(tenant); ok && tenant != config.PlatformTenant {
		if st := s.stores[r.Name]; st != nil {
			return st, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown tenant %q", ErrNotFound, tenant)
}

// Policy is a tenant's retention for one signal.
type Policy struct {
	Tenant    string    `json:"tenant"`
	Signal    string    `json:"signal"`
	Days      int       `json:"days"`
	Version   uint32    `json:"version"`
	Default   bool      `json:"default"`
	UpdatedAt time.Time `json:"updated_at,omitempty"`
	UpdatedBy string    `json:"updated_by,omitempty"`
}

// Policies is a tenant's policy for every signal (the default where none
// was set).
func (s *Service) Policies(ctx context.Context, tenant string) (map[string]Policy, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]Policy{}
	for _, sig := range config.Signals {
		out[sig] = Policy{Tenant: tenant, Signal: sig, Days: s.cfg.Retention.Defaults[sig], Default: true}
	}
	var rows []struct {
		Signal    string    `ch:"signal"`
		Days      uint16    `ch:"days"`
		Version   uint32    `ch:"version"`
		UpdatedAt time.Time `ch:"updated_at"`
		UpdatedBy string    `ch:"updated_by"`
	}
	if err := st.Select(ctx, &rows, "SELECT signal, days, version, updated_at, updated_by FROM retention_policies FINAL WHERE tenant_id = ?", tenant); err != nil {
		return nil, fmt.Errorf("retention policies: %w", err)
	}
	for _, r := range rows {
		out[r.Signal] = Policy{Tenant: tenant, Signal: r.Signal, Days: int(r.Days), Version: r.Version, UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy}
	}
	return out, nil
}

// SetPolicy versions a new policy, applies it to stored data (shortening
// purges what is now past it, lengthening keeps what is still there) and
// audits the change.
func (s *Service) SetPolicy(ctx context.Context, tenant, signal string, days int, by auditlog.Actor, reason string) (Policy, error) {
	if !slices.Contains(config.Signals, signal) {
		return Policy{}, fmt.Errorf("%w: signal %q is not one of %s", ErrInvalid, signal, strings.Join(config.Signals, ", "))
	}
	lo, hi := s.cfg.Retention.Minimum[signal], s.cfg.Retention.Maximum[signal]
	if days < lo || days > hi {
		return Policy{}, fmt.Errorf("%w: %d days of %s is outside %d..%d (the configured bounds; %s has a legal minimum of %d days)", ErrInvalid, days, signal, lo, hi, signal, lo)
	}
	if strings.TrimSpace(reason) == "" {
		return Policy{}, fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	st, release, err := s.change(tenant)
	if err != nil {
		return Policy{}, err
	}
	defer release()
	cur, err := s.Policies(ctx, tenant)
	if err != nil {
		return Policy{}, err
	}
	before := cur[signal]
	p := Policy{Tenant: tenant, Signal: signal, Days: days, Version: before.Version + 1, UpdatedAt: s.Now().UTC().Truncate(time.Millisecond), UpdatedBy: by.ID}
	if err := st.Exec(ctx, "INSERT INTO retention_policies (tenant_id, signal, days, version, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)",
		tenant, signal, uint16(days), p.Version, p.UpdatedAt, p.UpdatedBy); err != nil {
		return Policy{}, fmt.Errorf("retention policy: %w", err)
	}
	s.record(ctx, tenant, by, "retention.policy_changed", "retention_policy", signal, reason,
		map[string]any{"before": map[string]any{"days": before.Days}, "after": map[string]any{"days": days}}, map[string]string{"version": fmt.Sprint(p.Version)})
	release() // the purge holds the tenant itself
	if _, err := s.Purge(ctx, tenant, "policy change", by); err != nil {
		return p, fmt.Errorf("policy stored, applying it failed (the next purge run retries): %w", err)
	}
	return p, nil
}

// subject builds the condition matching a data subject in a signal's table
// from the configured identifier fields, with bound values.
func (s *Service) subject(signal, value string) (string, []any, error) {
	ids := s.cfg.Retention.Identifiers[signal]
	if len(ids) == 0 {
		return "", nil, nil
	}
	var conds []string
	var args []any
	for _, id := range ids {
		switch {
		case strings.HasPrefix(id, "payload."):
			parts := strings.Split(strings.TrimPrefix(id, "payload."), ".")
			for i, p := range parts {
				parts[i] = "'" + p + "'" // validated: letters, digits, _
			}
			conds = append(conds, "JSONExtractString(payload, "+strings.Join(parts, ", ")+") = ?")
		case strings.HasPrefix(id, "attributes."):
			conds = append(conds, "attributes[?] = ?")
			args = append(args, strings.TrimPrefix(id, "attributes."))
		default:
			conds = append(conds, id+" = ?")
		}
		args = append(args, value)
	}
	return "(" + strings.Join(conds, " OR ") + ")", args, nil
}

// move rewrites the retention_days of tenant's rows in a table matching
// where (never rows already at days): the rows are copied with the new
// value (their partition) and the old copies deleted, synchronously. It
// returns how many rows moved.
func move(ctx context.Context, st *chstore.Store, t table, tenant, where string, args []any, days uint16) (uint64, error) {
	cond := "tenant_id = ? AND retention_days != ? AND (" + where + ")"
	all := append([]any{tenant, days}, args...)
	var n uint64
	if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+t.name+" WHERE "+cond, all...); err != nil || n == 0 {
		return 0, err
	}
	// Columns named one by one: "SELECT * REPLACE (…)" inserted no rows (and
	// no error) on the embedded engine.
	var cols []string
	var rows []struct {
		Name string `ch:"name"`
	}
	if err := st.Select(ctx, &rows, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position", t.name); err != nil {
		return 0, fmt.Errorf("move %s rows: %w", t.name, err)
	}
	sel := make([]string, len(rows))
	for i, r := range rows {
		cols = append(cols, r.Name)
		sel[i] = r.Name
		if r.Name == "retention_days" {
			sel[i] = "toUInt16(?)"
		}
	}
	if err := st.Exec(ctx, "INSERT INTO "+t.name+" ("+strings.Join(cols, ", ")+") SELECT "+strings.Join(sel, ", ")+" FROM "+t.name+" WHERE "+cond+
		" SETTINGS log_comment = '"+moveComment+"'", append([]any{days}, all...)...); err != nil {
		return 0, fmt.Errorf("move %s rows: %w", t.name, err)
	}
	if err := st.Exec(ctx, "ALTER TABLE "+t.name+" DELETE WHERE "+cond+" SETTINGS mutations_sync = 2", all...); err != nil {
		return 0, fmt.Errorf("move %s rows: %w", t.name, err)
	}
	return n, nil
}

// record appends an audit record of a retention action to chain.
func (s *Service) record(ctx context.Context, chain string, by auditlog.Actor, action, targetType, target, reason string, changes any, meta map[string]string) string {
	rec := auditlog.Record{RecordID: uuid.New(), TenantID: chain, Time: s.Now().UTC(), Actor: by, Action: action,
		Target: auditlog.Target{Type: targetType, ID: target}, Outcome: "success", Reason: reason, SourceService: "tenantscope-retention", Metadata: meta}
	id := rec.RecordID.String()
	if changes != nil {
		rec.Changes, _ = json.Marshal(changes) //nolint:errcheck // plain values
	}
	if err := s.audit.Record(ctx, rec); err != nil {
		s.log.Warn().Err(err).Str("tenant_id", chain).Str("action", action).Msg("could not audit a retention action")
	}
	return id
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	return prefix + hex.EncodeToString(b)
}
