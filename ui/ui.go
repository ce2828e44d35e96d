// Package ui is the server-rendered web UI (templ): sign-in with the
// configured local users (bcrypt) and single sign-on through an OpenID
// Connect provider (identity/oidc), server-side sessions (identity/sessions:
// the cookie holds only an opaque token) with CSRF protection, and the
// audit trail, cost, SLA, retention, API key and session pages. Access
// follows the same rule as the API (identity.Scope).
package ui

//go:generate go tool templ generate -path .

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/a-h/templ"
	"github.com/rs/zerolog"
	"github.com/shopspring/decimal"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/oidc"
	"github.com/tenantscope/tenantscope/identity/sessions"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/retention"
)

// Session is a signed-in user: the session kept in the session store, with
// its CSRF token.
type Session struct {
	sessions.Session
}

func (s *Session) principal() identity.Principal { return s.Principal() }

func tenantSuffix(s *Session) string {
	if s.Tenant == "" {
		return ""
	}
	return " of " + s.Tenant
}

func sortState(active bool, dir string) string {
	if active {
		return dir
	}
	return "none"
}

// num shows a quantity: whole numbers as they are, others to 2 places.
func num(v decimal.Decimal) string {
	if v.IsInteger() {
		return v.String()
	}
	return v.StringFixed(2)
}

// money shows an amount to the cent (the bill keeps 4 places).
func money(v decimal.Decimal) string { return v.StringFixed(2) }

func bytes(v decimal.Decimal) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	k := decimal.NewFromInt(1024)
	i := 0
	for v.GreaterThanOrEqual(k) && i < len(units)-1 {
		v = v.DivRound(k, 6)
		i++
	}
	return v.StringFixed(1) + " " + units[i]
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func budgetClass(v float64) string {
	if v < 0.25 {
		return "failure"
	}
	return ""
}

func when(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 MST")
}

func short(v any) string {
	s, _ := v.(string) //nolint:errcheck // absent is ""
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// FilterForm is the audit page's filter form.
type FilterForm struct {
	Actor, Action, Target, Outcome, Q, From, To, Limit string
}

// PageSizes are the audit page's rows-per-page choices.
var PageSizes = []string{"25", "50", "100", "500"}

func (f FilterForm) values() url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"actor": f.Actor, "action": f.Action, "target": f.Target, "outcome": f.Outcome, "q": f.Q, "from": f.From, "to": f.To, "limit": f.Limit} {
		if val != "" {
			v.Set(k, val)
		}
	}
	return v
}

// With is the page URL for the same filters at cursor.
func (f FilterForm) With(cursor string) string {
	v := f.values()
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	return "?" + v.Encode()
}

// ExportURL downloads the trail with the same filters in format.
func (f FilterForm) ExportURL(tenant, format string) string {
	v := f.values()
	v.Del("limit")
	v.Set("format", format)
	return "/ui/tenants/" + url.PathEscape(tenant) + "/audit/export?" + v.Encode()
}

// UI serves /ui/.
type UI struct {
	users    map[string]config.User
	tenants  []string
	sessions *sessions.Store
	stores   func(tenant string) (*chstore.Store, error)
	audit    func(ctx context.Context, tenant, msgID string, body []byte) error
	log      zerolog.Logger
	// Secure marks every cookie Secure (sessions.secure_cookies: behind a
	// proxy that terminates TLS). A request that came over TLS gets Secure
	// cookies anyway (IsSecure).
	Secure bool
	// IsSecure says whether the browser spoke TLS for r (nil: r.TLS != nil),
	// e.g. the HTTP edge's answer behind trusted proxies.
	IsSecure func(r *http.Request) bool
	// VerifierKey checks inclusion proofs on the detail page; with SignerKey
	// it signs tenant archives downloaded from the exports page.
	VerifierKey, SignerKey string
	// Keys manages tenant admins' API keys (nil: the page says so).
	Keys *apikeys.Store
	// Metering serves the cost and SLA pages (nil: they say it is not running).
	Metering *metering.Service
	// Open decrypts crypto-shredded audit fields (nil: shown as stored).
	Open auditlog.Opener
	// Retention serves the compliance retention page (nil: it says so).
	Retention    *retention.Service
	retentionCfg config.Retention
	regions      []string // configured region names (region moves)
	// Health shows each tenant's last chain verification on the home page.
	Health *auditlog.HealthBoard
	// OIDC signs users in through the identity provider (nil: no single
	// sign-on; sessions of single sign-on users are then ended).
	OIDC *oidc.Client
	// localUsers: password sign-in for the configured users is on
	// (oidc.local_users).
	localUsers bool
	// Now is the sign-in throttle's clock (nil: time.Now).
	Now func() time.Time
	// signIns limits failed sign-ins per user name and reports their
	// bursts to the platform chain; signInAddrs per client address.
	signIns, signInAddrs *identity.Throttle
}

