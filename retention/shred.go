package retention

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// Erased is what a read shows for a field whose subject key was destroyed.
const Erased = "[erased]"

// tokenPrefix starts every encrypted field value: enc:v1:<key id>:<base64>.
const tokenPrefix = "enc:v1:"

// Keyring is envelope encryption for crypto-shredding: a data key per
// subject, wrapped by a per-tenant key (versioned, rotatable), wrapped by
// the key-encryption key. Keys live in the tenant's region (tenant_keys,
// subject_keys); unwrapped keys are cached in memory.
type Keyring struct {
	kek    []byte
	stores func(tenant string) (*chstore.Store, error)
	mu     sync.Mutex
	teks   map[string]tenantKey         // tenant → current key
	oldTek map[string]map[uint32][]byte // tenant → version → key
	deks   map[string]subjectKey        // tenant/key id → key
	byHash map[string]string            // tenant/subject hash → key id
}

type tenantKey struct {
	version uint32
	key     []byte
}

type subjectKey struct {
	id        string
	key       []byte // nil once destroyed
	destroyed bool
}

// NewKeyring builds a keyring; kekHex is 32 bytes in hex.
func NewKeyring(kekHex string, stores func(string) (*chstore.Store, error)) (*Keyring, error) {
	kek, err := hex.DecodeString(kekHex)
	if err != nil || len(kek) != 32 {
		return nil, errors.New("crypto-shredding: the key-encryption key must be 32 bytes in hex")
	}
	return &Keyring{kek: kek, stores: stores, teks: map[string]tenantKey{}, oldTek: map[string]map[uint32][]byte{},
		deks: map[string]subjectKey{}, byHash: map[string]string{}}, nil
}

