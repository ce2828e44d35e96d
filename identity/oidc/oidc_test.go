package oidc_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity/oidc"
	"github.com/tenantscope/tenantscope/identity/oidc/oidctest"
	"github.com/tenantscope/tenantscope/identity/sessions/sessionstest"
)

var mappings = []config.OIDCMapping{
	{Group: "ts-compliance", Role: config.RoleCompliance},
	{Group: "acme-admins", Role: config.RoleTenantAdmin, Tenant: "acme"},
	{Group: "acme-viewers", Role: config.RoleTenantViewer, Tenant: "acme"},
}

const sessionKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newClient(t *testing.T) (*oidc.Client, *oidctest.Provider) {
	t.Helper()
	idp := oidctest.Start(t)
	c, err := oidc.New(context.Background(), idp.Config("http://127.0.0.1:1", mappings...), sessionstest.JetStream(t), sessionKey)
	require.NoError(t, err)
	return c, idp
}

// authorize follows authURL at the provider (which approves at once) and
// returns the callback's query.
func authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(authURL)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusFound, res.StatusCode)
	loc, err := url.Parse(res.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, config.OIDCCallbackPath, loc.Path)
	return loc.Query()
}

func begin(t *testing.T, c *oidc.Client) (string, string, url.Values) {
	t.Helper()
	authURL, cookie, err := c.Begin(context.Background())
	require.NoError(t, err)
	u, err := url.Parse(authURL)
	require.NoError(t, err)
	return authURL, cookie, u.Query()
}

// The flow: PKCE S256, a nonce, state; the mapped user gets the first
// mapping's role that their groups name.
func TestFinishSignsInAMappedUser(t *testing.T) {
	c, idp := newClient(t)
	authURL, cookie, q := begin(t, c)
	require.Equal(t, "S256", q.Get("code_challenge_method"))
	require.NotEmpty(t, q.Get("code_challenge"))
	require.NotEmpty(t, q.Get("nonce"))
	require.NotEmpty(t, q.Get("state"))
	require.Equal(t, oidctest.ClientID, q.Get("client_id"))
	require.NotContains(t, cookie, q.Get("code_challenge"), "the cookie holds the verifier, not the challenge")

	idp.User("sub-ann", "ann", "marketing", "acme-viewers", "acme-admins")
	id, err := c.Finish(context.Background(), cookie, authorize(t, authURL))
	require.NoError(t, err)
	require.Equal(t, idp.Issuer(), id.Issuer)
	require.Equal(t, "sub-ann", id.Subject)
	require.Equal(t, "ann", id.Name)
	require.Equal(t, config.RoleTenantAdmin, id.Role, "acme-admins comes first in the mapping")
	require.Equal(t, "acme", id.Tenant)
	require.Equal(t, "acme-admins", id.Group)
	require.Equal(t, []string{"acme-admins", "acme-viewers"}, id.Groups, "only mapped groups, in mapping order")
}

