// Package sessions keeps the UI's sign-in sessions on the server, in a NATS
// KV bucket that every process of a deployment shares. The browser holds
// only an opaque random token; the bucket holds the token's SHA-256 and what
// the session is (user, role, tenant, a fingerprint of the user's password
// hash, times, client), never the token, so reading the bucket does not let
// anyone act as a user. A session ends when it is ended (sign-out, the
// user's configuration changed, compliance ended it: the key is deleted),
// when it has not been used for the idle timeout, and at the absolute
// timeout after sign-in, whatever its use.
//
// Why NATS KV and not the platform store: every UI process already has the
// suite's JetStream connection; a deletion is seen by the next read of any
// process (no merge, no FINAL, no replica lag of a ReplacingMergeTree); the
// bucket's max age removes abandoned sessions without a purge job; and
// compare-and-set updates mean a request that was in flight when a session
// ended cannot write it back.
package sessions

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantscope/tenantscope/identity"
)

// Bucket is the KV bucket of UI sessions (in the suite's own account).
const Bucket = "TENANTSCOPE_SESSIONS"

// Defaults of Config.
const (
	DefaultIdle     = 30 * time.Minute
	DefaultAbsolute = 8 * time.Hour
	// MaxBytes bounds the bucket (a session is about 400 bytes: some
	// 40,000 sessions). When it is full, sign-ins fail until sessions end.
	MaxBytes = 16 << 20
	// maxValue bounds one session's record.
	maxValue = 4 << 10
	// MaxGroups bounds Session.Groups (with groups of at most 128 bytes,
	// config.MaxOIDCGroup, a session stays well under maxValue).
	MaxGroups = 8
)

// Errors of Get and End.
var (
	// ErrNoSession: the token names no live session (never issued, ended,
	// or timed out).
	ErrNoSession = errors.New("no such session")
	// ErrTimedOut: the session timed out (idle or absolute); it is ended.
	ErrTimedOut = fmt.Errorf("%w: timed out", ErrNoSession)
)

// Config sets the timeouts.
type Config struct {
	// Idle ends a session not used for this long (0: DefaultIdle).
	Idle time.Duration
	// Absolute ends a session this long after sign-in (0: DefaultAbsolute).
	// It is also the bucket's max age.
	Absolute time.Duration
	// Replicas of the bucket (0: 1).
	Replicas int
}

// Session is one signed-in user.
type Session struct {
	// ID is the hex SHA-256 of the token: it names the session in lists and
	// audit records and cannot be turned back into the token.
	ID     string `json:"-"`
	User   string `json:"user"`
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	// Credential is Fingerprint of the user's password hash at sign-in: a
	// changed password ends the session. Empty for single sign-on.
	Credential string `json:"credential"`
	// Issuer and Subject name a single sign-on user at their identity
	// provider (empty for local users); Groups are the values of the role
	// claim at sign-in that a mapping names (in mapping order, at most
	// MaxGroups), so the session is checked against the current mapping.
	Issuer    string    `json:"issuer,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Groups    []string  `json:"groups,omitempty"`
	Created   time.Time `json:"created"`
	LastSeen  time.Time `json:"last_seen"`
	Expires   time.Time `json:"expires"`
	Addr      string    `json:"addr,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	// CSRF is the session's form token, derived from the token (so it is
	// known only where the token is, and never stored).
	CSRF string `json:"-"`

	rev uint64
}

// Principal is who the session acts as.
func (s Session) Principal() identity.Principal {
	return identity.Principal{Name: s.User, Role: s.Role, Tenant: s.Tenant}
}

// IdleUntil is when the session ends unless it is used again.
func (s Session) IdleUntil(idle time.Duration) time.Time { return s.LastSeen.Add(idle) }

// Fingerprint is a short digest of a credential hash (a password hash), so
// a change of password is seen without the hash entering the bucket.
func Fingerprint(hash string) string {
	sum := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(sum[:8])
}

// Store keeps the sessions.
type Store struct {
	kv             jetstream.KeyValue
	idle, absolute time.Duration
	// touchEvery: a use is written only when the last written one is older,
	// so pages do not each write to the bucket. The idle timeout is thus
	// counted from a use at most touchEvery before the last one.
	touchEvery time.Duration
	// Now is the clock (nil: time.Now). Tests move it for timeouts.
	Now func() time.Time
}

// Open opens the bucket, creating it or bringing its settings up to cfg.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Idle == 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Absolute == 0 {
		cfg.Absolute = DefaultAbsolute
	}
	if cfg.Idle < time.Second || cfg.Absolute < cfg.Idle {
		return nil, fmt.Errorf("sessions: idle %s must be at least 1s and at most the absolute timeout %s", cfg.Idle, cfg.Absolute)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       Bucket,
		Description:  "tenantscope UI sessions by token hash; entries expire at the absolute timeout",
		TTL:          cfg.Absolute,
		History:      1,
		MaxBytes:     MaxBytes,
		MaxValueSize: maxValue,
		Storage:      jetstream.FileStorage,
		Replicas:     max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("sessions bucket: %w", err)
	}
	return &Store{kv: kv, idle: cfg.Idle, absolute: cfg.Absolute, touchEvery: min(cfg.Idle/10, time.Minute)}, nil
}