// aead is AES-GCM with key (AES-256 for the 32-byte keys used here).
func aead(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func seal(key, plain []byte) ([]byte, error) {
	gcm, err := aead(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	_, _ = rand.Read(nonce) //nolint:errcheck // never fails
	return gcm.Seal(nonce, nonce, plain, nil), nil
}

func open(key, sealed []byte) ([]byte, error) {
	gcm, err := aead(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	return gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
}

func newKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) //nolint:errcheck // never fails
	return k
}

// tenantKeyLocked loads or creates tenant's current key. k.mu is held.
func (k *Keyring) tenantKeyLocked(ctx context.Context, tenant string) (tenantKey, error) {
	if t, ok := k.teks[tenant]; ok {
		return t, nil
	}
	st, err := k.stores(tenant)
	if err != nil {
		return tenantKey{}, err
	}
	var rows []struct {
		Version uint32 `ch:"version"`
		Wrapped string `ch:"wrapped"`
	}
	if err := st.Select(ctx, &rows, "SELECT version, wrapped FROM tenant_keys FINAL WHERE tenant_id = ? ORDER BY version", tenant); err != nil {
		return tenantKey{}, fmt.Errorf("tenant keys: %w", err)
	}
	k.oldTek[tenant] = map[uint32][]byte{}
	for _, r := range rows {
		w, err := base64.StdEncoding.DecodeString(r.Wrapped)
		if err != nil {
			return tenantKey{}, err
		}
		key, err := open(k.kek, w)
		if err != nil {
			return tenantKey{}, fmt.Errorf("tenant key %s v%d does not open with this key-encryption key: %w", tenant, r.Version, err)
		}
		k.oldTek[tenant][r.Version] = key
		k.teks[tenant] = tenantKey{r.Version, key}
	}
	if t, ok := k.teks[tenant]; ok {
		return t, nil
	}
	return k.addTenantKeyLocked(ctx, st, tenant, 1)
}

func (k *Keyring) addTenantKeyLocked(ctx context.Context, st *chstore.Store, tenant string, version uint32) (tenantKey, error) {
	key := newKey()
	w, err := seal(k.kek, key)
	if err != nil {
		return tenantKey{}, err
	}
	if err := st.Exec(ctx, "INSERT INTO tenant_keys (tenant_id, version, wrapped, created_at) VALUES (?, ?, ?, now64(3))",
		tenant, version, base64.StdEncoding.EncodeToString(w)); err != nil {
		return tenantKey{}, fmt.Errorf("tenant key: %w", err)
	}
	t := tenantKey{version, key}
	k.teks[tenant] = t
	if k.oldTek[tenant] == nil {
		k.oldTek[tenant] = map[uint32][]byte{}
	}
	k.oldTek[tenant][version] = key
	return t, nil
}

type subjectRow struct {
	KeyID     string     `ch:"key_id"`
	Hash      string     `ch:"subject_hash"`
	Wrapped   string     `ch:"wrapped"`
	TEK       uint32     `ch:"tek_version"`
	Destroyed *time.Time `ch:"destroyed_at"`
	Version   uint64     `ch:"version"`
}

// subjectRows reads a tenant's subject keys (where is a condition on them).
func (k *Keyring) subjectRows(ctx context.Context, tenant, where string, args ...any) ([]subjectRow, error) {
	st, err := k.stores(tenant)
	if err != nil {
		return nil, err
	}
	var rows []subjectRow
	if err := st.Select(ctx, &rows, "SELECT key_id, subject_hash, wrapped, tek_version, destroyed_at, version FROM subject_keys FINAL WHERE tenant_id = ? AND "+where,
		append([]any{tenant}, args...)...); err != nil {
		return nil, fmt.Errorf("subject keys: %w", err)
	}
	return rows, nil
}

// cacheLocked unwraps and caches a subject key row. k.mu is held.
func (k *Keyring) cacheLocked(ctx context.Context, tenant string, r subjectRow) (subjectKey, error) {
	sk := subjectKey{id: r.KeyID, destroyed: r.Destroyed != nil}
	if !sk.destroyed {
		if _, err := k.tenantKeyLocked(ctx, tenant); err != nil {
			return sk, err
		}
		tek := k.oldTek[tenant][r.TEK]
		w, err := base64.StdEncoding.DecodeString(r.Wrapped)
		if err != nil || tek == nil {
			return sk, fmt.Errorf("subject key %s: cannot unwrap (tenant key v%d)", r.KeyID, r.TEK)
		}
		if sk.key, err = open(tek, w); err != nil {
			return sk, fmt.Errorf("subject key %s: %w", r.KeyID, err)
		}
	}
	k.deks[tenant+"/"+r.KeyID] = sk
	k.byHash[tenant+"/"+r.Hash] = r.KeyID
	return sk, nil
}

// subjectKey finds (or, when create, makes) the key of a subject.
func (k *Keyring) subjectKey(ctx context.Context, tenant, subject string, create bool) (subjectKey, error) {
	h := subjectHash(tenant, subject)
	k.mu.Lock()
	defer k.mu.Unlock()
	if id, ok := k.byHash[tenant+"/"+h]; ok {
		return k.deks[tenant+"/"+id], nil
	}
	rows, err := k.subjectRows(ctx, tenant, "subject_hash = ?", h)
	if err != nil {
		return subjectKey{}, err
	}
	if len(rows) > 0 {
		return k.cacheLocked(ctx, tenant, rows[0])
	}
	if !create {
		return subjectKey{}, fmt.Errorf("%w: no key for this subject in tenant %s", ErrNotFound, tenant)
	}
	t, err := k.tenantKeyLocked(ctx, tenant)
	if err != nil {
		return subjectKey{}, err
	}
	key := newKey()
	w, err := seal(t.key, key)
	if err != nil {
		return subjectKey{}, err
	}
	r := subjectRow{KeyID: newID("sk_"), Hash: h, Wrapped: base64.StdEncoding.EncodeToString(w), TEK: t.version, Version: uint64(time.Now().UnixNano())}
	st, err := k.stores(tenant)
	if err != nil {
		return subjectKey{}, err
	}
	if err := st.Exec(ctx, "INSERT INTO subject_keys (tenant_id, key_id, subject_hash, wrapped, tek_version, created_at, destroyed_by, version) VALUES (?, ?, ?, ?, ?, now64(3), '', ?)",
		tenant, r.KeyID, r.Hash, r.Wrapped, r.TEK, r.Version); err != nil {
		return subjectKey{}, fmt.Errorf("subject key: %w", err)
	}
	return k.cacheLocked(ctx, tenant, r)
}

// Seal encrypts plain for subject of tenant, as a field value token.
func (k *Keyring) Seal(ctx context.Context, tenant, subject string, plain []byte) (string, error) {
	sk, err := k.subjectKey(ctx, tenant, subject, true)
	if err != nil {
		return "", err
	}
	if sk.destroyed {
		return "", fmt.Errorf("%w: this subject was erased; its key is destroyed", ErrConflict)
	}
	sealed, err := seal(sk.key, plain)
	if err != nil {
		return "", err
	}
	return tokenPrefix + sk.id + ":" + base64.RawStdEncoding.EncodeToString(sealed), nil
}

// Open decrypts a field value token of tenant; a destroyed key reads as
// Erased. A value that is not a token is returned as it is.
func (k *Keyring) Open(ctx context.Context, tenant, value string) (string, error) {
	rest, ok := strings.CutPrefix(value, tokenPrefix)
	if !ok {
		return value, nil
	}
	id, b64, ok := strings.Cut(rest, ":")
	if !ok {
		return "", errors.New("malformed encrypted value")
	}
	k.mu.Lock()
	sk, cached := k.deks[tenant+"/"+id]
	if !cached {
		rows, err := k.subjectRows(ctx, tenant, "key_id = ?", id)
		if err != nil {
			k.mu.Unlock()
			return "", err
		}
		if len(rows) == 0 {
			k.mu.Unlock()
			return Erased, nil // no such key in this tenant: unreadable
		}
		if sk, err = k.cacheLocked(ctx, tenant, rows[0]); err != nil {
			k.mu.Unlock()
			return "", err
		}
	}
	k.mu.Unlock()
	if sk.destroyed {
		return Erased, nil
	}
	sealed, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil {
		return "", err
	}
	plain, err := open(sk.key, sealed)
	if err != nil {
		return "", fmt.Errorf("encrypted value does not open: %w", err)
	}
	return string(plain), nil
}

// Destroy destroys a subject's key: every copy of its encrypted fields,
// in the store, in exports and in backups, becomes unreadable. A destroyed
// key cannot be destroyed (or used) again.
func (k *Keyring) Destroy(ctx context.Context, tenant, subject, by string) (string, error) {
	sk, err := k.subjectKey(ctx, tenant, subject, false)
	if err != nil {
		return "", err
	}
	if sk.destroyed {
		return sk.id, fmt.Errorf("%w: the key of this subject was already destroyed", ErrConflict)
	}
	st, err := k.stores(tenant)
	if err != nil {
		return "", err
	}
	h := subjectHash(tenant, subject)
	if err := st.Exec(ctx, "INSERT INTO subject_keys (tenant_id, key_id, subject_hash, wrapped, tek_version, created_at, destroyed_at, destroyed_by, version) VALUES (?, ?, ?, '', 0, now64(3), now64(3), ?, ?)",
		tenant, sk.id, h, by, uint64(time.Now().UnixNano())); err != nil {
		return "", fmt.Errorf("destroy key: %w", err)
	}
	k.mu.Lock()
	k.deks[tenant+"/"+sk.id] = subjectKey{id: sk.id, destroyed: true}
	k.mu.Unlock()
	return sk.id, nil
}

// Rotate makes a new tenant key and rewraps every live subject key with
// it; no data is rewritten. It returns the new version and how many keys
// were rewrapped.
func (k *Keyring) Rotate(ctx context.Context, tenant string) (uint32, int, error) {
	st, err := k.stores(tenant)
	if err != nil {
		return 0, 0, err
	}
	rows, err := k.subjectRows(ctx, tenant, "destroyed_at IS NULL")
	if err != nil {
		return 0, 0, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, err := k.tenantKeyLocked(ctx, tenant)
	if err != nil {
		return 0, 0, err
	}
	next, err := k.addTenantKeyLocked(ctx, st, tenant, cur.version+1)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range rows {
		sk, err := k.cacheLocked(ctx, tenant, r)
		if err != nil {
			return next.version, 0, err
		}
		w, err := seal(next.key, sk.key)
		if err != nil {
			return next.version, 0, err
		}
		if err := st.Exec(ctx, "INSERT INTO subject_keys (tenant_id, key_id, subject_hash, wrapped, tek_version, created_at, destroyed_by, version) VALUES (?, ?, ?, ?, ?, now64(3), '', ?)",
			tenant, r.KeyID, r.Hash, base64.StdEncoding.EncodeToString(w), next.version, uint64(time.Now().UnixNano())); err != nil {
			return next.version, 0, err
		}
	}
	return next.version, len(rows), nil
}

// Shredder encrypts a tenant's configured event fields at ingest.
type Shredder struct {
	Keys    *Keyring
	tenants map[string]config.Shred
}

// NewShredder configures the tenants that shred fields.
func NewShredder(keys *Keyring, cfg config.Config) *Shredder {
	s := &Shredder{Keys: keys, tenants: map[string]config.Shred{}}
	for _, t := range cfg.Tenants {
		if len(t.Shred.Fields) > 0 {
			s.tenants[t.ID] = t.Shred
		}
	}
	return s
}

// Event encrypts the configured fields of an event payload (the collector
// calls it before storing). actor is the event's actor.
func (s *Shredder) Event(ctx context.Context, tenant, actor string, payload []byte) ([]byte, error) {
	cfg, ok := s.tenants[tenant]
	if !ok || len(payload) == 0 {
		return payload, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(payload, &doc); err != nil {
		return payload, nil //nolint:nilerr // not an object: nothing to shred
	}
	subject := actor
	if cfg.Subject != "actor" {
		v, _ := lookup(doc, cfg.Subject)
		subject, _ = v.(string) //nolint:errcheck // a non-string subject is none
	}
	if subject == "" {
		return payload, nil
	}
	changed := false
	for _, path := range cfg.Fields {
		v, ok := lookup(doc, path)
		if !ok || v == nil {
			continue
		}
		if str, isStr := v.(string); isStr && strings.HasPrefix(str, tokenPrefix) {
			continue
		}
		plain, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		tok, err := s.Keys.Seal(ctx, tenant, subject, plain)
		if err != nil {
			return nil, err
		}
		set(doc, path, tok)
		changed = true
	}
	if !changed {
		return payload, nil
	}
	return json.Marshal(doc)
}

// SealAudit encrypts a personal audit field of subject for the audit
// writer (auditlog.Sealer): as it is for tenants that do not shred, and
// Erased for a subject whose key is destroyed (the record is still chained).
func (s *Shredder) SealAudit(ctx context.Context, tenant, subject, value string) (string, error) {
	if _, ok := s.tenants[tenant]; !ok || subject == "" || strings.HasPrefix(value, tokenPrefix) {
		return value, nil // not shredded, or sealed already
	}
	tok, err := s.Keys.Seal(ctx, tenant, subject, []byte(value))
	if errors.Is(err, ErrConflict) {
		return Erased, nil
	}
	return tok, err
}

// Reveal decrypts the encrypted fields of a stored payload for reading
// (erased ones read as Erased).
func (s *Shredder) Reveal(ctx context.Context, tenant string, payload []byte) ([]byte, error) {
	if !strings.Contains(string(payload), tokenPrefix) {
		return payload, nil
	}
	var doc any
	if err := json.Unmarshal(payload, &doc); err != nil {
		return payload, nil //nolint:nilerr // stored as is
	}
	var walk func(v any) (any, error)
	walk = func(v any) (any, error) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				n, err := walk(c)
				if err != nil {
					return nil, err
				}
				x[k] = n
			}
		case []any:
			for i, c := range x {
				n, err := walk(c)
				if err != nil {
					return nil, err
				}
				x[i] = n
			}
		case string:
			if strings.HasPrefix(x, tokenPrefix) {
				plain, err := s.Keys.Open(ctx, tenant, x)
				if err != nil || plain == Erased {
					return Erased, err
				}
				var orig any
				if json.Unmarshal([]byte(plain), &orig) == nil {
					return orig, nil
				}
				return plain, nil
			}
		}
		return v, nil
	}
	out, err := walk(doc)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

func lookup(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func set(doc map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	cur := doc
	for _, p := range parts[:len(parts)-1] {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return
		}
		cur = next
	}
	cur[parts[len(parts)-1]] = v
}

// Event is a stored domain event as a reader sees it: encrypted fields
// decrypted, or Erased when their subject's key is destroyed.
type Event struct {
	Time    time.Time       `json:"time"`
	Service string          `json:"service"`
	Action  string          `json:"action"`
	Actor   string          `json:"actor"`
	Payload json.RawMessage `json:"payload"`
}

// Events reads a tenant's newest events (optionally of one action).
func (s *Service) Events(ctx context.Context, tenant, action string, limit int) ([]Event, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	where, args := "tenant_id = ?", []any{tenant}
	if action != "" {
		where, args = where+" AND action = ?", append(args, action)
	}
	var rows []struct {
		Time    time.Time `ch:"time"`
		Service string    `ch:"service"`
		Action  string    `ch:"action"`
		Actor   string    `ch:"actor"`
		Payload string    `ch:"payload"`
	}
	if err := st.Select(ctx, &rows, "SELECT time, service, action, actor, payload FROM events FINAL WHERE "+where+" ORDER BY time DESC LIMIT ?", append(args, limit)...); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	out := make([]Event, 0, len(rows))
	for _, r := range rows {
		p := []byte(r.Payload)
		if s.Shred != nil {
			if p, err = s.Shred.Reveal(ctx, tenant, p); err != nil {
				return nil, err
			}
		}
		if !json.Valid(p) {
			p, _ = json.Marshal(string(p)) //nolint:errcheck // a string marshals
		}
		out = append(out, Event{Time: r.Time, Service: r.Service, Action: r.Action, Actor: r.Actor, Payload: p})
	}
	return out, nil
}