// SignInLimits are the defaults for failed sign-ins per user name (5 free,
// then 1 s doubling up to 15 min) and per client address (20 free, a
// shared office or NAT); both forget a key after an hour's quiet.
func SignInLimits() (perUser, perAddress identity.ThrottleConfig) {
	perUser = identity.ThrottleConfig{Free: 5, Base: time.Second, Max: 15 * time.Minute, Window: time.Hour, MaxKeys: 10_000}
	perAddress = perUser
	perAddress.Free = 20
	return perUser, perAddress
}

// New builds the UI. Sessions live in store, which every UI process of the
// deployment shares (required).
func New(cfg config.Config, store *sessions.Store, stores func(string) (*chstore.Store, error),
	audit func(ctx context.Context, tenant, msgID string, body []byte) error, log zerolog.Logger) *UI {
	u := &UI{users: map[string]config.User{}, sessions: store, stores: stores, audit: audit, log: log, retentionCfg: cfg.Retention,
		localUsers: cfg.OIDC.LocalUsers}
	perUser, perAddress := SignInLimits()
	perUser.Now, perAddress.Now = u.now, u.now
	perUser.Report = auditlog.ReportFailures(audit, log, auditlog.SignInFailures)
	u.signIns, u.signInAddrs = identity.NewThrottle(perUser), identity.NewThrottle(perAddress)
	for _, r := range cfg.Regions {
		u.regions = append(u.regions, r.Name)
	}
	for _, usr := range cfg.Users {
		u.users[usr.Name] = usr
	}
	for _, t := range cfg.ChainTenants() {
		u.tenants = append(u.tenants, t.ID)
	}
	return u
}

// Flush summarizes the failed sign-ins still being counted into the
// platform chain and forgets them: a summary is otherwise written only at a
// later attempt or after an hour's quiet, which a stopping process never
// sees. Call it at shutdown, once the pages are no longer served.
func (u *UI) Flush() {
	u.signIns.Flush()
	u.signInAddrs.Flush()
}

// Register mounts the pages.
func (u *UI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/login", u.loginForm)
	mux.HandleFunc("POST /ui/login", u.login)
	mux.HandleFunc("POST /ui/logout", u.logout)
	mux.HandleFunc("GET /ui/oidc/start", u.oidcStart)
	mux.HandleFunc("GET /ui/oidc/callback", u.oidcCallback)
	mux.HandleFunc("GET /ui/{$}", u.signedIn(u.home))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/audit", u.signedIn(u.auditTrail))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/audit/{seq}", u.signedIn(u.detail))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/exports", u.signedIn(u.exportsPage))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/audit/export", u.signedIn(u.exportTrail))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/export", u.signedIn(u.exportBundle))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/api-keys", u.signedIn(u.keysPage))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/api-keys", u.signedIn(u.createKey))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/api-keys/{keyId}/revoke", u.signedIn(u.revokeKey))
	mux.HandleFunc("GET /ui/finance", u.signedIn(u.costPage))
	mux.HandleFunc("GET /ui/finance/download/{format}", u.signedIn(u.costDownload))
	mux.HandleFunc("POST /ui/finance/close", u.signedIn(u.closePeriod))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/cost", u.signedIn(u.tenantCostPage))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/cost/download/{format}", u.signedIn(u.costDownload))
	mux.HandleFunc("GET /ui/sla", u.signedIn(u.slaPage))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/retention", u.signedIn(u.retentionPage))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/policy", u.signedIn(u.setPolicy))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/holds", u.signedIn(u.placeHold))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/holds/{holdId}/lift", u.signedIn(u.liftHold))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/erasures", u.signedIn(u.erase))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/purge", u.signedIn(u.purgeNow))
	mux.HandleFunc("POST /ui/tenants/{tenantId}/retention/move", u.signedIn(u.moveTenant))
	mux.HandleFunc("GET /ui/tenants/{tenantId}/sla", u.signedIn(u.tenantSLAPage))
	mux.HandleFunc("GET /ui/sessions", u.signedIn(u.sessionsPage))
	mux.HandleFunc("POST /ui/sessions/{sessionId}/end", u.signedIn(u.endSession))
	mux.HandleFunc("POST /ui/sessions/end-user", u.signedIn(u.endUserSessions))
}

