// Package apikeys lets tenant admins manage their tenant's API keys: create
// (the key is shown once, only its SHA-256 is stored), list with the
// last-used time, and revoke. Keys live in the api_keys table of their
// tenant's region; every process keeps them in memory (refreshed every
// RefreshEvery, at once for changes made by the process itself), so
// authenticating a request never waits for ClickHouse. Each creation and
// revocation is a record in the tenant's audit chain.
//
// Lineage: each key records who created it (CreatedBy, CreatedByType) and,
// when that was another key created at run time, that key's id
// (ParentKeyID). RevokeCascade revokes a key and every live key it minted,
// and theirs.
package apikeys

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/placement"
)

// Key is a stored API key (never the key itself).
type Key struct {
	ID        string    `ch:"key_id" json:"id"`
	TenantID  string    `ch:"tenant_id" json:"tenant_id"`
	Name      string    `ch:"name" json:"name"`
	Role      string    `ch:"role" json:"role"`
	Hash      string    `ch:"key_hash" json:"-"`
	CreatedAt time.Time `ch:"created_at" json:"created_at"`
	CreatedBy string    `ch:"created_by" json:"created_by"`
	// CreatedByType is the kind of creator: CreatorUser, CreatorKey or
	// CreatorConfiguredKey ("" for keys created before lineage was kept).
	CreatedByType string `ch:"created_by_type" json:"created_by_type"`
	// ParentKeyID is the key that created this one (CreatorKey).
	ParentKeyID string     `ch:"parent_key_id" json:"parent_key_id,omitempty"`
	RevokedAt   *time.Time `ch:"revoked_at" json:"revoked_at,omitempty"`
	RevokedBy   string     `ch:"revoked_by" json:"revoked_by,omitempty"`
	LastUsedAt  *time.Time `ch:"last_used_at" json:"last_used_at,omitempty"` // from api_key_uses
	Version     uint64     `ch:"version" json:"-"`
}

// Kinds of creator (Key.CreatedByType).
const (
	CreatorUser          = "user"
	CreatorKey           = "api_key"
	CreatorConfiguredKey = "configured_key"
)

// Revoked reports whether k no longer authenticates.
func (k Key) Revoked() bool { return k.RevokedAt != nil }

// Errors callers map to statuses.
var (
	ErrInvalid  = errors.New("invalid API key request")
	ErrNotFound = errors.New("no such API key in this tenant")
	ErrRevoked  = errors.New("the API key is already revoked")
	ErrMoving   = errors.New("the tenant is being moved to another region; try again when the move ends")
)

// Roles a tenant admin may give a key: the tenant roles.
var Roles = []string{config.RoleTenantAdmin, config.RoleTenantViewer}

// RefreshEvery is how often a process reloads keys changed by others and
// writes the last-used times it saw.
var RefreshEvery = 10 * time.Second

// Store manages keys.
type Store struct {
	stores  func(tenant string) (*chstore.Store, error)
	regions func() []*chstore.Store
	tenants map[string]bool
	// placement pauses writes of a tenant being moved to another region.
	placement *placement.Placement
	audit     auditlog.Publisher
	log       zerolog.Logger

	mu     sync.Mutex
	byHash map[string]Key
	used   map[string]time.Time // key id → last use not yet written
}

// New builds a Store. place (nil: no moves) pauses writes of a tenant being
// moved; stores finds a tenant's region store, regions lists every region
// store; audit (optional) records creations and revocations.
func New(cfg config.Config, place *placement.Placement, stores func(string) (*chstore.Store, error), regions func() []*chstore.Store, audit auditlog.Publisher, log zerolog.Logger) *Store {
	s := &Store{stores: stores, regions: regions, tenants: map[string]bool{}, placement: place, audit: audit, log: log.With().Str("component", "apikeys").Logger(),
		byHash: map[string]Key{}, used: map[string]time.Time{}}
	for _, t := range cfg.Tenants {
		s.tenants[t.ID] = true
	}
	return s
}

