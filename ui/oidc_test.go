package ui_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity/oidc"
	"github.com/tenantscope/tenantscope/identity/oidc/oidctest"
	"github.com/tenantscope/tenantscope/ui"
)

// ssoMappings map the provider's groups to roles.
var ssoMappings = []config.OIDCMapping{
	{Group: "ts-compliance", Role: config.RoleCompliance},
	{Group: "ts-finance", Role: config.RoleFinance},
	{Group: "acme-admins", Role: config.RoleTenantAdmin, Tenant: "acme"},
	{Group: "acme-viewers", Role: config.RoleTenantViewer, Tenant: "acme"},
}

const ssoSessionKey = "5e55104b3e7d0f1c2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"

// sso is a UI process with single sign-on through idp, sharing the
// fixture's session store, stores and audit publisher.
type sso struct {
	url string
	ui  *ui.UI
	idp *oidctest.Provider
	// callbacks records each callback the UI received, with the state
	// cookie the browser sent (what a thief could copy).
	mu        sync.Mutex
	callbacks []callback
}

type callback struct {
	url, cookie string
}

func (s *sso) last(t *testing.T) callback {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	require.NotEmpty(t, s.callbacks, "no callback reached the UI")
	return s.callbacks[len(s.callbacks)-1]
}

// startSSO starts a UI process on its own address with the oidc section
// of edit (applied to the provider's configuration).
func startSSO(t *testing.T, f *fixture, idp *oidctest.Provider, edit func(*config.OIDC)) *sso {
	t.Helper()
	s := &sso{idp: idp}
	mux := http.NewServeMux()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == config.OIDCCallbackPath {
			cb := callback{url: "http://" + r.Host + r.URL.RequestURI()}
			if c, err := r.Cookie("ts_oidc"); err == nil {
				cb.cookie = c.Value
			}
			s.mu.Lock()
			s.callbacks = append(s.callbacks, cb)
			s.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	cfg := f.cfg
	cfg.OIDC = idp.Config(srv.URL, ssoMappings...)
	if edit != nil {
		edit(&cfg.OIDC)
	}
	cfg.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	for i := range cfg.Tenants {
		cfg.Tenants[i].NATS.User = cfg.Tenants[i].ID + "-svc" // the fixture has none; Validate wants them
	}
	require.NoError(t, cfg.Validate(), "the oidc section the test runs with is valid")
	s.ui = ui.New(cfg, f.sessions, func(string) (*chstore.Store, error) { return f.st, nil },
		func(_ context.Context, tenant, _ string, body []byte) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			f.audited = append(f.audited, tenant+" "+string(body))
			return nil
		}, zerolog.Nop())
	s.ui.Health = auditlog.NewHealthBoard()
	s.ui.Keys = f.keys
	client, err := oidc.New(context.Background(), cfg.OIDC, f.js, ssoSessionKey)
	require.NoError(t, err)
	s.ui.OIDC = client
	s.ui.Register(mux)
	return s
}

// audits is what the fixture's publisher received (under s's lock).
func (s *sso) audits(t *testing.T, f *fixture) []auditlog.Record {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	return records(t, f)
}

// browse is a browser without redirects followed, so each step is seen.
func browse() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, *goquery.Document) {
	t.Helper()
	res, err := c.Get(u)
	require.NoError(t, err)
	defer res.Body.Close()
	doc, err := goquery.NewDocumentFromReader(res.Body)
	require.NoError(t, err)
	return res, doc
}

// ssoSignIn clicks "Sign in with …", lets the provider approve and returns
// the UI's answer to the callback (not followed).
func ssoSignIn(t *testing.T, s *sso, c *http.Client) (*http.Response, *goquery.Document) {
	t.Helper()
	res, _ := get(t, c, s.url+"/ui/oidc/start")
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	authURL := res.Header.Get("Location")
	require.True(t, strings.HasPrefix(authURL, s.idp.AuthorizationEndpoint()), authURL)
	res, _ = get(t, c, authURL)
	require.Equal(t, http.StatusFound, res.StatusCode, "the provider approves at once")
	return get(t, c, res.Header.Get("Location"))
}

// noSession checks that c holds no session cookie and the store none of
// user's.
func noSession(t *testing.T, f *fixture, s *sso, c *http.Client, user string) {
	t.Helper()
	u, err := url.Parse(s.url + "/ui/")
	require.NoError(t, err)
	for _, ck := range c.Jar.Cookies(u) {
		require.NotEqual(t, "ts_session", ck.Name, "a refused sign-in sets no session cookie")
	}
	list, err := f.sessions.List(context.Background(), user)
	require.NoError(t, err)
	require.Empty(t, list, "no session of %s in the store", user)
}

func signedInPage(t *testing.T, s *sso, c *http.Client, res *http.Response) *goquery.Document {
	t.Helper()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	res, doc := get(t, c, s.url+res.Header.Get("Location"))
	require.Equal(t, http.StatusOK, res.StatusCode)
	return doc
}

