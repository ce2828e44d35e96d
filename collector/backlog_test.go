package collector_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
)

// gaugeOf reads a per-tenant gauge; ok is false when it is not exported.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name, tenant string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tenant {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestBacklogMetrics: acme's collector may take 5 events/s; 80 events wait
// (16 s, several of the collector's 2 s metrics passes even on a loaded
// machine).
// The metrics tell the stream's size, the consumer lag (pending plus
// ack-pending, with the ack-pending part on its own) and the age of the
// oldest waiting message apart; once drained all are 0, and the acked
// messages have left the stream.
func TestBacklogMetrics(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) { c.Tenants[0].Quota.EventsPerSecond = 5 }, "acme")
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	for i := range 80 {
		publishAcmeOrder(t, js, fmt.Appendf(nil, `{"n":%d}`, i))
	}
	// Before the collector's first metrics pass (later on a loaded
	// machine) a gauge may not be exported yet: NaN fails every comparison
	// below, so the polls simply go on.
	read := func(name string) float64 {
		v, ok := gaugeOf(t, p.Registry, name, "acme")
		if !ok {
			return math.NaN()
		}
		return v
	}
	var seen string
	require.Eventually(t, func() bool {
		stream, lag := read("tenantscope_ingest_stream_messages"), read("tenantscope_ingest_backlog_messages")
		ackPending, oldest := read("tenantscope_ingest_backlog_ack_pending_messages"), read("tenantscope_ingest_backlog_oldest_seconds")
		seen = fmt.Sprintf("stream %v msgs, lag %v (ack pending %v), oldest %.1fs, fill %.4f", stream, lag, ackPending, oldest, read("tenantscope_ingest_backlog_fill_ratio"))
		return lag > ackPending && ackPending > 0 && oldest >= 1 && stream >= lag
	}, 30*time.Second, 100*time.Millisecond, "a waiting backlog shows")
	t.Logf("while the backlog waits: %s", seen)
	require.Eventually(t, func() bool {
		return read("tenantscope_ingest_stream_messages") == 0 && read("tenantscope_ingest_backlog_messages") == 0 &&
			read("tenantscope_ingest_backlog_oldest_seconds") == 0 && read("tenantscope_ingest_backlog_fill_ratio") == 0
	}, 60*time.Second, 100*time.Millisecond, "drained: stored messages leave the stream")
	require.Equal(t, uint64(80), p.Count(t, "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'"))
}