// Lookup authenticates a key by its hash (identity.Keys calls it).
func (s *Store) Lookup(hash string) (identity.Principal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byHash[hash]
	if !ok || k.Revoked() {
		return identity.Principal{}, false
	}
	s.used[k.ID] = time.Now().UTC()
	return identity.Principal{Name: k.Name + " (" + k.ID + ")", Role: k.Role, Tenant: k.TenantID, KeyID: k.ID}, true
}

const columns = "key_id, tenant_id, name, role, key_hash, created_at, created_by, created_by_type, parent_key_id, revoked_at, revoked_by, version"

// Load reads every region's keys into memory.
func (s *Store) Load(ctx context.Context) error {
	all := map[string]Key{}
	for _, st := range s.regions() {
		var keys []Key
		if err := st.Select(ctx, &keys, "SELECT "+columns+", CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS last_used_at FROM api_keys FINAL"); err != nil {
			return fmt.Errorf("apikeys: load: %w", err)
		}
		for _, k := range keys {
			all[k.Hash] = k
		}
	}
	s.mu.Lock()
	s.byHash = all
	s.mu.Unlock()
	return nil
}

// Run keeps the keys fresh and writes last-used times until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.Flush(context.WithoutCancel(ctx)); err != nil {
				s.log.Warn().Err(err).Msg("last-used times not written")
			}
			return nil
		case <-t.C:
			if err := s.Flush(ctx); err != nil {
				s.log.Warn().Err(err).Msg("last-used times not written")
			}
			if err := s.Load(ctx); err != nil {
				s.log.Warn().Err(err).Msg("API keys not refreshed")
			}
		}
	}
}