// A mapped user signs in through the provider: a session like a local
// sign-in's, the role's home, and a record with the provider's issuer and
// subject in the user's chain.
func TestSingleSignOn(t *testing.T) {
	f := start(t)
	idp := oidctest.Start(t)
	s := startSSO(t, f, idp, nil)

	_, doc := get(t, browse(), s.url+"/ui/login")
	require.Equal(t, "Sign in with Test IdP", strings.TrimSpace(doc.Find(`[data-testid="sso-sign-in"]`).Text()))
	require.Equal(t, 1, doc.Find(`[data-testid="login-form"]`).Length(), "local users stay for break-glass")

	c := browse()
	idp.User("sub-ann-0001", "ann", "marketing", "acme-admins")
	res, _ := ssoSignIn(t, s, c)
	require.Equal(t, "/ui/", res.Header.Get("Location"))
	doc = signedInPage(t, s, c, res)
	require.Contains(t, doc.Find(`[data-testid="whoami"]`).Text(), "ann (tenant-admin of acme)")
	require.Equal(t, []string{"acme"}, doc.Find(`[data-testid="tenant-link"]`).Map(func(_ int, e *goquery.Selection) string { return e.Text() }))
	list, err := f.sessions.List(context.Background(), "ann")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, idp.Issuer(), list[0].Issuer)
	require.Equal(t, "sub-ann-0001", list[0].Subject)
	require.Equal(t, []string{"acme-admins"}, list[0].Groups)
	require.Empty(t, list[0].Credential)

	recs := s.audits(t, f)
	last := recs[len(recs)-1]
	require.Equal(t, "acme", last.TenantID, "a tenant user's sign-in goes to the tenant's chain, as for local users")
	require.Equal(t, "ui.sign_in", last.Action)
	require.Equal(t, "success", last.Outcome)
	require.Equal(t, "ann", last.Actor.ID)
	require.Equal(t, map[string]string{"method": "oidc", "issuer": idp.Issuer(), "subject": "sub-ann-0001", "group": "acme-admins", "session": list[0].ID[:16]}, last.Metadata)

	// Finance lands on cost; the platform chain records a platform role.
	c2 := browse()
	idp.User("sub-fay", "fay", "ts-finance")
	res, _ = ssoSignIn(t, s, c2)
	require.Equal(t, "/ui/finance", res.Header.Get("Location"))
	recs = s.audits(t, f)
	require.Equal(t, config.PlatformTenant, recs[len(recs)-1].TenantID)

	// Compliance sees which sessions came through single sign-on.
	officer := browse()
	idp.User("sub-carl", "carl", "ts-compliance")
	res, _ = ssoSignIn(t, s, officer)
	require.Equal(t, "/ui/", res.Header.Get("Location"))
	res, sdoc := get(t, officer, s.url+"/ui/sessions")
	require.Equal(t, http.StatusOK, res.StatusCode)
	row := sdoc.Find(`[data-testid="session-row"][data-user="ann"]`)
	require.Equal(t, 1, row.Find(`[data-testid="session-sso"]`).Length())
	title, _ := row.Find(`[data-testid="session-sso"]`).Attr("title")
	require.Equal(t, idp.Issuer()+" · sub-ann-0001", title)

	// Sign-out ends an SSO user's session like any other.
	csrf, _ := doc.Find(`form[action="/ui/logout"] input[name="csrf"]`).Attr("value")
	res, err = c.PostForm(s.url+"/ui/logout", url.Values{"csrf": {csrf}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	list, err = f.sessions.List(context.Background(), "ann")
	require.NoError(t, err)
	require.Empty(t, list)
}

// Each refusal: a clear page, no session cookie, nothing in the store.
func TestSingleSignOnRefusals(t *testing.T) {
	f := start(t)
	idp := oidctest.Start(t)
	s := startSSO(t, f, idp, nil)

	t.Run("groups that map to no role", func(t *testing.T) {
		c := browse()
		idp.User("sub-mallory", "mallory", "marketing", "engineering")
		res, doc := ssoSignIn(t, s, c)
		require.Equal(t, http.StatusForbidden, res.StatusCode)
		require.Contains(t, doc.Find(`[data-testid="sso-refused"]`).Text(), "none of your groups is mapped to a role")
		noSession(t, f, s, c, "mallory")
		recs := s.audits(t, f)
		last := recs[len(recs)-1]
		require.Equal(t, config.PlatformTenant, last.TenantID, "refused users are recorded in the platform chain")
		require.Equal(t, "failure", last.Outcome)
		require.Equal(t, "sub-mallory", last.Metadata["subject"])
		require.Equal(t, idp.Issuer(), last.Metadata["issuer"])
	})
	t.Run("an ID token for another audience", func(t *testing.T) {
		c := browse()
		idp.UserForAudience("another-app", "sub-eve", "eve", "ts-compliance")
		res, doc := ssoSignIn(t, s, c)
		require.Equal(t, http.StatusUnauthorized, res.StatusCode)
		require.Contains(t, doc.Find(`[data-testid="sso-refused"]`).Text(), "issued for another application")
		noSession(t, f, s, c, "eve")
	})
	t.Run("a replayed state after a successful sign-in", func(t *testing.T) {
		c := browse()
		idp.User("sub-carl", "carl", "ts-compliance")
		res, _ := ssoSignIn(t, s, c)
		require.Equal(t, http.StatusSeeOther, res.StatusCode)
		cb := s.last(t)
		sessionsBefore, err := f.sessions.List(context.Background(), "carl")
		require.NoError(t, err)
		require.Len(t, sessionsBefore, 1)

		// The same browser opens the callback again: its state cookie is gone.
		res, doc := get(t, c, cb.url)
		require.Equal(t, http.StatusBadRequest, res.StatusCode)
		require.Contains(t, doc.Find(`[data-testid="sso-refused"]`).Text(), "No sign-in was begun in this browser")
		// A thief with the callback URL and the state cookie: used already.
		thief := browse()
		u, err := url.Parse(s.url + "/ui/oidc/")
		require.NoError(t, err)
		thief.Jar.SetCookies(u, []*http.Cookie{{Name: "ts_oidc", Value: cb.cookie, Path: "/ui/oidc/"}})
		res, doc = get(t, thief, cb.url)
		require.Equal(t, http.StatusBadRequest, res.StatusCode)
		require.Contains(t, doc.Find(`[data-testid="sso-refused"]`).Text(), "already used")
		noSession(t, f, s, thief, "nobody")
		after, err := f.sessions.List(context.Background(), "carl")
		require.NoError(t, err)
		require.Len(t, after, 1, "the replays created no session")
		require.Equal(t, sessionsBefore[0].ID, after[0].ID)
	})
	t.Run("a callback begun in another browser (login CSRF)", func(t *testing.T) {
		attacker, victim := browse(), browse()
		res, _ := get(t, attacker, s.url+"/ui/oidc/start")
		idp.User("sub-attacker", "attacker", "ts-compliance")
		res, _ = get(t, attacker, res.Header.Get("Location"))
		get(t, victim, s.url+"/ui/oidc/start") // the victim has begun a sign-in of their own
		res, doc := get(t, victim, res.Header.Get("Location"))
		require.Equal(t, http.StatusBadRequest, res.StatusCode)
		require.Contains(t, doc.Find(`[data-testid="sso-refused"]`).Text(), "does not belong to the sign-in begun in this browser")
		noSession(t, f, s, victim, "attacker")
	})
}

// An SSO session is checked against the mapping, not the YAML users: a
// process whose mapping gives the group another role refuses (and ends)
// the session; with oidc.local_users false, password sign-in is hidden
// and refused and local sessions end.
func TestSingleSignOnSessionsFollowTheMapping(t *testing.T) {
	f := start(t)
	idp := oidctest.Start(t)
	s := startSSO(t, f, idp, nil)
	c := browse()
	idp.User("sub-ann", "ann", "acme-admins")
	res, _ := ssoSignIn(t, s, c)
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	ck := sessionCookie(t, &fixture{url: s.url}, c) // the SSO process's address
	res, _ = get(t, c, s.url+"/ui/tenants/acme/api-keys")
	require.Equal(t, http.StatusOK, res.StatusCode, "ann is not a configured user, yet her session holds")

	demoted := startSSO(t, f, idp, func(o *config.OIDC) {
		o.Mappings = []config.OIDCMapping{{Group: "acme-admins", Role: config.RoleTenantViewer, Tenant: "acme"}}
	})
	res, _ = get(t, replayer(t, demoted.url, ck), demoted.url+"/ui/")
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "/ui/login", res.Header.Get("Location"), "the mapping changed: the session ends")
	res, _ = get(t, c, s.url+"/ui/")
	require.Equal(t, http.StatusSeeOther, res.StatusCode, "ended for every process")

	// A local user's session, then local users switched off.
	alice, _, _ := signedInAs(t, f, "alice")
	local := sessionCookie(t, f, alice)
	off := startSSO(t, f, idp, func(o *config.OIDC) { o.LocalUsers = false })
	_, doc := get(t, browse(), off.url+"/ui/login")
	require.Equal(t, 0, doc.Find(`[data-testid="login-form"]`).Length(), "no password form")
	require.Equal(t, 1, doc.Find(`[data-testid="sso-sign-in"]`).Length())
	res, doc = get(t, replayer(t, off.url, local), off.url+"/ui/")
	require.Equal(t, http.StatusSeeOther, res.StatusCode, "a local session ends when local users are off")
	form := url.Values{"username": {"alice"}, "password": {"pw-alice"}, "csrf": {"x"}}
	pc := browse()
	res, err := pc.PostForm(off.url+"/ui/login", form)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	doc, err = goquery.NewDocumentFromReader(res.Body)
	require.NoError(t, err)
	require.Contains(t, doc.Find(`[data-testid="login-error"]`).Text(), "Password sign-in is switched off")
	noSession(t, f, off, pc, "alice")
}
