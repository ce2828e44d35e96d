package suite_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A backlog older than nats.stream.max_backlog_age makes /readyz answer 503
// (naming no tenant: the route is public) until the collector has drained it.
func TestReadinessSaysWhenTheBacklogIsTooOld(t *testing.T) {
	e := newEnv(t)
	e.cfgYAML = strings.Replace(e.cfgYAML, `nats: {listen: "`+e.natsAddr+`"}`, `nats: {listen: "`+e.natsAddr+`", stream: {max_backlog_age: 2s}}`, 1)
	e.cfgYAML = strings.Replace(e.cfgYAML, `region: eu, nats: {user: acme-svc}}`, `region: eu, nats: {user: acme-svc}, quota: {events_per_second: 5}}`, 1)
	require.Contains(t, e.cfgYAML, "max_backlog_age: 2s")
	require.Contains(t, e.cfgYAML, "events_per_second: 5")
	e.start(t)
	code, body := get(t, "http://"+e.httpAddr+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	// 60 events at 5/s: the last waits about 12 s.
	js := e.tenantConn(t, "acme")
	for i := range 60 {
		m := nats.NewMsg("tenant.acme.orders.order_created")
		m.Header.Set("Tenant-Id", "acme")
		m.Data = []byte(fmt.Sprintf(`{"n":%d}`, i))
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		code, body = get(t, "http://"+e.httpAddr+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "max_backlog_age")
	}, 20*time.Second, 200*time.Millisecond, "readiness reports the old backlog")
	t.Logf("while the backlog waits: %s", body)
	require.NotContains(t, body, "acme")
	require.Eventually(t, func() bool {
		code, body = get(t, "http://"+e.httpAddr+"/readyz")
		return code == http.StatusOK
	}, 40*time.Second, 200*time.Millisecond, "ready again once drained")
	require.Equal(t, uint64(60), e.count(t, "ts_eu", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'"))
}