// Flush writes the last uses seen since the previous flush.
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	type use struct {
		tenant, id string
		at         time.Time
	}
	var uses []use
	for _, k := range s.byHash {
		if at, ok := s.used[k.ID]; ok {
			uses = append(uses, use{k.TenantID, k.ID, at})
		}
	}
	s.used = map[string]time.Time{}
	s.mu.Unlock()
	var errs []error
	for _, u := range uses {
		release, ok := s.placement.Write(u.tenant)
		if !ok { // being moved: written after the move, into its new region
			s.mu.Lock()
			if at, seen := s.used[u.id]; !seen || at.Before(u.at) {
				s.used[u.id] = u.at
			}
			s.mu.Unlock()
			continue
		}
		st, err := s.stores(u.tenant)
		if err == nil {
			err = st.Exec(ctx, "INSERT INTO api_key_uses (tenant_id, key_id, used_at) VALUES (?, ?, ?)", u.tenant, u.id, u.at)
		}
		release()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// write stores k as its newest version and updates the cache.
func (s *Store) write(ctx context.Context, k Key) error {
	release, ok := s.placement.Write(k.TenantID)
	if !ok {
		return ErrMoving
	}
	defer release()
	st, err := s.stores(k.TenantID)
	if err != nil {
		return err
	}
	k.Version = uint64(time.Now().UnixNano())
	if err := st.Exec(ctx, "INSERT INTO api_keys ("+columns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		k.ID, k.TenantID, k.Name, k.Role, k.Hash, k.CreatedAt, k.CreatedBy, k.CreatedByType, k.ParentKeyID, k.RevokedAt, k.RevokedBy, k.Version); err != nil {
		return fmt.Errorf("apikeys: write %s: %w", k.ID, err)
	}
	s.mu.Lock()
	if old, ok := s.byHash[k.Hash]; !ok || old.Version <= k.Version {
		s.byHash[k.Hash] = k
	}
	s.mu.Unlock()
	return nil
}

// List returns a tenant's keys, newest first, read from its store (the
// tenant scope is the query's first condition).
func (s *Store) List(ctx context.Context, tenant string) ([]Key, error) {
	st, err := s.stores(tenant)
	if err != nil {
		return nil, err
	}
	var keys []Key
	if err := st.Select(ctx, &keys, `SELECT `+columns+`, u.used_at AS last_used_at
		FROM (SELECT * FROM api_keys FINAL WHERE tenant_id = ?) AS k
		LEFT JOIN (SELECT key_id, toNullable(max(used_at)) AS used_at FROM api_key_uses WHERE tenant_id = ? GROUP BY key_id) AS u USING (key_id)
		ORDER BY created_at DESC, key_id`, tenant, tenant); err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	// Uses seen here but not yet written are newer than the table.
	s.mu.Lock()
	for i := range keys {
		if at, ok := s.used[keys[i].ID]; ok {
			keys[i].LastUsedAt = &at
		}
	}
	s.mu.Unlock()
	return keys, nil
}

// Actor is who asks for a change, for the audit record.
type Actor = auditlog.Actor

// Create makes a key for tenant and returns it with the key itself, which
// is never available again. by is who asks (a user, or a key); parent is
// the id of the key it acts with when that key was created at run time
// (identity.Principal.KeyID), "" otherwise.
func (s *Store) Create(ctx context.Context, tenant, name, role string, by Actor, parent string) (Key, string, error) {
	name = strings.TrimSpace(name)
	var errs []string
	if !s.tenants[tenant] {
		errs = append(errs, fmt.Sprintf("unknown tenant %q", tenant))
	}
	if name == "" || utf8.RuneCountInString(name) > 100 || strings.ContainsAny(name, "\r\n\x00") {
		errs = append(errs, "name: give 1 to 100 characters on one line")
	}
	if !slices.Contains(Roles, role) {
		errs = append(errs, fmt.Sprintf("role: %q is not one of %s", role, strings.Join(Roles, ", ")))
	}
	kind := CreatorUser
	if by.Type == "api_key" {
		kind = CreatorConfiguredKey
		if parent != "" {
			kind = CreatorKey
			if p, ok := s.byID(tenant, parent); !ok || p.Revoked() {
				errs = append(errs, fmt.Sprintf("the creating key %q is not a live key of this tenant", parent))
			}
		}
	} else if parent != "" {
		errs = append(errs, "only a key has a parent key")
	}
	if len(errs) > 0 {
		return Key{}, "", fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	secret := make([]byte, 32)
	id := make([]byte, 8)
	_, _ = rand.Read(secret) //nolint:errcheck // never fails
	_, _ = rand.Read(id)     //nolint:errcheck // never fails
	raw := "tsk_" + base64.RawURLEncoding.EncodeToString(secret)
	k := Key{ID: "key_" + hex.EncodeToString(id), TenantID: tenant, Name: name, Role: role, Hash: config.HashAPIKey(raw),
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond), CreatedBy: by.ID, CreatedByType: kind, ParentKeyID: parent}
	if err := s.write(ctx, k); err != nil {
		return Key{}, "", err
	}
	after := map[string]any{"name": k.Name, "role": k.Role, "created_by_type": kind}
	if parent != "" {
		after["parent_key_id"] = parent
	}
	s.record(ctx, k, "api_key.created", by, nil, after, nil)
	return k, raw, nil
}

// byID finds a key of tenant among those loaded.
func (s *Store) byID(tenant, id string) (Key, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.byHash {
		if k.ID == id && k.TenantID == tenant {
			return k, true
		}
	}
	return Key{}, false
}

// Revoke ends a key of tenant at once (in this process; others within
// RefreshEvery).
func (s *Store) Revoke(ctx context.Context, tenant, id string, by Actor) (Key, error) {
	keys, err := s.List(ctx, tenant)
	if err != nil {
		return Key{}, err
	}
	for _, k := range keys {
		if k.ID != id {
			continue
		}
		if k.Revoked() {
			return k, ErrRevoked
		}
		return s.revoke(ctx, k, by, nil)
	}
	return Key{}, ErrNotFound
}

func (s *Store) revoke(ctx context.Context, k Key, by Actor, meta map[string]string) (Key, error) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	k.RevokedAt, k.RevokedBy = &now, by.ID
	if err := s.write(ctx, k); err != nil {
		return Key{}, err
	}
	s.record(ctx, k, "api_key.revoked", by, map[string]any{"revoked": false}, map[string]any{"revoked": true}, meta)
	return k, nil
}

