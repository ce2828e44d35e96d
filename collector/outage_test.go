package collector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/retention"
)

// storeProxy stands between the collector and the engine: Stop makes the
// store unreachable (connections refused, open ones cut), Start brings it
// back on the same address. It speaks HTTP so that the engine sees its own
// name in the Host header.
type storeProxy struct {
	t      *testing.T
	target string
	addr   string
	srv    *http.Server
	done   chan struct{}
}

func newStoreProxy(t *testing.T, target string) *storeProxy {
	p := &storeProxy{t: t, target: target, addr: "127.0.0.1:0"}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

func (p *storeProxy) Start() {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err)
	p.addr = ln.Addr().String()
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(&url.URL{Scheme: "http", Host: p.target})
		r.Out.Host = p.target
	}}
	rp.ErrorLog = log.New(io.Discard, "", 0) // cut requests are the point
	p.srv = &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln) //nolint:errcheck // ends with Close
	}()
}

// Stop closes the listener and every open connection.
func (p *storeProxy) Stop() {
	if p.srv == nil {
		return
	}
	require.NoError(p.t, p.srv.Close())
	<-p.done
	p.srv = nil
}

// metricValue reads a counter or gauge without labels, or with the given
// tenant label; ok is false when it is not exported.
func metricValue(t *testing.T, reg *prometheus.Registry, name, tenant string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := tenant == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tenant {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestStoreOutageIsNamedAndRecoveredFrom: the store becomes unreachable for
// 8 s while a tenant publishes 200 events/s, with the placement reloaded and
// failing closed as the suite does (every 2 s, stale after 6 s). The outage
// has its own metrics and is never counted as a region move; the collector
// stops pulling instead of handing messages back thousands of times a
// second; once the store is back every event is stored, once, within
// seconds.
func TestStoreOutageIsNamedAndRecoveredFrom(t *testing.T) {
	eng := enginetest.Shared(t)
	proxy := newStoreProxy(t, eng.Addr)
	p := collectortest.Start(t, func(c *config.Config) {
		c.Regions[0].DSN = "http://" + eng.User + ":" + eng.Password + "@" + proxy.addr
	}, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The suite's placement: reloaded every 2 s from the platform store,
	// every write refused once it is 6 s old.
	p.Placement.FailClosedAfter(6 * time.Second)
	watch := make(chan error, 1)
	go func() {
		watch <- retention.New(p.Config, p.Placement, p.Stores, nil, p.JS, "", zerolog.Nop()).WatchPlacement(ctx, 2*time.Second)
	}()
	defer func() { cancel(); <-watch }()

	// Counts go to the engine directly, not through the proxy.
	direct, err := chstore.Open(ctx, chstore.Options{DSN: eng.URL(), Database: p.Config.Regions[0].Database, Name: "direct"})
	require.NoError(t, err)
	defer direct.Close()
	stored := func() uint64 {
		var n uint64
		require.NoError(t, direct.QueryRow(ctx, []any{&n}, "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'"))
		return n
	}

	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	var published atomic.Int64
	pubDone := make(chan error, 1)
	pubCtx, stopPub := context.WithCancel(ctx)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pubCtx.Done():
				pubDone <- nil
				return
			case <-tick.C:
			}
			m := nats.NewMsg("tenant.acme.orders.order_created")
			m.Header.Set("Tenant-Id", "acme")
			m.Data = []byte(fmt.Sprintf(`{"n":%d}`, published.Load()))
			if _, err := js.PublishMsg(ctx, m); err != nil {
				pubDone <- err
				return
			}
			published.Add(1)
		}
	}()
	value := func(name string) float64 {
		v, ok := metricValue(t, p.Registry, name, "")
		require.True(t, ok, "%s is exported", name)
		return v
	}

	require.Eventually(t, func() bool { return stored() >= 200 }, 30*time.Second, 50*time.Millisecond, "storing before the outage")
	require.Zero(t, value("tenantscope_collector_store_unavailable"))

	proxy.Stop()
	down := time.Now()
	require.Eventually(t, func() bool { return value("tenantscope_collector_store_unavailable") == 1 }, 10*time.Second, 20*time.Millisecond,
		"the outage is seen")
	t.Logf("outage seen after %v", time.Since(down).Round(time.Millisecond))
	time.Sleep(8*time.Second - time.Since(down)) // the outage lasts past the placement's 6 s
	redeliveredBefore, _ := metricValue(t, p.Registry, "tenantscope_collector_redelivered_total", "acme")
	naks := value("tenantscope_collector_store_outage_naks_total")
	proxy.Start()
	up := time.Now()
	waiting := uint64(published.Load())

	require.Eventually(t, func() bool { return stored() >= waiting }, 60*time.Second, 20*time.Millisecond,
		"the events published during the outage are stored")
	recovery := time.Since(up)
	stopPub()
	require.NoError(t, <-pubDone)
	require.Eventually(t, func() bool { return stored() == uint64(published.Load()) }, 30*time.Second, 50*time.Millisecond)

	moved, _ := metricValue(t, p.Registry, "tenantscope_collector_move_deferred_total", "")
	redelivered, _ := metricValue(t, p.Registry, "tenantscope_collector_redelivered_total", "acme")
	t.Logf("published %d (%d by the store's return); stored all %v after the store returned; outage naks %v, redelivered %v (%v before the return), counted as moves %v",
		published.Load(), waiting, recovery.Round(time.Millisecond), naks, redelivered, redeliveredBefore, moved)
	require.Zero(t, moved, "a store outage is not a region move")
	require.Equal(t, 1.0, value("tenantscope_collector_store_outages_total"))
	require.Zero(t, value("tenantscope_collector_store_unavailable"))
	require.Less(t, naks, 500.0, "no nak storm: pulling stops during the outage")
	// Each message comes back at most about once: usually a few dozen (the
	// naks of the outage), and on a loaded machine up to one batch more,
	// when the first insert after the return meets a pooled connection the
	// outage broke (that batch is redelivered whole, and stored once).
	require.LessOrEqual(t, redelivered, float64(published.Load())+naks, "each message comes back at most about once")
	require.Less(t, recovery, 10*time.Second, "writing resumes within seconds of the store's return")
	require.False(t, errors.Is(ctx.Err(), context.Canceled))
}
