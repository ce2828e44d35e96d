package suite_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
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

// TestStopStoresTheAuditRecordsItHolds stops the suite while audit records
// arrive and its store is slow, so batches of them are in flight: the
// collector stores them before the audit writer's lease is let go. Before,
// the lease went with everything else and the last batch failed with "this
// process does not hold the audit writer's lease", an error on every clean
// stop with audit traffic (the records waited for the next writer).
func TestStopStoresTheAuditRecordsItHolds(t *testing.T) {
	e := newEnv(t)
	cmd := e.start(t, "TENANTSCOPE_STORE_PAUSE=300ms")
	js := e.tenantConn(t, "acme")
	ctx := context.Background()
	// Records keep coming until the suite is stopped: the batch it is
	// filling then holds some, and the store worker is busy with the last.
	stopped := make(chan struct{})
	published := make(chan int)
	go func() {
		n := 0
		defer func() { published <- n }()
		for i := 0; ; i++ {
			select {
			case <-stopped:
				return
			default:
			}
			m := nats.NewMsg("tenant.acme.billing._audit")
			m.Header.Set("Tenant-Id", "acme")
			m.Data = fmt.Appendf(nil, `{"actor":{"type":"user","id":"u%d"},"action":"invoice.updated","outcome":"success"}`, i)
			if _, err := js.PublishMsg(ctx, m); err == nil {
				n++
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "the suite exits cleanly on SIGTERM")
	close(stopped)
	require.Positive(t, <-published)
	log, err := os.ReadFile(e.data + "/child.log")
	require.NoError(t, err)
	require.Contains(t, string(log), "audit writer lease taken", "this process was the audit writer")
	require.NotContains(t, string(log), "does not hold the audit writer's lease", "a batch of audit records in flight at the stop was refused")
}
