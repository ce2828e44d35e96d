package apikeys_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/auditlog/audittest"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/chstore/chstoretest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/placement"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

type fixture struct {
	cfg     config.Config
	st      *chstore.Store
	store   *apikeys.Store
	audited audittest.Recorder
}

func (f *fixture) newStore() *apikeys.Store {
	return apikeys.New(f.cfg, placement.New(), func(tenant string) (*chstore.Store, error) {
		if tenant != "acme" && tenant != "globex" {
			return nil, fmt.Errorf("no tenant %s", tenant)
		}
		return f.st, nil
	}, func() []*chstore.Store { return []*chstore.Store{f.st} }, f.audited.Publish, zerolog.Nop())
}

func start(t *testing.T) *fixture {
	ctx := context.Background()
	st := chstoretest.Migrated(t)
	f := &fixture{cfg: config.Default(), st: st}
	f.cfg.Tenants = []config.Tenant{{ID: "acme", Region: "default"}, {ID: "globex", Region: "default"}}
	f.cfg.APIKeys = []config.APIKey{
		{Name: "acme-admin", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("acme-admin")},
		{Name: "acme-viewer", Role: config.RoleTenantViewer, Tenant: "acme", KeyHash: config.HashAPIKey("acme-viewer")},
		{Name: "globex-admin", Role: config.RoleTenantAdmin, Tenant: "globex", KeyHash: config.HashAPIKey("globex-admin")},
		{Name: "compliance", Role: config.RoleCompliance, KeyHash: config.HashAPIKey("compliance")},
		{Name: "finance", Role: config.RoleFinance, KeyHash: config.HashAPIKey("finance")},
		{Name: "sre", Role: config.RoleSRE, KeyHash: config.HashAPIKey("sre")},
	}
	f.store = f.newStore()
	require.NoError(t, f.store.Load(ctx))
	return f
}

var by = auditlog.Actor{Type: "user", ID: "alice"}

