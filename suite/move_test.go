package suite_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// A compliance officer moves a tenant to another region through the API
// while its services keep publishing: nothing is lost or left behind, the
// messages sent during the move land in the new region, and after a
// restart the tenant is still where it moved (the configuration still
// names the old region).
func TestRegionMoveUnderTrafficThroughTheAPI(t *testing.T) {
	e := newEnv(t)
	e.cfgYAML = strings.Replace(e.cfgYAML, "users:\n", `api_keys:
  - {name: officer, role: compliance, key_hash: "`+config.HashAPIKey("officer-key")+`"}
  - {name: books, role: finance, key_hash: "`+config.HashAPIKey("books-key")+`"}
  - {name: acme-admin, role: tenant-admin, tenant: acme, key_hash: "`+config.HashAPIKey("acme-key")+`"}
users:
`, 1)
	cmd := e.start(t)
	ctx := context.Background()
	js := e.tenantConn(t, "acme")
	var sent atomic.Int64
	send := func(n int) {
		for range n {
			i := int(sent.Add(1))
			require.NoError(t, publish(ctx, js, "acme", i))
		}
	}
	send(300)
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'") == 300
	}, 30*time.Second, 100*time.Millisecond)

	call := func(method, path, key, body string) (int, map[string]any) {
		return identitytest.CallJSON(t, method, "http://"+e.httpAddr+path, key, body)
	}
	const moves = "/api/v1/tenants/acme/region-moves"
	// Refused: other roles, bad input.
	for _, key := range []string{"books-key", "acme-key"} {
		status, _ := call("POST", moves, key, `{"to_region":"us","reason":"r"}`)
		require.Equal(t, http.StatusForbidden, status, key)
	}
	status, body := call("POST", moves, "officer-key", `{"to_region":"mars","reason":"r"}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"].(map[string]any)["message"], `unknown region "mars"`)
	status, _ = call("POST", moves, "officer-key", `{"to_region":"us","reason":"r","force":true}`)
	require.Equal(t, http.StatusBadRequest, status)
	status, _ = call("POST", "/api/v1/tenants/_platform/region-moves", "officer-key", `{"to_region":"us","reason":"r"}`)
	require.Equal(t, http.StatusBadRequest, status)

	// The move, while acme keeps publishing.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 30 {
			send(10)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	status, body = call("POST", moves, "officer-key", `{"to_region":"us","reason":"customer moved to the US"}`)
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, "copying", body["state"])
	var last map[string]any
	require.Eventually(t, func() bool {
		status, list := call("GET", moves, "acme-key", "")
		require.Equal(t, http.StatusOK, status)
		data := list["data"].([]any)
		last = data[0].(map[string]any)
		return last["state"] == "completed" || last["state"] == "failed"
	}, 60*time.Second, 100*time.Millisecond)
	require.Equal(t, "completed", last["state"], last["detail"])
	<-done
	total := uint64(sent.Load())
	require.EqualValues(t, 600, total)
	require.Eventually(t, func() bool {
		return e.count(t, "ts_us", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'") == total
	}, 60*time.Second, 100*time.Millisecond)
	require.Zero(t, e.count(t, "ts_eu", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	require.Zero(t, e.count(t, "ts_eu", "SELECT count() FROM audit_records WHERE tenant_id = 'acme'"))
	require.Eventually(t, func() bool {
		return e.count(t, "ts_us", "SELECT count() FROM audit_records WHERE tenant_id = 'acme' AND action = 'tenant.region_moved'") == 1
	}, 30*time.Second, 100*time.Millisecond)
	status, res := call("GET", "/api/v1/tenants/acme/residency", "officer-key", "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "us", res["pinned_region"])
	require.Equal(t, true, res["ok"])

	// After a restart acme still lives in us.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait())
	e.start(t)
	js = e.tenantConn(t, "acme")
	send(10)
	require.Eventually(t, func() bool {
		return e.count(t, "ts_us", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'") == total+10
	}, 30*time.Second, 100*time.Millisecond)
	require.Zero(t, e.count(t, "ts_eu", "SELECT count() FROM events WHERE tenant_id = 'acme'"))
}
