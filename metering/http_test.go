package metering_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/metering"
)

// Every metering route as every role, for its own tenant and a foreign one.
func TestAPIRoleMatrix(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	require.NoError(t, metering.EnsureMeters(ctx, f.st, f.cfg.Metering.Meters, zerolog.Nop()))
	f.events(t, "acme", 100, oct, 20)
	f.events(t, "globex", 100, oct, 5)
	f.spans(t, "acme", 100, 0, oct)
	roles := map[string]config.APIKey{
		"compliance": {Role: config.RoleCompliance}, "finance": {Role: config.RoleFinance}, "sre": {Role: config.RoleSRE},
		"acme-admin": {Role: config.RoleTenantAdmin, Tenant: "acme"}, "acme-viewer": {Role: config.RoleTenantViewer, Tenant: "acme"},
	}
	for k, v := range roles {
		v.Name, v.KeyHash = k, config.HashAPIKey(k)
		f.cfg.APIKeys = append(f.cfg.APIKeys, v)
	}
	var audited []auditlog.Record
	mux := http.NewServeMux()
	(&metering.API{Keys: identity.NewKeys(f.cfg), Service: f.svc, Audit: func(_ context.Context, tenant, _ string, body []byte) error {
		var r auditlog.Record
		require.NoError(t, json.Unmarshal(body, &r))
		require.Equal(t, tenant, r.TenantID)
		audited = append(audited, r)
		return nil
	}}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	call := func(method, path, key, body string) (int, string) {
		status, b, _ := identitytest.Call(t, method, srv.URL+path, key, body)
		return status, string(b)
	}
	own := func(roles ...string) func(caller, tenant string) bool {
		return func(caller, tenant string) bool {
			for _, r := range roles {
				if caller == r || (r == "own-admin" && caller == tenant+"-admin") || (r == "own-viewer" && caller == tenant+"-viewer") {
					return true
				}
			}
			return false
		}
	}
	routes := []struct {
		path  string
		allow func(caller, tenant string) bool
	}{
		{"/api/v1/cost?period=2026-10", own("finance")},
		{"/api/v1/margin?period=2026-10", own("finance")},
		{"/api/v1/sla?period=2026-10", own("finance", "sre")},
		{"/api/v1/tenants/{t}/cost?period=2026-10", own("finance", "own-admin")},
		{"/api/v1/tenants/{t}/usage?period=2026-10", own("finance", "own-admin")},
		{"/api/v1/tenants/{t}/sla?period=2026-10", own("finance", "sre", "own-admin", "own-viewer")},
	}
	for caller := range roles {
		for _, tenant := range []string{"acme", "globex"} {
			for _, rt := range routes {
				path := strings.ReplaceAll(rt.path, "{t}", tenant)
				code, body := call("GET", path, caller, "")
				want := map[bool]int{true: 200, false: 403}[rt.allow(caller, tenant)]
				require.Equal(t, want, code, "%s GET %s: %s", caller, path, body)
				if code == 200 && strings.Contains(path, "/tenants/") {
					other := map[string]string{"acme": "globex", "globex": "acme"}[tenant]
					require.NotContains(t, body, `"`+other+`"`, "%s reading %s sees nothing of %s", caller, tenant, other)
				}
			}
			code, _ := call("POST", "/api/v1/tenants/"+tenant+"/cost/adjustments", caller, `{"period":"2026-10","amount":-1,"reason":"x"}`)
			if caller != "finance" {
				require.Equal(t, 403, code, "%s adjusts %s", caller, tenant)
			}
		}
		if caller != "finance" {
			code, _ := call("POST", "/api/v1/cost/periods/2026-10/close", caller, "")
			require.Equal(t, 403, code, "%s closes", caller)
		}
	}
	code, _ := call("GET", "/api/v1/cost", "", "")
	require.Equal(t, 401, code)

	// Bad input.
	for _, q := range []string{"period=2027-05", "period=garbage", "period=2026-10&format=xml"} {
		code, body := call("GET", "/api/v1/cost?"+q, "finance", "")
		require.Equal(t, 400, code, q)
		require.Contains(t, body, "correlation_id")
	}
	code, _ = call("POST", "/api/v1/tenants/acme/cost/adjustments", "finance", `{"period":"2026-10","amount":-1,"reason":"x"}`)
	require.Equal(t, 409, code, "an open period takes no adjustments")
	code, body := call("POST", "/api/v1/cost/periods/2026-11/close", "finance", "")
	require.Equal(t, 400, code, "a period that has not ended: %s", body)

	// Close, then adjust, then the CSV shows both; closing again conflicts.
	code, _ = call("POST", "/api/v1/cost/periods/2026-10/close", "finance", "")
	require.Equal(t, 200, code)
	code, _ = call("POST", "/api/v1/cost/periods/2026-10/close", "finance", "")
	require.Equal(t, 409, code)
	for _, b := range []string{`{"period":"2026-10","amount":-1}`, `{"period":"2026-10","amount":-1,"reason":"x","x":1}`, `{"period":"2026-10","amount":0,"reason":"x"}`} {
		code, _ = call("POST", "/api/v1/tenants/acme/cost/adjustments", "finance", b)
		require.Equal(t, 400, code, b)
	}
	code, _ = call("POST", "/api/v1/tenants/acme/cost/adjustments", "finance", `{"period":"2026-10","amount":-2.5,"reason":"incident 42"}`)
	require.Equal(t, 201, code)
	code, body = call("GET", "/api/v1/tenants/acme/cost?period=2026-10&format=csv", "acme-admin", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, "adjustment")
	require.Contains(t, body, "incident 42")
	require.NotContains(t, body, "globex")
	require.True(t, strings.HasPrefix(body, "period,tenant,kind,meter,quantity"), body)

	var actions []string
	for _, r := range audited {
		actions = append(actions, r.TenantID+":"+r.Action)
	}
	require.Contains(t, actions, config.PlatformTenant+":cost.period_closed")
	require.Contains(t, actions, config.PlatformTenant+":cost.adjusted")
	require.Contains(t, actions, "acme:cost.adjusted")
	require.Contains(t, actions, "acme:api.access_denied", "refused tenant reads are audited in the tenant's chain")
}

// requestMux serves a tenant API route and a UI route that authenticate
// with keys (the UI's session check notes its principal the same way).
func requestMux(keys *identity.Keys) *http.ServeMux {
	mux := http.NewServeMux()
	h := func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := keys.Require(w, r, identity.ReadAudit, nil); ok {
			w.WriteHeader(http.StatusOK)
		}
	}
	mux.HandleFunc("GET /api/v1/tenants/{tenantId}/audit-events", h)
	mux.HandleFunc("GET /ui/tenants/{tenantId}/audit", h)
	mux.HandleFunc("GET /api/v1/tenants/{tenantId}/broken", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := keys.Require(w, r, identity.ReadAudit, nil); ok {
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	})
	return mux
}