// Revocation is what RevokeCascade ended: the key, and the live keys it
// minted, and theirs (breadth first).
type Revocation struct {
	Key    Key   `json:"key"`
	Minted []Key `json:"minted"`
}

// Minted counts, per key of keys, its live descendants.
func Minted(keys []Key) map[string]int {
	out := map[string]int{}
	for _, k := range keys {
		if n := len(descendants(keys, k.ID)); n > 0 {
			out[k.ID] = n
		}
	}
	return out
}

// descendants are the live keys minted by id, and by them, breadth first.
func descendants(keys []Key, id string) []Key {
	children := map[string][]Key{}
	for _, k := range keys {
		if k.ParentKeyID != "" {
			children[k.ParentKeyID] = append(children[k.ParentKeyID], k)
		}
	}
	seen := map[string]bool{id: true}
	var out []Key
	queue := []string{id}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if seen[c.ID] {
				continue
			}
			seen[c.ID] = true
			queue = append(queue, c.ID)
			if !c.Revoked() {
				out = append(out, c)
			}
		}
	}
	return out
}

// RevokeCascade revokes a key of tenant and every live key it minted, and
// the keys those minted, each with its own audit record (the minted ones
// name the key the cascade began at). A key already revoked may be given
// to revoke what it minted; ErrRevoked when nothing is left to revoke. The
// tenant's keys are read again once the cascade is done, so a key minted
// meanwhile through this process is caught too (other processes accept a
// revoked key for up to RefreshEvery).
func (s *Store) RevokeCascade(ctx context.Context, tenant, id string, by Actor) (Revocation, error) {
	keys, err := s.List(ctx, tenant)
	if err != nil {
		return Revocation{}, err
	}
	i := slices.IndexFunc(keys, func(k Key) bool { return k.ID == id })
	if i < 0 {
		return Revocation{}, ErrNotFound
	}
	out := Revocation{Key: keys[i]}
	minted := descendants(keys, id)
	if out.Key.Revoked() && len(minted) == 0 {
		return out, ErrRevoked
	}
	if !out.Key.Revoked() {
		meta := map[string]string{"cascade": "true", "minted": fmt.Sprint(len(minted))}
		if out.Key, err = s.revoke(ctx, out.Key, by, meta); err != nil {
			return out, err
		}
	}
	for pass := 0; pass < 2 && len(minted) > 0; pass++ {
		for _, m := range minted {
			m, err := s.revoke(ctx, m, by, map[string]string{"cascade_from": id})
			if err != nil {
				return out, err
			}
			out.Minted = append(out.Minted, m)
		}
		// Keys minted while the cascade ran.
		if keys, err = s.List(ctx, tenant); err != nil {
			return out, err
		}
		minted = descendants(keys, id)
	}
	return out, nil
}

func (s *Store) record(ctx context.Context, k Key, action string, by Actor, before, after map[string]any, meta map[string]string) {
	md := map[string]string{"role": k.Role}
	for m, v := range meta {
		md[m] = v
	}
	rec := auditlog.Record{TenantID: k.TenantID, Time: time.Now().UTC(), Actor: by, Action: action,
		Target: auditlog.Target{Type: "api_key", ID: k.ID, Name: k.Name}, Outcome: "success", SourceService: "tenantscope",
		CorrelationID: identity.CorrelationID(ctx), Metadata: md}
	if ch, err := json.Marshal(map[string]any{"before": before, "after": after}); err == nil {
		rec.Changes = ch
	}
	if err := s.audit.Record(ctx, rec); err != nil {
		s.log.Warn().Err(err).Str("tenant_id", k.TenantID).Str("key_id", k.ID).Msg("could not audit an API key change")
	}
}
