package suite_test

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/oidc/oidctest"
)

// The suite with an oidc section: "Sign in with …" on the sign-in page, a
// mapped user of acme signs in through the provider (running in this test
// process) and lands on the trails, and the sign-in is chained in acme's
// audit trail with the provider's issuer and subject; with local_users
// false there is no password form.
func TestSuiteSingleSignOn(t *testing.T) {
	idp := oidctest.Start(t)
	e := newEnv(t)
	web := "http://" + e.httpAddr
	e.cfgYAML += fmt.Sprintf(`oidc:
  issuer: %q
  name: Test IdP
  client_id: %s
  client_secret: %s
  redirect_url: %q
  scopes: [openid, profile, email, groups]
  mappings:
    - {group: ts-compliance, role: compliance}
    - {group: acme-admins, role: tenant-admin, tenant: acme}
  local_users: false
`, idp.Issuer(), oidctest.ClientID, oidctest.ClientSecret, web+"/ui/oidc/callback")
	e.start(t)

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	res, err := c.Get(web + "/ui/login")
	require.NoError(t, err)
	doc, err := goquery.NewDocumentFromReader(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, "Sign in with Test IdP", doc.Find(`[data-testid="sso-sign-in"]`).Text())
	require.Equal(t, 0, doc.Find(`[data-testid="login-form"]`).Length(), "local_users: false")

	idp.User("sub-ann-0001", "ann", "acme-admins")
	res, err = c.Get(web + "/ui/oidc/start") // the provider approves; the client follows back
	require.NoError(t, err)
	doc, err = goquery.NewDocumentFromReader(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "/ui/", res.Request.URL.Path)
	require.Contains(t, doc.Find(`[data-testid="whoami"]`).Text(), "ann (tenant-admin of acme)")

	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", fmt.Sprintf(`SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'
			AND action = 'ui.sign_in' AND actor_id = 'ann' AND metadata['method'] = 'oidc'
			AND metadata['issuer'] = '%s' AND metadata['subject'] = 'sub-ann-0001'`, idp.Issuer())) == 1
	}, 30*time.Second, 200*time.Millisecond, "the sign-in is chained in acme's trail with issuer and subject")
}