func TestCreateLookupRevokeAndLastUsed(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	k, secret, err := f.store.Create(ctx, "acme", "  deploy bot ", config.RoleTenantViewer, by, "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(secret, "tsk_") && len(secret) > 40, secret)
	require.Equal(t, "deploy bot", k.Name)
	var stored string
	require.NoError(t, f.st.QueryRow(ctx, []any{&stored}, "SELECT key_hash FROM api_keys FINAL WHERE key_id = ?", k.ID))
	require.Equal(t, config.HashAPIKey(secret), stored, "only the hash is stored")
	var leaked uint64
	require.NoError(t, f.st.QueryRow(ctx, []any{&leaked}, "SELECT count() FROM api_keys WHERE position(key_hash, ?) > 0 OR position(name, ?) > 0", secret, secret))
	require.Zero(t, leaked)

	p, ok := f.store.Lookup(config.HashAPIKey(secret))
	require.True(t, ok)
	require.Equal(t, identity.Principal{Name: "deploy bot (" + k.ID + ")", Role: config.RoleTenantViewer, Tenant: "acme", KeyID: k.ID}, p)
	require.Equal(t, apikeys.CreatorUser, k.CreatedByType)
	require.Empty(t, k.ParentKeyID)
	require.NoError(t, f.store.Flush(ctx))

	// Another process loads it, with its last use.
	other := f.newStore()
	require.NoError(t, other.Load(ctx))
	_, ok = other.Lookup(config.HashAPIKey(secret))
	require.True(t, ok)
	keys, err := other.List(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NotNil(t, keys[0].LastUsedAt, "last use is written")

	// Revoking through another tenant is "not found"; through its own it works at once.
	_, err = f.store.Revoke(ctx, "globex", k.ID, by)
	require.ErrorIs(t, err, apikeys.ErrNotFound)
	_, err = f.store.Revoke(ctx, "acme", k.ID, by)
	require.NoError(t, err)
	_, ok = f.store.Lookup(config.HashAPIKey(secret))
	require.False(t, ok, "revoked in this process at once")
	_, err = f.store.Revoke(ctx, "acme", k.ID, by)
	require.ErrorIs(t, err, apikeys.ErrRevoked)
	// A late last-used write from the other process never un-revokes it.
	require.NoError(t, other.Flush(ctx))
	require.NoError(t, other.Load(ctx))
	_, ok = other.Lookup(config.HashAPIKey(secret))
	require.False(t, ok, "revoked for other processes after a refresh")
	require.NoError(t, f.store.Load(ctx))
	_, ok = f.store.Lookup(config.HashAPIKey(secret))
	require.False(t, ok)

	audited := f.audited.Records()
	require.Len(t, audited, 2)
	require.Equal(t, "api_key.created", audited[0].Action)
	require.Equal(t, "api_key.revoked", audited[1].Action)
	require.Equal(t, k.ID, audited[1].Target.ID)
	require.Equal(t, "alice", audited[1].Actor.ID)
}

func TestCreateRefusesBadInputAndWritesNothing(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	for _, c := range []struct{ tenant, name, role, want string }{
		{"acme", "", config.RoleTenantViewer, "name"},
		{"acme", strings.Repeat("x", 101), config.RoleTenantViewer, "name"},
		{"acme", "a\nb", config.RoleTenantViewer, "name"},
		{"acme", "ok", config.RoleCompliance, "role"},
		{"acme", "ok", "root", "role"},
		{"nobody", "ok", config.RoleTenantViewer, "unknown tenant"},
	} {
		_, _, err := f.store.Create(ctx, c.tenant, c.name, c.role, by, "")
		require.ErrorIs(t, err, apikeys.ErrInvalid)
		require.Contains(t, err.Error(), c.want)
	}
	var n uint64
	require.NoError(t, f.st.QueryRow(ctx, []any{&n}, "SELECT count() FROM api_keys"))
	require.Zero(t, n)
	require.Empty(t, f.audited.Records())
}

// serveKeyAPI serves the key API and the audit API over f's store, as the
// suite does, and returns the tenants' base URL.
func (f *fixture) serveKeyAPI(t *testing.T) string {
	keys := identity.NewKeys(f.cfg)
	keys.Managed = f.store
	mux := http.NewServeMux()
	(&apikeys.API{Keys: keys, Store: f.store}).Register(mux)
	auditlog.NewAPI(keys, func(string) (*chstore.Store, error) { return f.st, nil }, nil, zerolog.Nop()).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/api/v1/tenants/"
}

// Every role on every key route, for its own tenant and a foreign one.
func TestAPIRoleMatrixAndKeyLifecycle(t *testing.T) {
	f := start(t)
	base := f.serveKeyAPI(t)

	// The matrix: only a tenant's own admin manages its keys.
	for _, caller := range []string{"acme-admin", "acme-viewer", "globex-admin", "compliance", "finance", "sre", ""} {
		for _, tenant := range []string{"acme", "globex"} {
			allowed := caller == tenant+"-admin"
			want := map[bool]int{true: 200, false: 403}[allowed]
			if caller == "" {
				want = 401
			}
			code, _ := identitytest.CallJSON(t, "GET", base+tenant+"/api-keys", caller, "")
			require.Equal(t, want, code, "%s lists %s", caller, tenant)
			wantCreate, wantRevoke := want, want
			if allowed {
				wantCreate, wantRevoke = 201, 404
			}
			code, body := identitytest.CallJSON(t, "POST", base+tenant+"/api-keys", caller, `{"name":"k-`+caller+`","role":"tenant-viewer"}`)
			require.Equal(t, wantCreate, code, "%s creates in %s: %v", caller, tenant, body)
			code, _ = identitytest.CallJSON(t, "DELETE", base+tenant+"/api-keys/key_0000", caller, "")
			require.Equal(t, wantRevoke, code, "%s revokes in %s", caller, tenant)
		}
	}

	code, body := identitytest.CallJSON(t, "POST", base+"acme/api-keys", "acme-admin", `{"name":"ci","role":"tenant-viewer"}`)
	require.Equal(t, 201, code)
	secret := body["key"].(string)
	id := body["data"].(map[string]any)["id"].(string)
	_, hasHash := body["data"].(map[string]any)["key_hash"]
	require.False(t, hasHash)
	// The new key reads its tenant's trail, not another's, and cannot manage keys.
	code, _ = identitytest.CallJSON(t, "GET", base+"acme/audit-events", secret, "")
	require.Equal(t, 200, code)
	code, _ = identitytest.CallJSON(t, "GET", base+"globex/audit-events", secret, "")
	require.Equal(t, 403, code)
	code, _ = identitytest.CallJSON(t, "GET", base+"acme/api-keys", secret, "")
	require.Equal(t, 403, code)
	// The listing never shows the key; the foreign admin cannot revoke it.
	code, body = identitytest.CallJSON(t, "GET", base+"acme/api-keys", "acme-admin", "")
	require.Equal(t, 200, code)
	require.NotContains(t, fmt.Sprint(body), secret)
	code, _ = identitytest.CallJSON(t, "DELETE", base+"globex/api-keys/"+id, "globex-admin", "")
	require.Equal(t, 404, code)
	code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+id, "acme-admin", "")
	require.Equal(t, 200, code)
	code, _ = identitytest.CallJSON(t, "GET", base+"acme/audit-events", secret, "")
	require.Equal(t, 401, code, "revoked at once")
	code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+id, "acme-admin", "")
	require.Equal(t, 409, code)

	// Bad bodies.
	for _, b := range []string{`{"name":"x","role":"tenant-viewer","extra":1}`, `not json`, `{"name":"","role":"tenant-viewer"}`, `{"name":"x","role":"compliance"}`} {
		code, body := identitytest.CallJSON(t, "POST", base+"acme/api-keys", "acme-admin", b)
		require.Equal(t, 400, code, b)
		require.NotEmpty(t, body["error"].(map[string]any)["correlation_id"])
	}
}