const (
	sessionCookie = "ts_session"
	csrfCookie    = "ts_login_csrf"
)

func token() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// errSessionChanged: the session's user is gone, or their role, tenant or
// password changed since sign-in.
var errSessionChanged = fmt.Errorf("%w: the user changed", sessions.ErrNoSession)

// session finds r's live session. A session whose user was removed or
// changed (role, tenant, password) in this process's configuration is ended
// here, as is a single sign-on session to which the current mapping no
// longer gives the same role and tenant, and a local user's session once
// local users are switched off. sessions.ErrNoSession (wrapped) means
// "sign in"; other errors mean the store could not be read.
func (u *UI) session(r *http.Request) (*Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, sessions.ErrNoSession
	}
	s, err := u.sessions.Get(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	if !u.stillValid(s) {
		if err := u.sessions.End(r.Context(), c.Value); err != nil {
			u.log.Warn().Err(err).Str("user", identity.Clip(s.User)).Msg("end the session of a changed user")
		}
		return nil, errSessionChanged
	}
	return &Session{Session: s}, nil
}

// stillValid checks a session against this process's configuration: a
// local user's against the configured user (role, tenant, password); a
// single sign-on user's against the mapping (the groups kept at sign-in
// must still give the same role and tenant, from the same issuer).
func (u *UI) stillValid(s sessions.Session) bool {
	if s.Issuer != "" {
		if u.OIDC == nil || s.Issuer != u.OIDC.Issuer() {
			return false
		}
		role, tenant, _, ok := u.OIDC.Resolve(s.Groups)
		return ok && role == s.Role && tenant == s.Tenant
	}
	usr, ok := u.users[s.User]
	return ok && u.localUsers && usr.Role == s.Role && usr.Tenant == s.Tenant && sessions.Fingerprint(usr.PasswordHash) == s.Credential
}

// secure says whether cookies set on r are Secure.
func (u *UI) secure(r *http.Request) bool {
	if u.Secure || r.TLS != nil {
		return true
	}
	return u.IsSecure != nil && u.IsSecure(r)
}

// setCookie sets a cookie on /ui/: HttpOnly, Secure over TLS. The session
// cookie is SameSite=Lax (a link from mail or chat to a page opens it signed
// in; a cross-site form post carries no cookie, and every post also needs
// the session's CSRF token); the sign-in form's CSRF cookie is Strict.
func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, name, value string, ttl time.Duration) {
	same := http.SameSiteStrictMode
	if name == sessionCookie {
		same = http.SameSiteLaxMode
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/ui/", HttpOnly: true, Secure: u.secure(r),
		SameSite: same, MaxAge: int(ttl.Seconds())})
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The edge sets the CSP (frame-ancestors 'none', no inline script),
	// X-Frame-Options, nosniff and no-store on every page.
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil {
		u.log.Warn().Err(err).Msg("render page")
	}
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	u.renderLogin(w, r, http.StatusOK, "")
}

// LoginView is the sign-in page's data.
type LoginView struct {
	CSRF, Message string
	// Provider names the single sign-on button ("" none).
	Provider string
	// Local shows the password form (local users are on).
	Local bool
}

