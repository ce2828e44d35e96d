// Package identity answers "who is calling, and may they read this tenant?"
// for every HTTP route: API keys (hashed in the configuration) become a
// Principal, and Scope is the one rule for tenant access, so a missing check
// is a missing call to grep for.
package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/config"
)

// Principal is an authenticated caller.
type Principal struct {
	Name   string
	Role   string
	Tenant string // set for tenant-scoped roles
	// KeyID is the id of a key created at run time (package apikeys), so
	// the keys it creates record it as their parent.
	KeyID string
}

// Errors of authentication and authorization.
var (
	ErrUnauthenticated = errors.New("authentication required: send Authorization: Bearer <API key>")
	ErrForbidden       = errors.New("forbidden")
)

// Keys authenticates API keys: the configured ones, then those of Managed.
type Keys struct {
	byHash map[string]config.APIKey
	// Managed finds keys created at run time (package apikeys), if set.
	Managed interface {
		Lookup(hash string) (Principal, bool)
	}
	// Failures limits wrong keys per client address (KeyFailureLimits).
	// Set OnFailures, Now or replace it before serving.
	Failures *Throttle
	// OnFailures receives the first wrong key of an address's burst and its
	// summaries (nil: not recorded), e.g. into the platform's audit chain.
	OnFailures func(Burst)
	// Now is the throttle's clock (nil: time.Now).
	Now func() time.Time
}

// KeyFailureLimits are the defaults for wrong API keys per client address:
// 10 free, then 1 s doubling up to 15 min; forgotten after an hour's quiet.
func KeyFailureLimits() ThrottleConfig {
	return ThrottleConfig{Free: 10, Base: time.Second, Max: 15 * time.Minute, Window: time.Hour, MaxKeys: 10_000}
}

// NewKeys indexes the configured API keys by hash and limits wrong keys
// per client address.
func NewKeys(cfg config.Config) *Keys {
	k := &Keys{byHash: map[string]config.APIKey{}}
	for _, key := range cfg.APIKeys {
		k.byHash[key.KeyHash] = key
	}
	limits := KeyFailureLimits()
	limits.Now = func() time.Time {
		if k.Now != nil {
			return k.Now()
		}
		return time.Now()
	}
	limits.Report = func(b Burst) {
		if k.OnFailures != nil {
			k.OnFailures(b)
		}
	}
	k.Failures = NewThrottle(limits)
	return k
}

// Flush summarizes the wrong keys still being counted (OnFailures) and
// forgets them: call it at shutdown, once no request is served, or the
// summary of a burst in progress is lost.
func (k *Keys) Flush() {
	if k.Failures != nil {
		k.Failures.Flush()
	}
}

// Authenticate reads the bearer key of r. A request without a key is
// ErrUnauthenticated and not counted; a wrong key counts against the
// client's address, and an address that must wait gets a *WaitError
// (ErrTooManyAttempts) even for a right key. An authenticated principal is
// noted in the request's Caller (WithCaller), if any.
func (k *Keys) Authenticate(r *http.Request) (Principal, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return Principal{}, ErrUnauthenticated
	}
	addr, attempt := ClientAddr(r), Attempt{Addr: ClientAddr(r), UserAgent: r.UserAgent()}
	if k.Failures != nil {
		if wait := k.Failures.Begin(addr, attempt); wait > 0 {
			return Principal{}, &WaitError{Wait: wait}
		}
	}
	p, found := k.lookup(config.HashAPIKey(raw))
	if !found {
		if k.Failures != nil {
			k.Failures.Fail(addr, attempt)
		}
		return Principal{}, ErrUnauthenticated
	}
	if k.Failures != nil {
		k.Failures.Undo(addr)
	}
	SetCaller(r.Context(), p)
	return p, nil
}

func (k *Keys) lookup(hash string) (Principal, bool) {
	if key, found := k.byHash[hash]; found {
		return Principal{Name: key.Name, Role: key.Role, Tenant: key.Tenant}, true
	}
	if k.Managed != nil {
		return k.Managed.Lookup(hash)
	}
	return Principal{}, false
}

// Require authenticates r and scopes it to the path's {tenantId} for c. On
// failure it writes the error response, calls denied (if set) for a known
// credential that was refused, and returns ok false.
func (k *Keys) Require(w http.ResponseWriter, r *http.Request, c Capability, denied func(p Principal, tenant string)) (p Principal, tenant string, ok bool) {
	p, err := k.Authenticate(r)
	if err != nil {
		Fail(w, r, err)
		return p, "", false
	}
	tenant = r.PathValue("tenantId")
	if err := Scope(p, c, tenant); err != nil {
		if denied != nil {
			denied(p, tenant)
		}
		Fail(w, r, err)
		return p, tenant, false
	}
	return p, tenant, true
}

// Capability is what a route needs.
type Capability string

