package ui_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
)

// The key page shows who made each key, and revoking a key that minted
// others can take them along.
func TestKeyPageShowsLineageAndRevokesWhatAKeyMinted(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	c, csrf, _ := signedInAs(t, f, "alice")
	code, doc := page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys", url.Values{"csrf": {csrf}, "name": {"deployer"}, "role": {"tenant-admin"}})
	require.Equal(t, 201, code)
	parentSecret := doc.Find(`[data-testid="new-key-secret"]`).Text()
	parent, ok := f.keys.Lookup(config.HashAPIKey(parentSecret))
	require.True(t, ok)
	// The deployer key mints a key through the API (as apikeys.API does).
	asKey := auditlog.Actor{Type: "api_key", ID: parent.Name}
	child, childSecret, err := f.keys.Create(ctx, "acme", "ci", config.RoleTenantViewer, asKey, parent.KeyID)
	require.NoError(t, err)

	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/api-keys", nil)
	require.Equal(t, 200, code)
	row := func(id string) *goquery.Selection {
		return doc.Find(`[data-testid="key-row"][data-key-id="` + id + `"]`)
	}
	by := row(parent.KeyID).Find(`[data-testid="created-by"]`)
	require.Equal(t, apikeys.CreatorUser, by.AttrOr("data-creator-type", ""))
	require.Contains(t, by.Text(), "alice")
	require.Contains(t, by.Find(`[data-testid="minted"]`).Text(), "minted 1")
	by = row(child.ID).Find(`[data-testid="created-by"]`)
	require.Equal(t, apikeys.CreatorKey, by.AttrOr("data-creator-type", ""))
	require.Equal(t, parent.KeyID, by.AttrOr("data-parent-key", ""))
	require.Equal(t, "#key-"+parent.KeyID, by.Find("a").AttrOr("href", ""))
	require.Equal(t, 1, row(parent.KeyID).Find(`[data-testid="cascade"]`).Length(), "a key that minted others offers to take them along")
	require.Zero(t, row(child.ID).Find(`[data-testid="cascade"]`).Length())

	code, doc = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys/"+parent.KeyID+"/revoke", url.Values{"csrf": {csrf}, "cascade": {"1"}})
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="keys-message"]`).Text(), child.ID)
	for _, s := range []string{parentSecret, childSecret} {
		_, ok := f.keys.Lookup(config.HashAPIKey(s))
		require.False(t, ok)
	}
	var revoked []string
	for _, a := range f.audited {
		if strings.HasPrefix(a, "acme ") && strings.Contains(a, `"api_key.revoked"`) {
			revoked = append(revoked, a)
		}
	}
	require.Len(t, revoked, 2, "each revoked key is audited")
	require.Contains(t, revoked[1], `"cascade_from":"`+parent.KeyID+`"`)
}
