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
	"github.com/tenantscope/tenantscope/placement"
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

// table is where a signal lives, which column holds its time, and the
// columns that name a row (its sort key after tenant_id).
type table struct {
	name, timeCol string
	key           []string
}

var tables = map[string]table{
	"events":        {"events", "time", []string{"service", "action", "time", "event_id"}},
	"logs":          {"logs", "time", []string{"service", "time", "log_id"}},
	"spans":         {"spans", "start_time", []string{"service", "name", "start_time", "span_id"}},
	"audit_records": {"audit_records", "time", nil},
}

// Service is the retention engine.
type Service struct {
	cfg config.Config
	// place is where tenants live after region moves and which are paused
	// while they move (a move sets it; other processes reload it).
	place  *placement.Placement
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
	// InsertMargin bounds how long an insert takes from the server stamping
	// its rows' received_at to their being visible, and a collector's batch
	// from decoding to insert: a rewrite waits this long after reading its
	// cutoff, and after every writer confirmed a change.
	InsertMargin time.Duration
	// WriterWait is how long a change of policies or holds waits for every
	// writer to load it before stored rows are rewritten (LockWait: for
	// another change of the same tenant to end).
	WriterWait, LockWait time.Duration

	coord coord
	owner string
	moves moves
	jobs  jobs // background moves (StartMove), waited for by Close
}

// hold holds a tenant's data for a change until release (which may be
// called more than once), so a region move waits for it; while a move runs
// the change is refused. The tenant's store is looked up after this, so it
// is the one the change lands in.
func (s *Service) hold(tenant string) (release func(), err error) {
	r, ok := s.place.Write(tenant)
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

// New builds the engine. place is the process's placement (nil: no moves;
// region moves need one); audit records every action in the tenant's chain;
// js (optional) reaches the dead-letter stream; signerKey signs erasure
// certificates.
func New(cfg config.Config, place *placement.Placement, stores map[string]*chstore.Store, audit auditlog.Publisher, js jetstream.JetStream, signerKey string, log zerolog.Logger) *Service {
	return &Service{cfg: cfg, place: place, stores: stores, audit: audit, js: js, signer: signerKey, log: log.With().Str("component", "retention").Logger(), Now: time.Now,
		InsertMargin: time.Second, WriterWait: 30 * time.Second, LockWait: 2 * time.Minute, coord: coord{js: js}, owner: owner()}
}

// StoreOf is the one place the engine finds a tenant's store.
func (s *Service) StoreOf(tenant string) (*chstore.Store, error) {
	if r, ok := s.place.RegionOf(s.cfg, tenant); ok && tenant != config.PlatformTenant {
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
	var p Policy
	err := s.exclusive(ctx, tenant, "policy change", func() error {
		st, release, err := s.change(tenant)
		if err != nil {
			return err
		}
		defer release()
		cur, err := s.Policies(ctx, tenant)
		if err != nil {
			return err
		}
		before := cur[signal]
		p = Policy{Tenant: tenant, Signal: signal, Days: days, Version: before.Version + 1, UpdatedAt: s.Now().UTC().Truncate(time.Millisecond), UpdatedBy: by.ID}
		if err := st.Exec(ctx, "INSERT INTO retention_policies (tenant_id, signal, days, version, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)",
			tenant, signal, uint16(days), p.Version, p.UpdatedAt, p.UpdatedBy); err != nil {
			return fmt.Errorf("retention policy: %w", err)
		}
		s.record(ctx, tenant, by, "retention.policy_changed", "retention_policy", signal, reason,
			map[string]any{"before": map[string]any{"days": before.Days}, "after": map[string]any{"days": days}}, map[string]string{"version": fmt.Sprint(p.Version)})
		if _, err := s.apply(ctx, tenant, "policy change", by); err != nil {
			return fmt.Errorf("policy stored, applying it failed (the next purge run retries): %w", err)
		}
		return nil
	})
	if err != nil && p.Version == 0 {
		return Policy{}, err
	}
	return p, err
}

// apply brings tenant's stored rows in line with a change of its policies
// or holds just committed (the caller holds the tenant, exclusively): every
// writer loads the change first, then a purge run rewrites what was stored
// before.
func (s *Service) apply(ctx context.Context, tenant, trigger string, by auditlog.Actor) (Receipt, error) {
	late, err := s.propagate(ctx, tenant)
	if err != nil {
		return Receipt{}, err
	}
	r, err := s.purgeTenant(ctx, tenant, newID("run_"), trigger, by, late)
	if err == nil {
		lastPurge.SetToCurrentTime()
	}
	return r, err
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
