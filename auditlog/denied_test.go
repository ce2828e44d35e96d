package auditlog_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/auditlog/audittest"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// A refused call is recorded in the caller's own chain (its tenant's, or the
// platform's for cross-tenant roles), never in the chain of the tenant it
// tried to reach: globex's viewers must not read acme's key, IP and agent.
func TestRefusedCallsGoToTheCallersChain(t *testing.T) {
	cfg := config.Default()
	for secret, k := range roleKeys {
		k.KeyHash = config.HashAPIKey(secret)
		cfg.APIKeys = append(cfg.APIKeys, k)
	}
	keys := identity.NewKeys(cfg)
	rec := &audittest.Recorder{}
	st := newChain(t, 0, 100).st
	stores := func(tenant string) (*chstore.Store, error) {
		switch tenant {
		case "acme", "globex", config.PlatformTenant:
			return st, nil
		}
		return nil, fmt.Errorf("no tenant %s", tenant)
	}
	mux := http.NewServeMux()
	// The route and check the cost API mounts.
	mux.HandleFunc("GET /api/v1/tenants/{tenantId}/cost", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := keys.Require(w, r, identity.ReadCost, auditlog.Denied(rec.Publish, stores, zerolog.Nop(), r, identity.ReadCost)); ok {
			w.WriteHeader(http.StatusOK)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for range 3 {
		code, _, _ := identitytest.Call(t, "GET", srv.URL+"/api/v1/tenants/globex/cost", "admin", "")
		require.Equal(t, http.StatusForbidden, code)
	}
	code, _, _ := identitytest.Call(t, "GET", srv.URL+"/api/v1/tenants/globex/cost", "sre", "")
	require.Equal(t, http.StatusForbidden, code)
	chains := map[string]int{}
	for _, r := range rec.Records() {
		require.Equal(t, "api.access_denied", r.Action)
		chains[r.TenantID]++
	}
	require.Equal(t, map[string]int{"acme": 3, config.PlatformTenant: 1}, chains, "nothing in globex's chain")
}
