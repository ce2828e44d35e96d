package suite_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// A user's role changes in the configuration and the suite restarts: the
// cookie kept from before is refused, for pages and for CSRF-checked posts,
// and the ended session is recorded in the user's chain. Before: the signed
// cookie kept working across the restart for its 8 h.
func TestSessionsEndWhenTheUserChanges(t *testing.T) {
	e := newEnv(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-alice"), bcrypt.MinCost)
	require.NoError(t, err)
	base := e.cfgYAML
	withAlice := func(role string) string {
		return strings.Replace(base, "users:\n  - {name: carol, role: compliance}\n",
			"users:\n  - {name: carol, role: compliance}\n  - {name: alice, role: "+role+", tenant: acme, password_hash: \""+string(hash)+"\"}\n", 1)
	}
	stop := func(cmd interface{ Wait() error }, pid int) {
		require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
		require.NoError(t, cmd.Wait())
	}
	web := "http://" + e.httpAddr

	e.cfgYAML = withAlice("tenant-admin")
	cmd := e.start(t)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	get := func(c *http.Client, path string) (*http.Response, *goquery.Document) {
		t.Helper()
		res, err := c.Get(web + path)
		require.NoError(t, err)
		defer res.Body.Close()
		doc, err := goquery.NewDocumentFromReader(res.Body)
		require.NoError(t, err)
		return res, doc
	}
	_, doc := get(c, "/ui/login")
	csrf, _ := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	res, err := c.PostForm(web+"/ui/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"pw-alice"}})
	require.NoError(t, err)
	doc, err = goquery.NewDocumentFromReader(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	formCSRF, ok := doc.Find(`form[action="/ui/logout"] input[name="csrf"]`).Attr("value")
	require.True(t, ok, "signed in")
	ui, err := url.Parse(web + "/ui/")
	require.NoError(t, err)
	var kept *http.Cookie
	for _, ck := range jar.Cookies(ui) {
		if ck.Name == "ts_session" {
			kept = ck
		}
	}
	require.NotNil(t, kept)
	res, _ = get(c, "/ui/tenants/acme/api-keys")
	require.Equal(t, 200, res.StatusCode, "an admin's page, while the session lives")
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM audit_records FINAL WHERE tenant_id = '_platform' AND action = 'user.created'") == 2
	}, 30*time.Second, 200*time.Millisecond, "the chain knows alice before the restart")
	stop(cmd, cmd.Process.Pid)

	// alice becomes a viewer.
	e.cfgYAML = withAlice("tenant-viewer")
	cmd = e.start(t)
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme' AND action = 'ui.session_ended' AND target_id = 'alice'") == 1
	}, 60*time.Second, 250*time.Millisecond, "the start ends alice's session and records it in acme's chain")

	rjar, err := cookiejar.New(nil)
	require.NoError(t, err)
	rjar.SetCookies(ui, []*http.Cookie{{Name: kept.Name, Value: kept.Value, Path: "/ui/"}})
	replay := &http.Client{Jar: rjar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/ui/", "/ui/tenants/acme/audit", "/ui/tenants/acme/api-keys"} {
		res, _ := get(replay, p)
		require.Equal(t, http.StatusSeeOther, res.StatusCode, p)
		require.Equal(t, "/ui/login", res.Header.Get("Location"), p)
	}
	res, err = replay.PostForm(web+"/ui/tenants/acme/api-keys", url.Values{"csrf": {formCSRF}, "name": {"replayed"}, "role": {"tenant-admin"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "/ui/login", res.Header.Get("Location"))
	require.Zero(t, e.count(t, "ts_eu", "SELECT count() FROM api_keys FINAL WHERE name = 'replayed'"))
	stop(cmd, cmd.Process.Pid)
}
