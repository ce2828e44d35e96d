package ui_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/identity/sessions"
	"github.com/tenantscope/tenantscope/identity/sessions/sessionstest"
	"github.com/tenantscope/tenantscope/ui"
)

// sessionCookie is the session cookie c holds for f.
func sessionCookie(t *testing.T, f *fixture, c *http.Client) *http.Cookie {
	t.Helper()
	u, err := url.Parse(f.url + "/ui/")
	require.NoError(t, err)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "ts_session" {
			return ck
		}
	}
	t.Fatal("no session cookie")
	return nil
}

// replayer is a browser that sends only the given (stolen, kept) cookie to
// base and does not follow redirects.
func replayer(t *testing.T, base string, ck *http.Cookie) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	u, err := url.Parse(base + "/ui/")
	require.NoError(t, err)
	jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/ui/"}})
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// refused checks that c, replaying a cookie, gets nothing: pages and
// CSRF-checked posts (with the session's own CSRF token) are sent to sign
// in, and the posts change nothing.
func refused(t *testing.T, f *fixture, base string, c *http.Client, csrf, why string) {
	t.Helper()
	for _, p := range []string{"/ui/", "/ui/tenants/acme/audit", "/ui/tenants/acme/api-keys", "/ui/tenants/acme/audit/3"} {
		res, err := c.Get(base + p)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusSeeOther, res.StatusCode, "%s: GET %s", why, p)
		require.Equal(t, "/ui/login", res.Header.Get("Location"), "%s: GET %s", why, p)
	}
	before, err := f.keys.List(context.Background(), "acme")
	require.NoError(t, err)
	res, err := c.PostForm(base+"/ui/tenants/acme/api-keys", url.Values{"csrf": {csrf}, "name": {"replayed"}, "role": {"tenant-viewer"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode, "%s: CSRF-checked post", why)
	require.Equal(t, "/ui/login", res.Header.Get("Location"))
	after, err := f.keys.List(context.Background(), "acme")
	require.NoError(t, err)
	require.Len(t, after, len(before), "%s: the replayed post created no key", why)
}

func signedInAs(t *testing.T, f *fixture, user string) (*http.Client, string, *http.Cookie) {
	t.Helper()
	c, code, doc := signIn(t, f, user, "pw-"+user)
	require.Equal(t, 200, code)
	return c, csrfOf(t, doc), sessionCookie(t, f, c)
}

// The cookie is an opaque token: the store keeps only its hash, and the
// cookie carries nothing of the user.
func TestSessionCookieIsOpaqueAndFlagged(t *testing.T) {
	f := start(t)
	c, _, first := signedInAs(t, f, "alice")
	// Signing in again in the same browser ends the session it had.
	_, doc := page(t, c, "GET", f.url+"/ui/login", nil)
	csrf, _ := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	code, _ := page(t, c, "POST", f.url+"/ui/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"pw-alice"}})
	require.Equal(t, 200, code)
	ck := sessionCookie(t, f, c)
	require.NotEqual(t, first.Value, ck.Value, "a new token at each sign-in")
	res, err := replayer(t, f.url, first).Get(f.url + "/ui/")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode, "the previous session ended")
	require.NotContains(t, ck.Value, "alice")
	require.NotContains(t, ck.Value, "acme")
	require.NotContains(t, ck.Value, ".", "not a signed payload")
	list, err := f.sessions.List(context.Background(), "alice")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.NotEqual(t, ck.Value, list[0].ID, "only the token's hash is stored")

	// The Set-Cookie header: HttpOnly, SameSite=Lax, Path=/ui/, Secure over TLS.
	setCookie := func(secureFlag, overTLS bool) string {
		f.ui.Secure = secureFlag
		defer func() { f.ui.Secure = false }()
		get := httptest.NewRequest("GET", "/ui/login", nil)
		w := httptest.NewRecorder()
		f.mux.ServeHTTP(w, get)
		doc, err := goquery.NewDocumentFromReader(w.Body)
		require.NoError(t, err)
		csrf, _ := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
		form := url.Values{"csrf": {csrf}, "username": {"victor"}, "password": {"pw-victor"}}
		post := httptest.NewRequest("POST", "/ui/login", strings.NewReader(form.Encode()))
		post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		post.AddCookie(&http.Cookie{Name: "ts_login_csrf", Value: csrf})
		if overTLS {
			post.TLS = &tls.ConnectionState{}
		}
		w = httptest.NewRecorder()
		f.mux.ServeHTTP(w, post)
		require.Equal(t, http.StatusSeeOther, w.Code)
		for _, h := range w.Result().Header.Values("Set-Cookie") {
			if strings.HasPrefix(h, "ts_session=") {
				return h
			}
		}
		t.Fatal("no session cookie set")
		return ""
	}
	plain := setCookie(false, false)
	require.Contains(t, plain, "HttpOnly")
	require.Contains(t, plain, "SameSite=Lax")
	require.Contains(t, plain, "Path=/ui/")
	require.Contains(t, plain, "Max-Age=28800", "the absolute timeout")
	require.NotContains(t, plain, "Secure")
	require.Contains(t, setCookie(false, true), "Secure", "a request over TLS gets a Secure cookie")
	require.Contains(t, setCookie(true, false), "Secure", "sessions.secure_cookies (behind a TLS proxy)")
}

// Before: sign-out only cleared the browser's cookie; a kept copy still
// opened pages and passed CSRF-checked posts for 8 h.
func TestOldCookieIsRefusedAfterSignOut(t *testing.T) {
	f := start(t)
	c, csrf, ck := signedInAs(t, f, "alice")
	kept := replayer(t, f.url, ck)
	res, err := kept.Get(f.url + "/ui/tenants/acme/audit")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, "the copy works while the session lives")

	code, doc := page(t, c, "POST", f.url+"/ui/logout", url.Values{"csrf": {csrf}})
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="login-form"]`).Length())
	refused(t, f, f.url, kept, csrf, "after sign-out")
	list, err := f.sessions.List(context.Background(), "alice")
	require.NoError(t, err)
	require.Empty(t, list, "the session is gone from the store")
	recs := records(t, f)
	last := recs[len(recs)-1]
	require.Equal(t, "ui.sign_out", last.Action)
	require.Equal(t, "acme", last.TenantID)

	// Another UI process (same store) refuses it too.
	other := f.another(t, f.cfg)
	refused(t, f, other, replayer(t, other, ck), csrf, "after sign-out, on another process")
}

// another starts a second UI process on the same session store with cfg (a
// restart with a changed configuration) and returns its address.
func (f *fixture) another(t *testing.T, cfg config.Config) string {
	t.Helper()
	u := ui.New(cfg, sessionstest.Store(t, f.js, sessions.Config{}), func(string) (*chstore.Store, error) { return f.st, nil },
		func(_ context.Context, tenant, _ string, body []byte) error {
			f.audited = append(f.audited, tenant+" "+string(body))
			return nil
		}, zerolog.Nop())
	u.Keys = f.keys
	mux := http.NewServeMux()
	u.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// withUser is cfg with user's entry changed by change.
func withUser(cfg config.Config, user string, change func(*config.User)) config.Config {
	out := cfg
	out.Users = append([]config.User(nil), cfg.Users...)
	for i := range out.Users {
		if out.Users[i].Name == user {
			change(&out.Users[i])
		}
	}
	return out
}

// A change of the user's role, tenant or password in the configuration
// ends their sessions: the process started with the new configuration
// refuses the old cookie and ends the session in the shared store, so the
// processes still on the old configuration refuse it as well. Before: a
// changed password left the cookie working after a restart.
func TestOldCookieIsRefusedAfterTheUserChanged(t *testing.T) {
	f := start(t)
	newHash, err := bcrypt.GenerateFromPassword([]byte("new-pw"), bcrypt.MinCost)
	require.NoError(t, err)
	for _, c := range []struct {
		name   string
		change func(*config.User)
	}{
		{"role", func(u *config.User) { u.Role = config.RoleTenantViewer }},
		{"tenant", func(u *config.User) { u.Tenant = "globex" }},
		{"password", func(u *config.User) { u.PasswordHash = string(newHash) }},
		{"removed", func(u *config.User) { u.Name = "alice-gone" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, csrf, ck := signedInAs(t, f, "alice")
			restarted := f.another(t, withUser(f.cfg, "alice", c.change))
			refused(t, f, restarted, replayer(t, restarted, ck), csrf, c.name+" changed")
			refused(t, f, f.url, replayer(t, f.url, ck), csrf, c.name+" changed, on a process with the old configuration")
		})
	}
	// An unchanged user's session carries over to the new process.
	_, _, ck := signedInAs(t, f, "victor")
	restarted := f.another(t, withUser(f.cfg, "alice", func(u *config.User) { u.Role = config.RoleTenantViewer }))
	res, err := replayer(t, restarted, ck).Get(restarted + "/ui/tenants/acme/audit")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)

	// The suite ends a changed user's sessions at start (EndUser), before
	// any request: then even the old process refuses at once.
	_, csrf, ck := signedInAs(t, f, "gina")
	n, err := f.sessions.EndUser(context.Background(), "gina")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	refused(t, f, f.url, replayer(t, f.url, ck), csrf, "ended by the configuration check")
}

// Compliance lists a user's sessions and ends one or all; each ending is
// recorded in the user's chain; the ended cookies are refused, others not.
func TestComplianceEndsSessions(t *testing.T) {
	f := start(t)
	withMetering(t, f)                              // finance and sre land on cost and SLA
	aliceC, csrf1, ck1 := signedInAs(t, f, "alice") // laptop
	_, csrf2, ck2 := signedInAs(t, f, "alice")      // phone
	_, _, gck := signedInAs(t, f, "gina")
	carol, ccsrf, _ := signedInAs(t, f, "carol")

	// Only compliance sees or ends sessions.
	for _, who := range []string{"alice", "victor", "frank", "sam", "gina"} {
		c, csrf := aliceC, csrf1
		if who != "alice" {
			c, csrf, _ = signedInAs(t, f, who)
		}
		code, doc := page(t, c, "GET", f.url+"/ui/sessions?user=alice", nil)
		require.Equal(t, 403, code, who)
		require.Zero(t, doc.Find(`[data-testid="session-row"]`).Length())
		require.Zero(t, doc.Find(`[data-testid="sessions-link"]`).Length(), "%s has no link to it", who)
		code, _ = page(t, c, "POST", f.url+"/ui/sessions/end-user", url.Values{"csrf": {csrf}, "user": {"alice"}})
		require.Equal(t, 403, code, who)
	}

	code, doc := page(t, carol, "GET", f.url+"/ui/sessions?user=alice", nil)
	require.Equal(t, 200, code)
	rows := doc.Find(`[data-testid="session-row"]`)
	require.Equal(t, 2, rows.Length())
	rows.Each(func(_ int, r *goquery.Selection) {
		u, _ := r.Attr("data-user")
		require.Equal(t, "alice", u)
	})
	home := doc.Find(`[data-testid="sessions-link"]`)
	require.Equal(t, 1, home.Length(), "compliance has a link to it")

	// The session id is the hash of the cookie's token.
	laptop, phone := idOf(ck1), idOf(ck2)
	require.ElementsMatch(t, []string{laptop, phone}, rows.Map(func(_ int, r *goquery.Selection) string {
		id, _ := r.Attr("data-session-id")
		return id
	}))

	// A post without the compliance officer's CSRF token ends nothing.
	code, _ = page(t, carol, "POST", f.url+"/ui/sessions/"+laptop+"/end", url.Values{"csrf": {"forged"}})
	require.Equal(t, 403, code)
	code, doc = page(t, carol, "POST", f.url+"/ui/sessions/"+laptop+"/end", url.Values{"csrf": {ccsrf}, "user": {"alice"}})
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="sessions-message"]`).Text(), "ended")
	require.Equal(t, 1, doc.Find(`[data-testid="session-row"]`).Length(), "the phone's is left")
	refused(t, f, f.url, replayer(t, f.url, ck1), csrf1, "after compliance ended it")
	res, err := replayer(t, f.url, ck2).Get(f.url + "/ui/tenants/acme/audit")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, "the other session lives on")
	code, _ = page(t, carol, "POST", f.url+"/ui/sessions/"+laptop+"/end", url.Values{"csrf": {ccsrf}})
	require.Equal(t, 404, code, "already ended")
	code, _ = page(t, carol, "POST", f.url+"/ui/sessions/not-a-session/end", url.Values{"csrf": {ccsrf}})
	require.Equal(t, 404, code)

	// End all of alice's.
	code, doc = page(t, carol, "POST", f.url+"/ui/sessions/end-user", url.Values{"csrf": {ccsrf}, "user": {"alice"}})
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="sessions-message"]`).Text(), "1 session(s) of alice ended")
	require.Equal(t, 1, doc.Find(`[data-testid="no-sessions"]`).Length())
	refused(t, f, f.url, replayer(t, f.url, ck2), csrf2, "after compliance ended all of the user's")
	res, err = replayer(t, f.url, gck).Get(f.url + "/ui/tenants/globex/audit")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, "another user's session lives on")

	var ended []string
	for _, r := range records(t, f) {
		if r.Action == "ui.session_ended" {
			require.Equal(t, "acme", r.TenantID, "in the user's chain")
			require.Equal(t, "carol", r.Actor.ID)
			require.Equal(t, "alice", r.Target.ID)
			ended = append(ended, r.Metadata["sessions"])
		}
	}
	require.Equal(t, []string{"1", "1"}, ended)
}

func idOf(ck *http.Cookie) string {
	sum := sha256.Sum256([]byte(ck.Value))
	return hex.EncodeToString(sum[:])
}

// Idle and absolute timeouts, on an injected clock.
func TestSessionsTimeOut(t *testing.T) {
	f := start(t)
	clk := identitytest.NewClock(time.Now().UTC())
	f.sessions.Now = clk.Now
	_, csrf, ck := signedInAs(t, f, "victor")
	c := replayer(t, f.url, ck)
	ok := func() bool {
		res, err := c.Get(f.url + "/ui/tenants/acme/audit")
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode == 200
	}
	for range 3 {
		clk.Add(29 * time.Minute)
		require.True(t, ok(), "used within the idle timeout")
	}
	clk.Add(31 * time.Minute)
	refused(t, f, f.url, c, csrf, "idle for 31 min")

	_, csrf, ck = signedInAs(t, f, "victor")
	c = replayer(t, f.url, ck)
	for range 16 { // 7 h 44 min of steady use
		clk.Add(29 * time.Minute)
		require.True(t, ok())
	}
	clk.Add(20 * time.Minute)
	refused(t, f, f.url, c, csrf, "8 h after sign-in")
}

// Each role lands on its own home. Before: finance landed on a page that
// said only that its role "does not read audit trails".
func TestEachRoleLandsOnItsOwnHome(t *testing.T) {
	f := start(t)
	withMetering(t, f)
	for _, c := range []struct {
		user, want string
		rows       int
	}{
		{"carol", "tenant-row", 3}, {"alice", "tenant-row", 1}, {"victor", "tenant-row", 1}, {"gina", "tenant-row", 1},
		{"frank", "cost-row", 2}, {"sam", "sla-row", 2},
	} {
		cl, code, doc := signIn(t, f, c.user, "pw-"+c.user)
		require.Equal(t, 200, code, c.user)
		require.Equal(t, c.rows, doc.Find(`[data-testid="`+c.want+`"]`).Length(), "%s lands on %s", c.user, c.want)
		require.Zero(t, doc.Find(`[data-testid="no-tenants"]`).Length(), c.user)
		// The home link and /ui/ lead there too.
		href, _ := doc.Find(`[data-testid="home-link"]`).Attr("href")
		_, again := page(t, cl, "GET", f.url+href, nil)
		require.Equal(t, c.rows, again.Find(`[data-testid="`+c.want+`"]`).Length(), c.user)
		_, again = page(t, cl, "GET", f.url+"/ui/", nil)
		require.Equal(t, c.rows, again.Find(`[data-testid="`+c.want+`"]`).Length(), c.user)
		trails := doc.Find(`[data-testid="main-nav"] a[href="/ui/"]`).Length()
		require.Equal(t, c.want == "tenant-row", trails == 1, "%s: an audit trails link only for those who read trails", c.user)
	}
}