func withKeys(cfg config.Config, keys map[string]config.APIKey) config.Config {
	cfg.APIKeys = nil
	for k, v := range keys {
		v.Name, v.KeyHash = k, config.HashAPIKey(k)
		cfg.APIKeys = append(cfg.APIKeys, v)
	}
	return cfg
}

func TestRequestsAreCountedPerTenant(t *testing.T) {
	f := start(t)
	// A tenant whose id is also a path segment ("ui") is counted under its
	// own route group too.
	cfg := f.cfg
	cfg.Tenants = append(append([]config.Tenant(nil), cfg.Tenants...), config.Tenant{ID: "ui", Region: "default"})
	cfg = withKeys(cfg, map[string]config.APIKey{"acme-key": {Role: config.RoleTenantAdmin, Tenant: "acme"},
		"globex-key": {Role: config.RoleTenantAdmin, Tenant: "globex"}, "ui-key": {Role: config.RoleTenantAdmin, Tenant: "ui"}})
	svc := metering.New(cfg, f.place, map[string]*chstore.Store{"default": f.st}, nil, zerolog.Nop())
	q := metering.NewRequests(svc)
	srv := httptest.NewServer(q.Middleware(requestMux(identity.NewKeys(cfg))))
	t.Cleanup(srv.Close)
	for _, c := range []struct{ path, key string }{{"/api/v1/tenants/acme/audit-events", "acme-key"}, {"/api/v1/tenants/acme/audit-events", "acme-key"},
		{"/ui/tenants/acme/audit", "acme-key"}, {"/api/v1/tenants/globex/audit-events", "globex-key"}, {"/api/v1/tenants/nobody/audit-events", "acme-key"},
		{"/healthz", "acme-key"}, {"/ui/tenants/ui/audit", "ui-key"}} {
		identitytest.Call(t, "GET", srv.URL+c.path, c.key, "")
	}
	require.NoError(t, q.Flush(context.Background()))
	usage, err := svc.UsageByTenant(context.Background(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 2, usage["acme"]["api_requests"].IntPart())
	require.EqualValues(t, 1, usage["acme"]["ui_requests"].IntPart())
	require.EqualValues(t, 1, usage["globex"]["api_requests"].IntPart())
	var groups []string
	require.NoError(t, f.st.QueryRow(context.Background(), []any{&groups}, "SELECT arraySort(groupUniqArray(toString(service))) FROM usage_hourly WHERE signal IN ('api_requests', 'ui_requests')"))
	require.Equal(t, []string{"audit", "audit-events"}, groups, "requests are grouped by the route after the tenant")
	require.EqualValues(t, 1, usage["ui"]["ui_requests"].IntPart())
}

// Only served, authenticated calls are billed, to the caller's tenant:
// anonymous calls (401), refused ones (403), failures (5xx) and calls by
// cross-tenant roles (compliance, finance, sre) are not on a tenant's bill.
func TestAnonymousAndRefusedCallsAreNotBilled(t *testing.T) {
	f := start(t)
	cfg := withKeys(f.cfg, map[string]config.APIKey{"acme-key": {Role: config.RoleTenantAdmin, Tenant: "acme"},
		"globex-key": {Role: config.RoleTenantAdmin, Tenant: "globex"}, "compliance-key": {Role: config.RoleCompliance}})
	svc := metering.New(cfg, f.place, map[string]*chstore.Store{"default": f.st}, nil, zerolog.Nop())
	q := metering.NewRequests(svc)
	srv := httptest.NewServer(q.Middleware(requestMux(identity.NewKeys(cfg))))
	t.Cleanup(srv.Close)
	for range 200 {
		status, _, _ := identitytest.Call(t, "GET", srv.URL+"/api/v1/tenants/acme/audit-events", "", "")
		require.Equal(t, 401, status)
	}
	for _, c := range []struct {
		path, key string
		status    int
	}{
		{"/api/v1/tenants/acme/audit-events", "acme-key", 200},
		{"/api/v1/tenants/acme/audit-events", "acme-key", 200},
		{"/api/v1/tenants/acme/audit-events", "acme-key", 200},
		{"/api/v1/tenants/acme/audit-events", "globex-key", 403},
		{"/api/v1/tenants/acme/audit-events", "compliance-key", 200},
		{"/api/v1/tenants/acme/broken", "acme-key", 500},
		{"/api/v1/tenants/globex/audit-events", "globex-key", 200},
	} {
		status, _, _ := identitytest.Call(t, "GET", srv.URL+c.path, c.key, "")
		require.Equal(t, c.status, status, "%s %s", c.key, c.path)
	}
	require.NoError(t, q.Flush(context.Background()))
	usage, err := svc.UsageByTenant(context.Background(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 3, usage["acme"]["api_requests"].IntPart(), "acme pays for its own three served calls, not for 200 anonymous ones, globex's refused one or compliance's")
	require.EqualValues(t, 1, usage["globex"]["api_requests"].IntPart())
}