// renderLogin shows the sign-in page with message; the password form gets
// a fresh CSRF cookie.
func (u *UI) renderLogin(w http.ResponseWriter, r *http.Request, status int, message string) {
	v := LoginView{Message: message, Local: u.localUsers}
	if u.OIDC != nil {
		v.Provider = u.OIDC.Name()
	}
	if v.Local {
		v.CSRF = token()
		u.setCookie(w, r, csrfCookie, v.CSRF, 10*time.Minute)
	}
	u.render(w, r, status, loginPage(v))
}

// dummyHash keeps the time of a failed sign-in the same for unknown users.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("tenantscope"), bcrypt.DefaultCost) //nolint:errcheck // constant input

func (u *UI) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}

// maxLoginBody bounds the sign-in form (a user name of 256 bytes, a
// password, the CSRF token, all URL-encoded).
const maxLoginBody = 8 << 10

// login signs a user in. Failures are throttled per user name and per
// client address (SignInLimits): once a key must wait, every attempt, even
// with the right password, is answered 429 with Retry-After. The first
// failure of a burst and then summaries go to the platform chain
// (auditlog.SignInFailures); a success goes to the user's tenant chain.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if !u.localUsers {
		u.renderLogin(w, r, http.StatusForbidden, "Password sign-in is switched off (oidc.local_users: false). Sign in with your identity provider.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		status, msg := http.StatusBadRequest, "The sign-in form could not be read."
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			status, msg = http.StatusRequestEntityTooLarge, "The sign-in form is too large."
		}
		u.render(w, r, status, errorPage(nil, status, msg))
		return
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		u.render(w, r, http.StatusForbidden, errorPage(nil, http.StatusForbidden, "The sign-in form expired or was not ours (CSRF check). Reload the page and try again."))
		return
	}
	name, pw := r.PostForm.Get("username"), r.PostForm.Get("password")
	shown := identity.Clip(name) // what records, logs and the throttle keep
	addr := identity.ClientAddr(r)
	at := identity.Attempt{Addr: addr, UserAgent: r.UserAgent()}
	if wait := u.signInAddrs.Begin(addr, at); wait > 0 {
		u.tooManySignIns(w, r, wait)
		return
	}
	if wait := u.signIns.Begin(shown, at); wait > 0 {
		u.signInAddrs.Undo(addr)
		u.tooManySignIns(w, r, wait)
		return
	}
	usr, ok := u.users[name]
	if !identity.ValidName(name) {
		ok = false // not a name we accept: refused like a wrong password, without bcrypt
	} else {
		hash := []byte(usr.PasswordHash)
		if !ok || len(hash) == 0 {
			hash = dummyHash
		}
		ok = bcrypt.CompareHashAndPassword(hash, []byte(pw)) == nil && ok
	}
	if !ok {
		u.log.Warn().Str("user", shown).Str("ip", addr).Msg("failed sign-in")
		u.signIns.Fail(shown, at)
		u.signInAddrs.Fail(addr, at)
		u.renderLogin(w, r, http.StatusUnauthorized, "Wrong user or password.")
		return
	}
	u.signIns.Forget(shown)
	u.signInAddrs.Undo(addr)
	tok, s, err := u.sessions.Create(r.Context(), sessions.Session{User: usr.Name, Role: usr.Role, Tenant: usr.Tenant,
		Credential: sessions.Fingerprint(usr.PasswordHash), Addr: addr, UserAgent: r.UserAgent()})
	if err != nil {
		u.log.Error().Err(err).Str("user", shown).Msg("sign-in: create session")
		u.render(w, r, http.StatusServiceUnavailable, errorPage(nil, http.StatusServiceUnavailable, "Sessions cannot be started right now. Try again shortly."))
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil { // the browser's previous session, if any, ends
		if err := u.sessions.End(r.Context(), old.Value); err != nil {
			u.log.Warn().Err(err).Str("user", shown).Msg("sign-in: end the previous session")
		}
	}
	u.setCookie(w, r, sessionCookie, tok, u.sessions.Absolute())
	u.setCookie(w, r, csrfCookie, "", -time.Second)
	u.auditSignIn(r, usr)
	http.Redirect(w, r, homeOf(&Session{Session: s}), http.StatusSeeOther)
}

