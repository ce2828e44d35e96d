package ui_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/oidc/oidctest"
)

// TestBrowserSingleSignOn drives the OIDC flow in headless Chromium against
// a provider running in this process: "Sign in with Test IdP", the
// provider approves, the browser lands on the role's home with a session.
// Then each refusal in the browser — a replayed callback (without and with
// the state cookie), groups that map to no role, an ID token for another
// audience — shows its page and leaves no session. Screenshots go to the
// test's artifact directory.
func TestBrowserSingleSignOn(t *testing.T) {
	exe := chromiumPath(t)
	f := start(t)
	idp := oidctest.Start(t)
	s := startSSO(t, f, idp, nil)
	shots := t.ArtifactDir()

	ctx, shot, do, text, taken := openBrowser(t, exe, shots, 60*time.Second)
	// loaded waits until the browser shows a loaded page whose address
	// contains want (the provider's redirects happen in between).
	loaded := func(want string) {
		t.Helper()
		for ctx.Err() == nil {
			v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + document.readyState`))
			if err == nil && strings.Contains(v, want) && strings.HasSuffix(v, " complete") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no page with %q was loaded", want)
	}
	cookies := func() map[string]string {
		t.Helper()
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{s.url + "/ui/", s.url + "/ui/oidc/callback"}})
		require.NoError(t, err)
		out := map[string]string{}
		for _, c := range res.Cookies {
			out[c.Name] = c.Value
		}
		return out
	}
	// signIn clicks "Sign in with Test IdP" on the sign-in page; the
	// provider approves the queued user and sends the browser back.
	signIn := func(want string) {
		t.Helper()
		do(chromedp.Navigate(s.url+"/ui/login"), chromedp.WaitVisible(`[data-testid="sso-sign-in"]`))
		require.Equal(t, "Sign in with Test IdP", strings.TrimSpace(text(`[data-testid="sso-sign-in"]`)))
		do(chromedp.Click(`[data-testid="sso-sign-in"]`))
		loaded(want)
	}
	sessionsOf := func(user string) int {
		t.Helper()
		list, err := f.sessions.List(context.Background(), user)
		require.NoError(t, err)
		return len(list)
	}

	// A tenant admin signs in and lands on the audit trails of acme.
	do(chromedp.Navigate(s.url + "/ui/login"))
	loaded("/ui/login")
	shot("sign-in-page")
	idp.User("sub-ann-0001", "ann", "marketing", "acme-admins")
	signIn("/ui/")
	do(chromedp.WaitVisible(`[data-testid="tenants"]`))
	require.Contains(t, text(`[data-testid="whoami"]`), "ann (tenant-admin of acme)")
	require.Contains(t, cookies(), "ts_session")
	require.NotContains(t, cookies(), "ts_oidc", "the state cookie is gone once used")
	require.Equal(t, 1, sessionsOf("ann"))
	shot("signed-in-home")
	cb := s.last(t)

	// The callback replayed in the same browser: its state cookie is gone.
	do(chromedp.Navigate(cb.url))
	loaded("/ui/oidc/callback")
	require.Contains(t, text(`[data-testid="sso-refused"]`), "No sign-in was begun in this browser")
	shot("replay-refused")
	// With the state cookie put back (as a thief who copied it would): the
	// state was used already.
	_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: "ts_oidc", Value: cb.cookie, URL: s.url + "/ui/oidc/callback", Path: "/ui/oidc/"})
	require.NoError(t, err)
	do(chromedp.Navigate(cb.url))
	loaded("/ui/oidc/callback")
	require.Contains(t, text(`[data-testid="sso-refused"]`), "already used")
	require.Contains(t, text(`[data-testid="error-status"]`), "400")
	shot("replay-with-cookie-refused")
	require.Equal(t, 1, sessionsOf("ann"), "the replays created no session")

	// Sign out, so the refusals below start without a session.
	do(chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(`[data-testid="logout"]`), chromedp.Click(`[data-testid="logout"]`))
	loaded("/ui/login")
	require.NotContains(t, cookies(), "ts_session")
	require.Equal(t, 0, sessionsOf("ann"))

	// Groups that map to no role.
	idp.User("sub-mallory", "mallory", "marketing", "engineering")
	signIn("/ui/oidc/callback")
	require.Contains(t, text(`[data-testid="sso-refused"]`), "none of your groups is mapped to a role")
	require.Contains(t, text(`[data-testid="error-status"]`), "403")
	require.NotContains(t, cookies(), "ts_session")
	require.Equal(t, 0, sessionsOf("mallory"))
	shot("no-role-refused")

	// An ID token issued for another client.
	idp.UserForAudience("another-app", "sub-eve", "eve", "ts-compliance")
	signIn("/ui/oidc/callback")
	require.Contains(t, text(`[data-testid="sso-refused"]`), "issued for another application")
	require.Contains(t, text(`[data-testid="error-status"]`), "401")
	require.NotContains(t, cookies(), "ts_session")
	require.Equal(t, 0, sessionsOf("eve"))
	shot("wrong-audience-refused")

	// A compliance officer, after all that, still gets in.
	idp.User("sub-carl", "carl", "ts-compliance")
	signIn("/ui/")
	do(chromedp.WaitVisible(`[data-testid="tenants"]`))
	require.Contains(t, text(`[data-testid="whoami"]`), "carl (compliance)")
	shot("compliance-home")
	t.Logf("%d screenshots in %s", taken(), shots)
}
