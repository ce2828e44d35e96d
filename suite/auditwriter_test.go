package suite_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A collector without an audit writer leaves audit records in the stream;
// while no process holds the writer's lease, /readyz says so instead of
// answering 200 while records bounce.
func TestReadinessSaysWhenNoAuditWriterHoldsTheLease(t *testing.T) {
	e := newEnv(t)
	e.start(t, "TENANTSCOPE_SUITE_COMPONENTS=collector")
	code, body := get(t, "http://"+e.httpAddr+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	js := e.tenantConn(t, "acme")
	m := nats.NewMsg("tenant.acme.billing._audit")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = []byte(`{"actor":{"type":"user","id":"u1"},"action":"invoice.updated","outcome":"success"}`)
	_, err := js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, body := get(t, "http://"+e.httpAddr+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no audit writer holds the lease")
	}, 30*time.Second, 200*time.Millisecond, "readiness reports the missing writer")
}