// homeOf is where a role lands after sign-in: the audit trails for those
// who read them (compliance, tenant users), cost for finance, SLA for SREs.
func homeOf(s *Session) string {
	switch {
	case can(s, identity.ReadAudit, s.Tenant) || can(s, identity.ReadAudit, config.PlatformTenant):
		return "/ui/"
	case can(s, identity.ReadCost, ""):
		return "/ui/finance"
	case can(s, identity.ReadSLA, ""):
		return "/ui/sla"
	}
	return "/ui/"
}

func (u *UI) tooManySignIns(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	secs := identity.RetryAfter(wait)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	u.renderLogin(w, r, http.StatusTooManyRequests, "Too many failed sign-ins. Try again in "+strconv.Itoa(secs)+" s.")
}

// auditSignIn records a successful sign-in in the user's tenant's chain, or
// in the platform chain for platform users. (Failures are summarized in the
// platform chain by the throttle.)
func (u *UI) auditSignIn(r *http.Request, usr config.User) {
	rec := auditlog.Record{TenantID: chainOf(usr.Tenant), Time: time.Now().UTC(),
		Actor:  auditlog.Actor{Type: "user", ID: usr.Name, IP: r.RemoteAddr, UserAgent: identity.Clip(r.UserAgent())},
		Action: "ui.sign_in", Target: auditlog.Target{Type: "user", ID: usr.Name}, Outcome: "success", SourceService: "tenantscope-ui"}
	u.publish(r, rec)
}

// logout ends the session in the store (every process refuses its cookie
// from then on) and records it in the user's chain.
func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	s, err := u.session(r)
	if errors.Is(err, sessions.ErrNoSession) { // already ended
		u.setCookie(w, r, sessionCookie, "", -time.Second)
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	if err != nil {
		u.storeDown(w, r, err)
		return
	}
	if subtle.ConstantTimeCompare([]byte(s.CSRF), []byte(r.PostFormValue("csrf"))) != 1 {
		u.render(w, r, http.StatusForbidden, errorPage(nil, http.StatusForbidden, "Sign-out refused (CSRF check)."))
		return
	}
	if err := u.sessions.EndID(r.Context(), s.ID); err != nil && !errors.Is(err, sessions.ErrNoSession) {
		u.storeDown(w, r, err)
		return
	}
	u.setCookie(w, r, sessionCookie, "", -time.Second)
	u.publish(r, auditRecord(chainOf(s.Tenant), s.actor(r), "ui.sign_out", "user", s.User, map[string]string{"session": s.ID[:16]}))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// chainOf is the audit chain of a user's sessions: their tenant's, or the
// platform's for platform users.
func chainOf(tenant string) string {
	if tenant == "" {
		return config.PlatformTenant
	}
	return tenant
}

// storeDown answers 503 when the session store cannot be reached (never
// "signed in" by default).
func (u *UI) storeDown(w http.ResponseWriter, r *http.Request, err error) {
	u.log.Error().Err(err).Msg("session store")
	u.render(w, r, http.StatusServiceUnavailable, errorPage(nil, http.StatusServiceUnavailable, "Sessions cannot be checked right now. Try again shortly."))
}

// signedIn runs h for a live session; without one (never signed in, signed
// out, ended, timed out, the user changed) it clears the cookie and sends
// the browser to sign in, for posts too.
func (u *UI) signedIn(h func(http.ResponseWriter, *http.Request, *Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := u.live(w, r)
		if !ok {
			return
		}
		identity.SetCaller(r.Context(), s.principal()) // for metering
		h(w, r, s)
	}
}

// live finds the request's live session, or answers (sign in, or the store
// is down) and returns false.
func (u *UI) live(w http.ResponseWriter, r *http.Request) (*Session, bool) {
	s, err := u.session(r)
	if errors.Is(err, sessions.ErrNoSession) {
		if _, cerr := r.Cookie(sessionCookie); cerr == nil {
			u.setCookie(w, r, sessionCookie, "", -time.Second)
		}
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return nil, false
	}
	if err != nil {
		u.storeDown(w, r, err)
		return nil, false
	}
	return s, true
}

// PublicPaths are the UI's pages that need no session: signing in.
var PublicPaths = []string{"/ui/login", "/ui/oidc/start", "/ui/oidc/callback"}

// Guard is the edge's check for every /ui/ path: a public page passes; any
// other needs a live session (else the browser is sent to sign in). A page
// registered without signedIn is still behind it.
func (u *UI) Guard(w http.ResponseWriter, r *http.Request) bool {
	if slices.Contains(PublicPaths, r.URL.Path) {
		return true
	}
	_, ok := u.live(w, r)
	return ok
}

// home is the audit trails the role reads; a role that reads none (finance,
// sre) is sent to its own home.
func (u *UI) home(w http.ResponseWriter, r *http.Request, s *Session) {
	if h := homeOf(s); h != "/ui/" {
		http.Redirect(w, r, h, http.StatusSeeOther)
		return
	}
	var readable []string
	health := map[string]auditlog.Health{}
	for _, t := range u.tenants {
		if identity.Scope(s.principal(), identity.ReadAudit, t) == nil {
			readable = append(readable, t)
			if h, ok := u.Health.Get(t); ok {
				health[t] = h
			}
		}
	}
	u.render(w, r, http.StatusOK, homePage(s, readable, health))
}

func (u *UI) auditTrail(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, st, ok := u.allow(w, r, s, identity.ReadAudit, "read the audit trail")
	if !ok {
		return
	}
	q := r.URL.Query()
	f, err := auditlog.ParseFilter(q)
	if err != nil {
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, err.Error()))
		return
	}
	f.Open = u.Open
	rows, next, err := auditlog.List(r.Context(), st, tenant, f)
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("audit page")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The audit trail could not be read."))
		return
	}
	form := FilterForm{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Outcome: q.Get("outcome"), Q: q.Get("q"), From: q.Get("from"), To: q.Get("to"), Limit: q.Get("limit")}
	u.render(w, r, http.StatusOK, auditPage(s, tenant, form, rows, next))
}

