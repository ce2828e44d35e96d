package ui

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/oidc"
	"github.com/tenantscope/tenantscope/identity/sessions"
)

// oidcCookie binds a begun single sign-on to the browser (identity/oidc's
// signed state, nonce and PKCE verifier). SameSite=Lax: the provider sends
// the browser back with a top-level cross-site GET, which must carry it.
const oidcCookie = "ts_oidc"

func (u *UI) setOIDCCookie(w http.ResponseWriter, r *http.Request, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: value, Path: "/ui/oidc/", HttpOnly: true, Secure: u.secure(r),
		SameSite: http.SameSiteLaxMode, MaxAge: int(ttl.Seconds())})
}

// oidcStart sends the browser to the identity provider.
func (u *UI) oidcStart(w http.ResponseWriter, r *http.Request) {
	if u.OIDC == nil {
		u.render(w, r, http.StatusNotFound, errorPage(nil, http.StatusNotFound, "Single sign-on is not configured."))
		return
	}
	authURL, cookie, err := u.OIDC.Begin(r.Context())
	if err != nil {
		u.log.Error().Err(err).Msg("single sign-on: discover the identity provider")
		u.render(w, r, http.StatusServiceUnavailable, ssoRefusedPage(http.StatusServiceUnavailable,
			u.OIDC.Name()+" cannot be reached right now. Try again shortly."))
		return
	}
	u.setOIDCCookie(w, r, cookie, oidc.PendingTTL)
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

// refusal is the status and the page's message for a refused sign-in.
func (u *UI) refusal(err error, id oidc.Identity) (int, string) {
	name := u.OIDC.Name()
	switch {
	case errors.Is(err, oidc.ErrNoRole):
		return http.StatusForbidden, "You signed in at " + name + " as " + id.Name + ", but none of your groups is mapped to a role in tenantscope. " +
			"Ask an administrator to add you to a mapped group. You are not signed in."
	case errors.Is(err, oidc.ErrAudience):
		return http.StatusUnauthorized, "The identity token from " + name + " was issued for another application, not for this tenantscope (wrong audience). You are not signed in."
	case errors.Is(err, oidc.ErrNonce), errors.Is(err, oidc.ErrToken), errors.Is(err, oidc.ErrUser):
		return http.StatusUnauthorized, "The identity token from " + name + " is not valid for this sign-in. You are not signed in."
	case errors.Is(err, oidc.ErrReplayed):
		return http.StatusBadRequest, "This sign-in response was already used. Each one works once: start again from the sign-in page."
	case errors.Is(err, oidc.ErrState):
		return http.StatusBadRequest, "This sign-in response does not belong to the sign-in begun in this browser. Start again from the sign-in page."
	case errors.Is(err, oidc.ErrNoPending):
		return http.StatusBadRequest, "No sign-in was begun in this browser, or it took longer than 10 minutes. Start again from the sign-in page."
	case errors.Is(err, oidc.ErrProvider):
		return http.StatusUnauthorized, name + " did not sign you in. Start again from the sign-in page."
	case errors.Is(err, oidc.ErrExchange):
		return http.StatusBadGateway, name + " could not complete the sign-in. Try again."
	case errors.Is(err, oidc.ErrUnavailable):
		return http.StatusServiceUnavailable, name + " cannot be reached right now. Try again shortly."
	}
	return http.StatusServiceUnavailable, "The sign-in could not be completed right now. Try again shortly."
}

// oidcCallback completes a single sign-on: the state must be this
// browser's and unused, the ID token valid for this client with this
// sign-in's nonce, and the user's groups mapped to a role. Then a session
// is created as for a local sign-in and the sign-in is audited (the user's
// tenant's chain, the platform's for platform roles) with the provider's
// issuer and subject. Every refusal shows why and creates no session;
// refusals count against the client address like failed passwords.
func (u *UI) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if u.OIDC == nil {
		u.render(w, r, http.StatusNotFound, errorPage(nil, http.StatusNotFound, "Single sign-on is not configured."))
		return
	}
	u.setOIDCCookie(w, r, "", -time.Second) // a state is used once, whatever happens
	addr := identity.ClientAddr(r)
	at := identity.Attempt{Addr: addr, UserAgent: r.UserAgent()}
	if wait := u.signInAddrs.Begin(addr, at); wait > 0 {
		secs := identity.RetryAfter(wait)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		u.render(w, r, http.StatusTooManyRequests, ssoRefusedPage(http.StatusTooManyRequests,
			"Too many refused sign-ins from your address. Try again in "+strconv.Itoa(secs)+" s."))
		return
	}
	var cookie string
	if c, err := r.Cookie(oidcCookie); err == nil {
		cookie = c.Value
	}
	id, err := u.OIDC.Finish(r.Context(), cookie, r.URL.Query())
	if err != nil {
		u.signInAddrs.Fail(addr, at)
		status, msg := u.refusal(err, id)
		ev := u.log.Warn()
		if status >= 500 {
			ev = u.log.Error()
		}
		ev.Err(err).Str("ip", addr).Str("subject", identity.Clip(id.Subject)).Msg("single sign-on refused")
		if errors.Is(err, oidc.ErrNoRole) {
			u.auditSSO(r, id, "failure", "no role is mapped to the user's groups", nil)
		}
		u.render(w, r, status, ssoRefusedPage(status, msg))
		return
	}
	u.signInAddrs.Undo(addr)
	tok, s, err := u.sessions.Create(r.Context(), sessions.Session{User: id.Name, Role: id.Role, Tenant: id.Tenant,
		Issuer: id.Issuer, Subject: id.Subject, Groups: id.Groups, Addr: addr, UserAgent: r.UserAgent()})
	if err != nil {
		u.log.Error().Err(err).Str("subject", identity.Clip(id.Subject)).Msg("single sign-on: create session")
		u.render(w, r, http.StatusServiceUnavailable, ssoRefusedPage(http.StatusServiceUnavailable, "Sessions cannot be started right now. Try again shortly."))
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil { // the browser's previous session, if any, ends
		if err := u.sessions.End(r.Context(), old.Value); err != nil {
			u.log.Warn().Err(err).Msg("single sign-on: end the previous session")
		}
	}
	u.setCookie(w, r, sessionCookie, tok, u.sessions.Absolute())
	u.auditSSO(r, id, "success", "", map[string]string{"session": s.ID[:16], "group": id.Group})
	http.Redirect(w, r, homeOf(&Session{Session: s}), http.StatusSeeOther)
}

// auditSSO records a single sign-on as ui.sign_in with the provider's
// issuer and subject: a success in the user's chain (tenant users: their
// tenant's; platform roles: the platform's), like a local sign-in; a user
// the mapping refuses in the platform chain, like failed passwords.
func (u *UI) auditSSO(r *http.Request, id oidc.Identity, outcome, reason string, meta map[string]string) {
	if meta == nil {
		meta = map[string]string{}
	}
	meta["method"], meta["issuer"], meta["subject"] = "oidc", id.Issuer, identity.Clip(id.Subject)
	chain := config.PlatformTenant
	if outcome == "success" {
		chain = chainOf(id.Tenant)
	}
	rec := auditRecord(chain, auditlog.Actor{Type: "user", ID: id.Name, IP: r.RemoteAddr, UserAgent: identity.Clip(r.UserAgent())},
		"ui.sign_in", "user", id.Name, meta)
	rec.Outcome, rec.Reason = outcome, reason
	u.publish(r, rec)
}