// Idle is the idle timeout.
func (s *Store) Idle() time.Duration { return s.idle }

// Absolute is the absolute timeout.
func (s *Store) Absolute() time.Duration { return s.absolute }

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

const tokenBytes = 32

var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// hashOf is a token's id; ok is false for anything that is not a token.
func hashOf(token string) (string, bool) {
	if len(token) != tokenLen {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]), true
}

func csrfOf(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("tenantscope csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func key(id string) string { return "s." + id }

// validID reports whether id is a session id (64 hex digits).
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// Create starts a session for in (its user, role, tenant, credential and
// client) and returns the token for the cookie, and the session.
func (s *Store) Create(ctx context.Context, in Session) (string, Session, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", Session{}, fmt.Errorf("sessions: token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	id, _ := hashOf(token) //nolint:errcheck // a fresh token is well formed
	now := s.now()
	in.ID, in.Created, in.LastSeen, in.Expires = id, now, now, now.Add(s.absolute)
	in.UserAgent = identity.Clip(in.UserAgent)
	val, err := json.Marshal(in)
	if err != nil {
		return "", Session{}, err
	}
	rev, err := s.kv.Create(ctx, key(id), val)
	if err != nil {
		return "", Session{}, fmt.Errorf("sessions: create: %w", err)
	}
	in.rev, in.CSRF = rev, csrfOf(token)
	return token, in, nil
}

func decode(e jetstream.KeyValueEntry) (Session, error) {
	var sess Session
	if err := json.Unmarshal(e.Value(), &sess); err != nil {
		return Session{}, fmt.Errorf("sessions: %s: %w", e.Key(), err)
	}
	sess.ID, sess.rev = strings.TrimPrefix(e.Key(), "s."), e.Revision()
	return sess, nil
}

// Get finds the live session of token and notes its use. A session past
// either timeout is ended and ErrTimedOut returned; an unknown, ended or
// malformed token is ErrNoSession.
func (s *Store) Get(ctx context.Context, token string) (Session, error) {
	id, ok := hashOf(token)
	if !ok {
		return Session{}, ErrNoSession
	}
	sess, err := s.get(ctx, id)
	if err != nil {
		return Session{}, err
	}
	now := s.now()
	if !now.Before(sess.Expires) || !now.Before(sess.IdleUntil(s.idle)) {
		if err := s.kv.Delete(ctx, key(id), jetstream.LastRevision(sess.rev)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return Session{}, fmt.Errorf("sessions: end timed out: %w", err)
		}
		return Session{}, ErrTimedOut
	}
	if now.Sub(sess.LastSeen) >= s.touchEvery {
		sess.LastSeen = now
		val, err := json.Marshal(sess)
		if err != nil {
			return Session{}, err
		}
		rev, err := s.kv.Update(ctx, key(id), val, sess.rev)
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
			// Ended, or touched by another request meanwhile: read again
			// (never write back over an ending).
			if sess, err = s.get(ctx, id); err != nil {
				return Session{}, err
			}
		case err != nil:
			return Session{}, fmt.Errorf("sessions: note use: %w", err)
		default:
			sess.rev = rev
		}
	}
	sess.CSRF = csrfOf(token)
	return sess, nil
}

func (s *Store) get(ctx context.Context, id string) (Session, error) {
	e, err := s.kv.Get(ctx, key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("sessions: read: %w", err)
	}
	return decode(e)
}

// End ends the session of token (sign-out). Ending one that is gone is not
// an error.
func (s *Store) End(ctx context.Context, token string) error {
	id, ok := hashOf(token)
	if !ok {
		return nil
	}
	return s.EndID(ctx, id)
}

// EndID ends the session id (from List). ErrNoSession when there is none.
func (s *Store) EndID(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNoSession
	}
	if _, err := s.kv.Get(ctx, key(id)); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNoSession
	}
	if err := s.kv.Delete(ctx, key(id)); err != nil {
		return fmt.Errorf("sessions: end: %w", err)
	}
	return nil
}

// List returns the live sessions, of user only when user is not empty,
// most recently used first.
func (s *Store) List(ctx context.Context, user string) ([]Session, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("sessions: list: %w", err)
	}
	defer func() { _ = w.Stop() }() //nolint:errcheck // only unsubscribes
	now := s.now()
	var out []Session
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("sessions: list: watcher stopped")
			}
			if e == nil { // every current entry was delivered
				sort.Slice(out, func(i, j int) bool {
					if !out[i].LastSeen.Equal(out[j].LastSeen) {
						return out[i].LastSeen.After(out[j].LastSeen)
					}
					return out[i].ID < out[j].ID
				})
				return out, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			sess, err := decode(e)
			if err != nil {
				return nil, err
			}
			if (user == "" || sess.User == user) && now.Before(sess.Expires) && now.Before(sess.IdleUntil(s.idle)) {
				out = append(out, sess)
			}
		}
	}
}

// EndUser ends every session of user and returns how many there were.
func (s *Store) EndUser(ctx context.Context, user string) (int, error) {
	list, err := s.List(ctx, user)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, sess := range list {
		if err := s.kv.Delete(ctx, key(sess.ID)); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("sessions: end %s's: %w", user, err)
	}
	return n, nil
}
