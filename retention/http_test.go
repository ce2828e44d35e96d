package retention_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/retention"
)

// Every retention route as every role, for its own tenant and a foreign one.
func TestAPIRoleMatrix(t *testing.T) {
	f := start(t)
	f.seed(t, "acme", "zoe", 3, 1)
	f.seed(t, "globex", "zoe", 3, 1)
	cfg := f.p.Config
	for _, k := range []config.APIKey{
		{Name: "compliance", Role: config.RoleCompliance}, {Name: "finance", Role: config.RoleFinance}, {Name: "sre", Role: config.RoleSRE},
		{Name: "acme-admin", Role: config.RoleTenantAdmin, Tenant: "acme"}, {Name: "acme-viewer", Role: config.RoleTenantViewer, Tenant: "acme"},
	} {
		k.KeyHash = config.HashAPIKey(k.Name)
		cfg.APIKeys = append(cfg.APIKeys, k)
	}
	mux := http.NewServeMux()
	(&retention.API{Keys: identity.NewKeys(cfg), Service: f.svc}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	call := func(method, path, key, body string) (int, string) {
		status, b, _ := identitytest.Call(t, method, srv.URL+path, key, body)
		return status, string(b)
	}
	reads := []string{"retention", "purge-runs", "residency"}
	manages := []struct{ method, path, body string }{
		{"GET", "holds", ""}, {"GET", "erasures", ""},
		{"PUT", "retention/events", `{"days": 60, "reason": "x"}`},
		{"POST", "holds", `{"kind": "subject", "subject": "zoe", "reason": "x"}`},
		{"POST", "holds/hold_none/lift", `{"reason": "x"}`},
		{"POST", "erasures", `{"subject": "zoe", "dry_run": true}`},
		{"POST", "purge", ""},
	}
	for _, caller := range []string{"compliance", "finance", "sre", "acme-admin", "acme-viewer"} {
		for _, tenant := range []string{"acme", "globex"} {
			for _, r := range reads {
				code, _ := call("GET", "/api/v1/tenants/"+tenant+"/"+r, caller, "")
				allowed := caller == "compliance" || caller == "acme-admin" && tenant == "acme"
				require.Equal(t, map[bool]int{true: 200, false: 403}[allowed], code, "%s reads %s of %s", caller, r, tenant)
			}
			for _, m := range manages {
				code, body := call(m.method, "/api/v1/tenants/"+tenant+"/"+m.path, caller, m.body)
				if caller != "compliance" {
					require.Equal(t, 403, code, "%s %s %s of %s", caller, m.method, m.path, tenant)
					continue
				}
				require.Contains(t, []int{200, 201, 404, 409}, code, "%s %s of %s: %s", m.method, m.path, tenant, body)
			}
		}
	}
	// Bad input, refused with the error body.
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "retention/audit_records", `{"days": 30, "reason": "x"}`},
		{"PUT", "retention/events", `{"days": 30}`},
		{"PUT", "retention/events", `{"days": 30, "reason": "x", "extra": 1}`},
		{"POST", "holds", `{"kind": "subject", "subject": "zoe"}`},
		{"POST", "holds", `{"kind": "forever", "reason": "x"}`},
		{"POST", "erasures", `{"subject": ""}`},
	} {
		code, body := call(c.method, "/api/v1/tenants/acme/"+c.path, "compliance", c.body)
		require.Equal(t, 400, code, "%s %s", c.path, c.body)
		require.True(t, strings.Contains(body, "correlation_id"), body)
	}
	code, _ := call("POST", "/api/v1/tenants/acme/erasures", "compliance", `{"subject": "nobody-at-all"}`)
	require.Equal(t, 404, code)
	// The subject hold placed above blocks an erasure: 409 with the conflict.
	code, body := call("POST", "/api/v1/tenants/acme/erasures", "compliance", `{"subject": "zoe"}`)
	require.Equal(t, 409, code, body)
	require.Contains(t, body, "blocked_by_hold")
}