// Lineage: a key records who made it (a user, a configured key, or a key
// made at run time and then its id); revoking with cascade ends the keys a
// key minted, and theirs, each audited, and nothing else.
func TestKeyLineageAndCascadingRevocation(t *testing.T) {
	f := start(t)
	base := f.serveKeyAPI(t)
	mint := func(caller, tenant, name, role string) (id, secret string) {
		t.Helper()
		code, body := identitytest.CallJSON(t, "POST", base+tenant+"/api-keys", caller, `{"name":"`+name+`","role":"`+role+`"}`)
		require.Equal(t, 201, code, "%v", body)
		return body["data"].(map[string]any)["id"].(string), body["key"].(string)
	}
	works := func(secret, tenant string) bool {
		code, _ := identitytest.CallJSON(t, "GET", base+tenant+"/audit-events", secret, "")
		return code == 200
	}

	// acme-admin (configured) → a (admin) → b (admin) → d; a → c (viewer).
	a, aKey := mint("acme-admin", "acme", "a", "tenant-admin")
	b, bKey := mint(aKey, "acme", "b", "tenant-admin")
	c, cKey := mint(aKey, "acme", "c", "tenant-viewer")
	d, dKey := mint(bKey, "acme", "d", "tenant-viewer")
	g, gKey := mint("globex-admin", "globex", "g", "tenant-admin")
	byUser, userKey, err := f.store.Create(context.Background(), "acme", "by alice", config.RoleTenantViewer, by, "")
	require.NoError(t, err)

	code, body := identitytest.CallJSON(t, "GET", base+"acme/api-keys", "acme-admin", "")
	require.Equal(t, 200, code)
	lineage := map[string][3]string{}
	for _, k := range body["data"].([]any) {
		m := k.(map[string]any)
		parent, _ := m["parent_key_id"].(string)
		lineage[m["id"].(string)] = [3]string{m["created_by"].(string), m["created_by_type"].(string), parent}
	}
	require.Equal(t, map[string][3]string{
		a:         {"acme-admin", apikeys.CreatorConfiguredKey, ""},
		b:         {"a (" + a + ")", apikeys.CreatorKey, a},
		c:         {"a (" + a + ")", apikeys.CreatorKey, a},
		d:         {"b (" + b + ")", apikeys.CreatorKey, b},
		byUser.ID: {"alice", apikeys.CreatorUser, ""},
	}, lineage, "the list shows who created each key")

	// A key of another tenant is no parent here.
	_, _, err = f.store.Create(context.Background(), "acme", "x", config.RoleTenantViewer, auditlog.Actor{Type: "api_key", ID: "g"}, g)
	require.ErrorIs(t, err, apikeys.ErrInvalid)

	// Without cascade only the key itself ends.
	code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+c, "acme-admin", `{"cascade": false}`)
	require.Equal(t, 200, code)
	require.False(t, works(cKey, "acme"))
	require.True(t, works(aKey, "acme"))

	// Bad bodies are refused and revoke nothing.
	for _, bad := range []string{`{"cascade": "yes"}`, `{"cascade": true, "x": 1}`, `[`} {
		code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+a, "acme-admin", bad)
		require.Equal(t, 400, code, bad)
	}
	require.True(t, works(aKey, "acme"))

	before := len(f.audited.Records())
	code, body = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+a, "acme-admin", `{"cascade": true}`)
	require.Equal(t, 200, code, "%v", body)
	require.Equal(t, a, body["data"].(map[string]any)["id"])
	var minted []string
	for _, k := range body["minted_revoked"].([]any) {
		minted = append(minted, k.(map[string]any)["id"].(string))
	}
	require.Equal(t, []string{b, d}, minted, "b, then what b minted; c was already revoked")
	for _, k := range []string{aKey, bKey, cKey, dKey} {
		require.False(t, works(k, "acme"))
	}
	require.True(t, works(gKey, "globex"), "another tenant's key lives on")
	require.True(t, works(userKey, "acme"), "a key alice made is not a's")

	recs := f.audited.Records()[before:]
	require.Len(t, recs, 3, "one record per revoked key")
	require.Equal(t, a, recs[0].Target.ID)
	require.Equal(t, map[string]string{"role": "tenant-admin", "cascade": "true", "minted": "2"}, recs[0].Metadata)
	for i, id := range []string{b, d} {
		require.Equal(t, "api_key.revoked", recs[i+1].Action)
		require.Equal(t, id, recs[i+1].Target.ID)
		require.Equal(t, a, recs[i+1].Metadata["cascade_from"])
		require.Equal(t, "acme-admin", recs[i+1].Actor.ID)
		require.Equal(t, "acme", recs[i+1].TenantID)
	}

	// Nothing left: 409, with or without cascade.
	code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+a, "acme-admin", `{"cascade": true}`)
	require.Equal(t, 409, code)
	code, _ = identitytest.CallJSON(t, "DELETE", base+"acme/api-keys/"+a, "acme-admin", "")
	require.Equal(t, 409, code)
}