// Each refusal, without a browser.
func TestFinishRefusals(t *testing.T) {
	ctx := context.Background()
	c, idp := newClient(t)

	t.Run("groups that map to no role", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		idp.User("sub-mallory", "mallory", "marketing", "engineering")
		id, err := c.Finish(ctx, cookie, authorize(t, authURL))
		require.ErrorIs(t, err, oidc.ErrNoRole)
		require.Equal(t, "sub-mallory", id.Subject, "the refused user is known, for the audit")
		require.Equal(t, idp.Issuer(), id.Issuer)
		require.Empty(t, id.Role)
	})
	t.Run("an ID token for another audience", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		idp.UserForAudience("another-app", "sub-eve", "eve", "ts-compliance")
		_, err := c.Finish(ctx, cookie, authorize(t, authURL))
		require.ErrorIs(t, err, oidc.ErrAudience)
		require.ErrorIs(t, err, oidc.ErrToken)
		require.Contains(t, err.Error(), "another-app")
	})
	t.Run("a replayed state, after a successful sign-in", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		idp.User("sub-carl", "carl", "ts-compliance")
		cb := authorize(t, authURL)
		_, err := c.Finish(ctx, cookie, cb)
		require.NoError(t, err)
		_, err = c.Finish(ctx, cookie, cb)
		require.ErrorIs(t, err, oidc.ErrReplayed, "the same callback with the same cookie")
		_, err = c.Finish(ctx, "", cb)
		require.ErrorIs(t, err, oidc.ErrNoPending, "the callback alone, in a browser that began nothing")
	})
	t.Run("a replayed state, after a refusal", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		idp.User("sub-mallory", "mallory", "marketing")
		cb := authorize(t, authURL)
		_, err := c.Finish(ctx, cookie, cb)
		require.ErrorIs(t, err, oidc.ErrNoRole)
		_, err = c.Finish(ctx, cookie, cb)
		require.ErrorIs(t, err, oidc.ErrReplayed)
	})
	t.Run("another browser's state", func(t *testing.T) {
		authURL, _, _ := begin(t, c)
		_, mine, _ := begin(t, c)
		idp.User("sub-carl", "carl", "ts-compliance")
		_, err := c.Finish(ctx, mine, authorize(t, authURL))
		require.ErrorIs(t, err, oidc.ErrState, "login CSRF: an attacker's callback in the victim's browser")
	})
	t.Run("a forged or stretched cookie", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		parts := strings.Split(cookie, ".")
		parts[3] = "9999999999"
		idp.User("sub-carl", "carl", "ts-compliance")
		_, err := c.Finish(ctx, strings.Join(parts, "."), authorize(t, authURL))
		require.ErrorIs(t, err, oidc.ErrNoPending)
	})
	t.Run("a sign-in older than 10 minutes", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		idp.User("sub-carl", "carl", "ts-compliance")
		cb := authorize(t, authURL)
		c.Now = func() time.Time { return time.Now().Add(oidc.PendingTTL + time.Minute) }
		defer func() { c.Now = nil }()
		_, err := c.Finish(ctx, cookie, cb)
		require.ErrorIs(t, err, oidc.ErrNoPending)
	})
	t.Run("a token whose nonce is not this sign-in's", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		u, err := url.Parse(authURL)
		require.NoError(t, err)
		q := u.Query()
		q.Set("nonce", "attacker-nonce")
		u.RawQuery = q.Encode()
		idp.User("sub-carl", "carl", "ts-compliance")
		_, err = c.Finish(ctx, cookie, authorize(t, u.String()))
		require.ErrorIs(t, err, oidc.ErrNonce)
	})
	t.Run("a code bound to another PKCE challenge", func(t *testing.T) {
		authURL, cookie, _ := begin(t, c)
		u, err := url.Parse(authURL)
		require.NoError(t, err)
		q := u.Query()
		q.Set("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM") // another verifier's
		u.RawQuery = q.Encode()
		idp.User("sub-carl", "carl", "ts-compliance")
		_, err = c.Finish(ctx, cookie, authorize(t, u.String()))
		require.ErrorIs(t, err, oidc.ErrExchange, "the provider refuses our verifier for a stolen code")
	})
	t.Run("the provider's error", func(t *testing.T) {
		_, cookie, q := begin(t, c)
		_, err := c.Finish(ctx, cookie, url.Values{"state": {q.Get("state")}, "error": {"access_denied"}})
		require.ErrorIs(t, err, oidc.ErrProvider)
	})
}

// Resolve follows the mapping's order, whatever the order of the claim.
func TestResolveFollowsTheMappingOrder(t *testing.T) {
	c, _ := newClient(t)
	for _, tc := range []struct {
		groups       []string
		role, tenant string
		ok           bool
	}{
		{[]string{"acme-viewers", "ts-compliance"}, config.RoleCompliance, "", true},
		{[]string{"acme-viewers"}, config.RoleTenantViewer, "acme", true},
		{[]string{"nope"}, "", "", false},
		{nil, "", "", false},
	} {
		role, tenant, _, ok := c.Resolve(tc.groups)
		require.Equal(t, tc.ok, ok, tc.groups)
		require.Equal(t, tc.role, role, tc.groups)
		require.Equal(t, tc.tenant, tenant, tc.groups)
	}
}

// The provider being down does not stop the UI from starting; a sign-in
// then says so, and works once it is back.
func TestUnreachableProvider(t *testing.T) {
	cfg := config.OIDC{Issuer: "http://127.0.0.1:1/nothing", ClientID: "x", RedirectURL: "http://127.0.0.1:2/ui/oidc/callback",
		Mappings: mappings, LocalUsers: true}
	c, err := oidc.New(context.Background(), cfg, sessionstest.JetStream(t), sessionKey)
	require.NoError(t, err)
	_, _, err = c.Begin(context.Background())
	require.ErrorIs(t, err, oidc.ErrUnavailable)
}
