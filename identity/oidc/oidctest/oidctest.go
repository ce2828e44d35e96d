// Package oidctest runs a real OpenID Connect provider in the test process
// (github.com/oauth2-proxy/mockoidc: discovery, JWKS, RS256 ID tokens,
// authorization codes usable once, PKCE S256, nonce, a groups claim). It
// approves every authorization at once with the next queued user, so a
// browser or an HTTP client is sent straight back to the callback.
package oidctest

import (
	"net"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

// ClientID and ClientSecret are the client the provider knows.
const (
	ClientID     = "tenantscope"
	ClientSecret = "tenantscope-test-secret"
)

// Provider is a running provider.
type Provider struct {
	*mockoidc.MockOIDC
}

// Start runs a provider on loopback until the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	require.NoError(t, err)
	m.ClientID, m.ClientSecret = ClientID, ClientSecret
	m.CodeChallengeMethodsSupported = []string{"S256"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, m.Start(ln, nil))
	t.Cleanup(func() { _ = m.Shutdown() }) //nolint:errcheck // the test is over
	return &Provider{MockOIDC: m}
}

// Config is the suite's oidc section for this provider, with the callback
// at base (the UI's address) and mappings.
func (p *Provider) Config(base string, mappings ...config.OIDCMapping) config.OIDC {
	return config.OIDC{Issuer: p.Issuer(), Name: "Test IdP", ClientID: ClientID, ClientSecret: ClientSecret,
		RedirectURL: base + config.OIDCCallbackPath, Scopes: []string{"openid", "profile", "email", "groups"},
		RoleClaim: "groups", Mappings: mappings, LocalUsers: true}
}

// User queues the user the next authorization signs in.
func (p *Provider) User(subject, name string, groups ...string) {
	p.QueueUser(&mockoidc.MockUser{Subject: subject, PreferredUsername: name, Email: name + "@example.com", EmailVerified: true, Groups: groups})
}

// UserForAudience queues a user whose ID token is issued for another
// client (aud), signed by this provider like any other.
func (p *Provider) UserForAudience(aud, subject, name string, groups ...string) {
	p.QueueUser(&foreign{MockUser: &mockoidc.MockUser{Subject: subject, PreferredUsername: name, Groups: groups}, aud: aud})
}

type foreign struct {
	*mockoidc.MockUser
	aud string
}

func (f *foreign) Claims(scope []string, claims *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	claims.Audience = jwt.ClaimStrings{f.aud}
	return f.MockUser.Claims(scope, claims)
}