// Capabilities.
const (
	ReadAudit  Capability = "audit:read"
	WriteAudit Capability = "audit:write"
	Export     Capability = "export"
	ManageKeys Capability = "api_keys:manage"
	ReadCost   Capability = "cost:read"
	ManageCost Capability = "cost:manage"
	ReadSLA    Capability = "sla:read"
	// ReadRetention sees policies, holds, erasures, purges and residency;
	// ManageRetention changes them (holds and erasures: compliance only).
	ReadRetention   Capability = "retention:read"
	ManageRetention Capability = "retention:manage"
	// ReadEvents reads a tenant's stored domain events.
	ReadEvents Capability = "events:read"
	// ManageSessions lists and ends users' UI sessions.
	ManageSessions Capability = "sessions:manage"
)

// cross lists the roles that may use a capability for every tenant; own the
// tenant-scoped roles that may use it for their own tenant.
var (
	cross = map[Capability][]string{ReadAudit: {config.RoleCompliance}, Export: {config.RoleCompliance},
		ReadCost: {config.RoleFinance}, ManageCost: {config.RoleFinance}, ReadSLA: {config.RoleSRE, config.RoleFinance},
		ReadRetention: {config.RoleCompliance}, ManageRetention: {config.RoleCompliance}, ReadEvents: {config.RoleCompliance},
		ManageSessions: {config.RoleCompliance}}
	own = map[Capability][]string{ReadAudit: {config.RoleTenantAdmin, config.RoleTenantViewer}, WriteAudit: {config.RoleTenantAdmin}, Export: {config.RoleTenantAdmin},
		ManageKeys: {config.RoleTenantAdmin}, ReadCost: {config.RoleTenantAdmin},
		ReadSLA: {config.RoleTenantAdmin, config.RoleTenantViewer}, ReadRetention: {config.RoleTenantAdmin},
		ReadEvents: {config.RoleTenantAdmin, config.RoleTenantViewer}}
)

// Scope is the one tenant-access rule: p may use c on tenant's data when its
// role holds c across tenants, or holds it for its own tenant and tenant is
// its own. The tenant of a path is never trusted alone.
func Scope(p Principal, c Capability, tenant string) error {
	for _, r := range cross[c] {
		if p.Role == r {
			return nil
		}
	}
	for _, r := range own[c] {
		if p.Role == r && p.Tenant != "" && p.Tenant == tenant {
			return nil
		}
	}
	return ErrForbidden
}

type ctxKey int

const correlationKey ctxKey = 1

// CorrelationID returns the request's correlation id.
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string) //nolint:errcheck // absent is ""
	return id
}

// WithCorrelation gives every request a correlation id (the caller's
// X-Correlation-Id when it is sane, else a new one), echoed in the response.
// A request that already has one (the edge gave it) keeps it.
func WithCorrelation(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if CorrelationID(r.Context()) != "" {
			next.ServeHTTP(w, r)
			return
		}
		id := r.Header.Get("X-Correlation-Id")
		if len(id) == 0 || len(id) > 128 || strings.ContainsAny(id, "\r\n") {
			b := make([]byte, 12)
			_, _ = rand.Read(b) //nolint:errcheck // never fails
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Correlation-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), correlationKey, id)))
	})
}

// Error is the one JSON error body of the API.
type Error struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlation_id"`
}

// WriteError maps err to a status and the JSON error body.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]Error{"error": {Code: code, Message: message, CorrelationID: CorrelationID(r.Context())}}) //nolint:errcheck // client gone
}

// Fail writes the error body for an authentication or authorization error.
func Fail(w http.ResponseWriter, r *http.Request, err error) {
	var wait *WaitError
	switch {
	case errors.As(err, &wait):
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter(wait.Wait)))
		WriteError(w, r, http.StatusTooManyRequests, "too_many_attempts", wait.Error())
	case errors.Is(err, ErrUnauthenticated):
		WriteError(w, r, http.StatusUnauthorized, "unauthenticated", err.Error())
	case errors.Is(err, ErrForbidden):
		WriteError(w, r, http.StatusForbidden, "forbidden", "this credential may not read this tenant's data")
	default:
		WriteError(w, r, http.StatusInternalServerError, "internal", "internal error")
	}
}

// WriteJSON writes v as the JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) //nolint:errcheck // client gone
}

// DecodeJSON reads a request body of at most limit bytes into v, refusing
// unknown fields; on failure it writes a 400 naming the problem (hint says
// what the body should be) and returns false.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64, hint string) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		WriteError(w, r, http.StatusBadRequest, "bad_request", "body must be "+hint+": "+err.Error())
		return false
	}
	return true
}

// Answer is the HTTP answer to a domain's sentinel error.
type Answer struct {
	Err    error
	Status int
	Code   string
}

// FailWith writes the answer of the first sentinel err matches (with err's
// text); anything else is logged under what and answered 500 with
// internal as the message.
func FailWith(w http.ResponseWriter, r *http.Request, err error, answers []Answer, log zerolog.Logger, what, internal string) {
	for _, a := range answers {
		if errors.Is(err, a.Err) {
			WriteError(w, r, a.Status, a.Code, err.Error())
			return
		}
	}
	log.Error().Err(err).Str("correlation_id", CorrelationID(r.Context())).Msg(what)
	WriteError(w, r, http.StatusInternalServerError, "internal", internal)
}