func (u *UI) detail(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, st, ok := u.allow(w, r, s, identity.ReadAudit, "read the audit trail")
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		u.render(w, r, http.StatusBadRequest, errorPage(s, http.StatusBadRequest, "The record number must be a positive number."))
		return
	}
	rs, err := auditlog.Inspect(r.Context(), st, tenant, seq, u.VerifierKey)
	if errors.Is(err, auditlog.ErrNotFound) {
		u.render(w, r, http.StatusNotFound, errorPage(s, http.StatusNotFound, "No such record."))
		return
	}
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("audit detail")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The record could not be read."))
		return
	}
	if err := auditlog.RevealRecord(r.Context(), u.Open, &rs.Record); err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("audit detail: decrypt")
	}
	before, after, changed := diff(rs.Record.Changes)
	u.render(w, r, http.StatusOK, detailPage(s, tenant, rs, before, after, changed))
}

// diff splits {"before":…, "after":…} into pretty JSON and the top-level
// keys whose values differ.
func diff(raw json.RawMessage) (before, after string, changed []string) {
	var c struct {
		Before map[string]any `json:"before"`
		After  map[string]any `json:"after"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &c) != nil {
		return "", string(raw), nil
	}
	pretty := func(v any) string {
		if v == nil {
			return ""
		}
		b, _ := json.MarshalIndent(v, "", "  ") //nolint:errcheck // decoded JSON marshals
		return string(b)
	}
	keys := map[string]bool{}
	for k := range c.Before {
		keys[k] = true
	}
	for k := range c.After {
		keys[k] = true
	}
	for k := range keys {
		if pretty(c.Before[k]) != pretty(c.After[k]) {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	var b, a any
	if c.Before != nil {
		b = c.Before
	}
	if c.After != nil {
		a = c.After
	}
	return pretty(b), pretty(a), changed
}
