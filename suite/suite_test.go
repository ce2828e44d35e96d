package suite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/suite"
)

// The suite boots the process's one engine, so every run happens in a child
// process (this test binary re-executed), which is also what SIGTERM needs.
func TestMain(m *testing.M) {
	if os.Getenv("TENANTSCOPE_SUITE_CHILD") != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func child() int {
	cfg, err := config.Parse([]byte(os.Getenv("TENANTSCOPE_SUITE_CONFIG")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	opts := suite.Options{Config: cfg, Components: suite.All, Log: log, Out: os.Stdout}
	if os.Getenv("TENANTSCOPE_SUITE_COMPONENTS") == "collector" {
		opts.Components = suite.Components{Collector: true}
	}
	opts.Components.Demo = os.Getenv("TENANTSCOPE_SUITE_DEMO") != ""
	if d, err := time.ParseDuration(os.Getenv("TENANTSCOPE_METERING_EVERY")); err == nil {
		suite.MeteringEvery = d
	}
	if trigger := os.Getenv("TENANTSCOPE_CRASH_AFTER_STORE"); trigger != "" {
		// Once the trigger file exists, die like a power cut at the next
		// batch: rows stored, messages not acked.
		opts.Collector.AfterStore = func() {
			if _, err := os.Stat(trigger); err == nil {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	if d, err := time.ParseDuration(os.Getenv("TENANTSCOPE_STORE_PAUSE")); err == nil {
		// A slow store: each batch waits d after it is stored, so batches
		// are in flight when the suite is stopped.
		opts.Collector.AfterStore = func() { time.Sleep(d) }
	}
	if check := os.Getenv("TENANTSCOPE_SUITE_LEFT_AFTER"); check != "" {
		return leftAfterRun(ctx, opts, check)
	}
	err = suite.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	return 0
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

type env struct {
	cfgYAML            string
	data               string
	httpAddr, natsAddr string
	engineAddr         string
	metricsAddr        string
}

func newEnv(t *testing.T) env {
	e := env{data: t.TempDir(), httpAddr: freePort(t), natsAddr: freePort(t), engineAddr: freePort(t), metricsAddr: freePort(t)}
	e.cfgYAML = fmt.Sprintf(`data: %s
http: {listen: "%s", metrics_listen: "%s"}
nats: {listen: "%s"}
clickhouse: {engine_listen: "%s"}
regions:
  - {name: eu, database: ts_eu}
  - {name: us, database: ts_us}
tenants:
  - {id: acme, name: Acme, region: eu, nats: {user: acme-svc}}
  - {id: globex, name: Globex, region: us, nats: {user: globex-svc}}
users:
  - {name: carol, role: compliance}
shutdown_timeout: 20s
`, e.data, e.httpAddr, e.metricsAddr, e.natsAddr, e.engineAddr)
	return e
}

// engineOptions connects to the suite's engine as its read-write user, with
// the password the suite generated at its first start.
func (e env) engineOptions(t *testing.T, db string) *clickhouse.Options {
	t.Helper()
	b, err := config.LoadBootstrap(e.data)
	require.NoError(t, err)
	pw := b.EnginePasswords[config.EngineUser]
	require.NotEmpty(t, pw, "the suite keeps its engine password in the bootstrap file")
	return &clickhouse.Options{Protocol: clickhouse.HTTP, Addr: []string{e.engineAddr},
		Auth: clickhouse.Auth{Database: db, Username: config.EngineUser, Password: pw}}
}

func (e env) engineDSN(t *testing.T) string {
	o := e.engineOptions(t, "")
	return "http://" + o.Auth.Username + ":" + o.Auth.Password + "@" + e.engineAddr
}

func (e env) start(t *testing.T, extraEnv ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "TENANTSCOPE_SUITE_CHILD=1", "TENANTSCOPE_SUITE_CONFIG="+e.cfgYAML), extraEnv...)
	cmd.Stdout = io.Discard
	logf, err := os.OpenFile(e.data+"/child.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	cmd.Stderr = logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(e.data + "/child.log")
			t.Logf("child log:\n%s", b)
		}
	})
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + e.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, 90*time.Second, 100*time.Millisecond, "suite did not become ready")
	return cmd
}

func (e env) tenantConn(t *testing.T, tenant string) jetstream.JetStream {
	b, err := config.LoadBootstrap(e.data)
	require.NoError(t, err)
	nc, err := nats.Connect("nats://"+e.natsAddr, nats.UserInfo(tenant+"-svc", b.NATS[tenant+"-svc"]), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func (e env) count(t *testing.T, db, query string) uint64 {
	conn, err := clickhouse.Open(e.engineOptions(t, db))
	require.NoError(t, err)
	defer conn.Close()
	var n uint64
	require.NoError(t, conn.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// metric reads one sample from the suite's /metrics.
func (e env) metric(t *testing.T, series string) float64 {
	res, err := http.Get("http://" + e.metricsAddr + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no series %s on /metrics", series)
	return 0
}

func publish(ctx context.Context, js jetstream.JetStream, tenant string, i int) error {
	m := nats.NewMsg(fmt.Sprintf("tenant.%s.orders.order_created", tenant))
	m.Header.Set("Tenant-Id", tenant)
	m.Header.Set(nats.MsgIdHdr, uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(tenant, i))).String())
	m.Header.Set("Correlation-Id", fmt.Sprintf("corr-%d", i))
	m.Data, _ = json.Marshal(map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "actor": "u1", "entity": fmt.Sprint("order-", i), "i": i})
	_, err := js.PublishMsg(ctx, m)
	return err
}

// TestSIGTERMDuringTrafficLosesNothing publishes while serve is stopped with
// SIGTERM, restarts it on the same data directory, and counts: every message
// JetStream acknowledged is stored exactly once, in its tenant's region only.
func TestSIGTERMDuringTrafficLosesNothing(t *testing.T) {
	e := newEnv(t)
	cmd := e.start(t)
	js := e.tenantConn(t, "acme")
	ctx := context.Background()

	var acked atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			// Retry the same message id until acknowledged: duplicates are
			// dropped by JetStream's window, so "acked" counts distinct messages.
			for {
				err := publish(pctx, js, "acme", i)
				if err == nil {
					acked.Add(1)
					break
				}
				select {
				case <-stop:
					cancel()
					return
				case <-time.After(50 * time.Millisecond):
				}
				if pctx.Err() != nil {
					cancel()
					pctx, cancel = context.WithTimeout(ctx, 2*time.Second)
				}
			}
			cancel()
		}
	}()
	require.Eventually(t, func() bool { return acked.Load() > 300 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	require.NoError(t, err, "serve exits cleanly on SIGTERM")
	time.Sleep(300 * time.Millisecond) // publishes fail while nothing listens
	close(stop)
	<-done
	n := acked.Load()
	t.Logf("%d messages acknowledged by JetStream across the shutdown", n)

	e.start(t) // restart on the same data directory
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'") == uint64(n)
	}, 60*time.Second, 200*time.Millisecond, "every acknowledged message is stored")
	require.Equal(t, uint64(n), e.count(t, "ts_eu", "SELECT uniqExact(event_id) FROM events WHERE tenant_id = 'acme'"))
	require.Zero(t, e.count(t, "ts_us", "SELECT count() FROM events"), "nothing in the other region")
}

// TestBadMessagesAreDeadLettered sends each kind of bad input and checks the
// dead-letter stream holds it with its reason while good traffic goes on.
func TestBadMessagesAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	ctx := context.Background()
	js := e.tenantConn(t, "globex")
	send := func(subject, tenantHdr string, body []byte) {
		m := nats.NewMsg(subject)
		if tenantHdr != "" {
			m.Header.Set("Tenant-Id", tenantHdr)
		}
		m.Data = body
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	send("tenant.globex.orders.created", "globex", []byte("{not json"))
	send("tenant.globex.orders.created", "globex", []byte("\xff\xfe"))
	send("tenant.globex.orders.created", "", []byte(`{"a":1}`))
	send("tenant.globex.orders.created", "acme", []byte(`{"a":1}`))
	send("tenant.globex.orders._weird", "globex", []byte(`{"a":1}`))
	send("tenant.globex.api._span", "globex", []byte(`{"trace_id":"xyz"}`))
	// A header flood.
	flood := nats.NewMsg("tenant.globex.orders.created")
	flood.Header.Set("Tenant-Id", "globex")
	for i := range 70 {
		flood.Header.Set(fmt.Sprintf("X-Flood-%d", i), "x")
	}
	flood.Data = []byte(`{"a":1}`)
	_, err := js.PublishMsg(ctx, flood)
	require.NoError(t, err)
	// Over the size limit: refused at publish with a clear error, nothing stored.
	big := nats.NewMsg("tenant.globex.orders.created")
	big.Header.Set("Tenant-Id", "globex")
	big.Data = []byte(`{"pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	_, err = js.PublishMsg(ctx, big)
	require.ErrorContains(t, err, "maximum payload exceeded")
	send("tenant.globex.orders.created", "globex", []byte(`{"ok":true}`))

	require.Eventually(t, func() bool {
		return e.count(t, "ts_us", "SELECT count() FROM events FINAL WHERE tenant_id = 'globex'") == 1
	}, 30*time.Second, 100*time.Millisecond)

	// Read the dead letters with the suite's view of the stream: the test
	// connects as a tenant, which may not, so count them through /metrics.
	want := map[string]bool{"invalid_json": true, "invalid_utf8": true, "missing_tenant_header": true, "tenant_mismatch": true, "unknown_reserved_action": true, "invalid_field": true, "too_many_headers": true}
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + e.metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		for reason := range want {
			if !strings.Contains(string(body), `tenantscope_collector_dead_letters_total{reason="`+reason+`"} 1`) {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "every bad message dead-lettered with its reason")

	// The dead letters keep the original subject, headers, body and reason.
	b, err := config.LoadBootstrap(e.data)
	require.NoError(t, err)
	admin, err := nats.Connect("nats://"+e.natsAddr, nats.UserInfo("tenantscope", b.NATS["tenantscope"]))
	require.NoError(t, err)
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	require.NoError(t, err)
	dls, err := collector.ListDeadLetters(ctx, ajs, collector.DeadLetterFilter{Tenant: "globex"})
	require.NoError(t, err)
	require.Len(t, dls, len(want))
	got := map[string]collector.DeadLetter{}
	for _, d := range dls {
		got[d.Reason] = d
	}
	for reason := range want {
		require.Contains(t, got, reason)
	}
	mismatch := got["tenant_mismatch"]
	require.Equal(t, "tenant.globex.orders.created", mismatch.Subject)
	require.Equal(t, "acme", mismatch.Header.Get("Tenant-Id"))
	require.Contains(t, mismatch.Detail, `"acme" does not match subject tenant "globex"`)
	require.Equal(t, "{not json", string(got["invalid_json"].Data))
	only, err := collector.ListDeadLetters(ctx, ajs, collector.DeadLetterFilter{Reason: "invalid_utf8"})
	require.NoError(t, err)
	require.Len(t, only, 1)

	// Replay re-validates: still bad, so it is dead-lettered again (once).
	require.NoError(t, collector.Replay(ctx, ajs, got["invalid_json"]))
	require.Eventually(t, func() bool {
		again, err := collector.ListDeadLetters(ctx, ajs, collector.DeadLetterFilter{Reason: "invalid_json"})
		return err == nil && len(again) == 1 && again[0].Seq != got["invalid_json"].Seq
	}, 30*time.Second, 100*time.Millisecond)
}

// TestSIGKILLMidBatchExactlyOnce publishes 20,000 messages to a collector
// that SIGKILLs itself right after its first batch is stored and before it is
// acked (the worst moment), restarts it, and checks that reads see every
// message exactly once although the first batch was inserted twice. The
// same with the events packed 100 to a message, as the SDK publishes them.
func TestSIGKILLMidBatchExactlyOnce(t *testing.T) {
	const n = 20000
	t.Run("one event a message", func(t *testing.T) {
		testSIGKILLMidBatch(t, n, func(i int) *nats.Msg {
			m := nats.NewMsg("tenant.acme.orders.order_created")
			m.Header.Set("Tenant-Id", "acme")
			m.Header.Set(nats.MsgIdHdr, uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("kill", i))).String())
			m.Data = []byte(fmt.Sprintf(`{"i":%d,"actor":"u"}`, i))
			return m
		})
	})
	t.Run("event batches", func(t *testing.T) {
		const per = 100
		testSIGKILLMidBatch(t, n/per, func(i int) *nats.Msg {
			m := nats.NewMsg("tenant.acme.orders." + wire.ActionEvents)
			m.Header.Set("Tenant-Id", "acme")
			m.Header.Set(nats.MsgIdHdr, uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("batch", i))).String())
			m.Header.Set(wire.BatchItemsHeader, fmt.Sprint(per))
			for j := range per {
				k := i*per + j
				m.Data = wire.AppendEvent(m.Data, wire.Event{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("kill", k))), Action: "order_created",
					Payload: []byte(fmt.Sprintf(`{"i":%d,"actor":"u","time":"2026-11-29T10:00:00Z"}`, k))})
			}
			return m
		})
	})
}

// testSIGKILLMidBatch publishes msgs messages made by msg (20,000 events
// in all) and checks each event is visible exactly once after the kill.
func testSIGKILLMidBatch(t *testing.T, msgs int, msg func(i int) *nats.Msg) {
	const n = 20000
	e := newEnv(t)
	// A quota of 2,000 events/s keeps the collector busy for ~10 s, so the
	// kill lands while it is working through the backlog.
	e.cfgYAML = strings.Replace(e.cfgYAML, "nats: {user: acme-svc}", "nats: {user: acme-svc}, quota: {events_per_second: 2000}", 1)
	trigger := e.data + "/crash-now"
	cmd := e.start(t, "TENANTSCOPE_CRASH_AFTER_STORE="+trigger)
	js := e.tenantConn(t, "acme")
	futures := make([]jetstream.PubAckFuture, 0, msgs)
	for i := range msgs {
		f, err := js.PublishMsgAsync(msg(i), jetstream.WithStallWait(time.Minute)) // a loaded CI machine acks slower than the default 200 ms stall
		require.NoError(t, err)
		futures = append(futures, f)
	}
	acked := 0
	for _, f := range futures {
		select {
		case <-f.Ok():
			acked++
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish ack timeout")
		}
	}
	require.Equal(t, msgs, acked)
	require.NoError(t, os.WriteFile(trigger, nil, 0o600))
	state, err := cmd.Process.Wait()
	require.NoError(t, err)
	require.Contains(t, state.String(), "killed", "the collector died by SIGKILL after storing a batch")

	e.start(t)
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM events FINAL") == n
	}, 90*time.Second, 200*time.Millisecond, "every message stored after the restart")
	redelivered := e.metric(t, `tenantscope_collector_redelivered_total{tenant="acme"}`)
	t.Logf("%d events in %d messages; %.0f messages redelivered after the kill, among them the batch stored but never acked; %d visible to reads", n, msgs, redelivered, n)
	require.Positive(t, redelivered, "the batch stored before the kill was delivered and inserted again")
	require.Equal(t, uint64(n), e.count(t, "ts_eu", "SELECT uniqExact(event_id) FROM events"))
	require.Equal(t, uint64(n), e.count(t, "ts_eu", "SELECT count() FROM events FINAL"), "0 lost, 0 duplicated")
}

// TestFloodingTenantDoesNotStarveAnother floods acme at 10x its quota while
// globex publishes one event every 50 ms: globex's publish-to-queryable
// latency stays within 2x its idle value, acme is slowed (throttled, its
// backlog grows) and, once its backlog limit is full, its publishers get a
// clear JetStream error, while globex's publishes keep succeeding.
func TestFloodingTenantDoesNotStarveAnother(t *testing.T) {
	e := newEnv(t)
	e.cfgYAML = strings.Replace(e.cfgYAML, "nats: {user: acme-svc}", "nats: {user: acme-svc}, quota: {events_per_second: 200, backlog_bytes: 262144}", 1)
	e.start(t)
	ctx := context.Background()
	acme := e.tenantConn(t, "acme")
	globex := e.tenantConn(t, "globex")
	conn, err := clickhouse.Open(e.engineOptions(t, "ts_us"))
	require.NoError(t, err)
	defer conn.Close()

	probe := func(i int) time.Duration {
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("probe", i)))
		m := nats.NewMsg("tenant.globex.orders.order_created")
		m.Header.Set("Tenant-Id", "globex")
		m.Header.Set(nats.MsgIdHdr, id.String())
		m.Data = []byte(`{"probe":true}`)
		start := time.Now()
		_, err := globex.PublishMsg(ctx, m)
		require.NoError(t, err, "the quiet tenant's publishes keep succeeding")
		for time.Since(start) < 30*time.Second {
			var n uint64
			require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id = 'globex' AND event_id = ?", id).Scan(&n))
			if n == 1 {
				return time.Since(start)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("probe event never became queryable")
		return 0
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	var idle []time.Duration
	for i := range 15 {
		idle = append(idle, probe(i))
		time.Sleep(50 * time.Millisecond)
	}

	// Flood: 2,000 events/s = 10x acme's quota of 200/s.
	var sent, rejected atomic.Int64
	var rejection atomic.Value
	stop := make(chan struct{})
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for j := range 2 {
				m := nats.NewMsg("tenant.acme.orders.order_created")
				m.Header.Set("Tenant-Id", "acme")
				m.Header.Set(nats.MsgIdHdr, uuid.NewString())
				m.Data = []byte(fmt.Sprintf(`{"flood":%d,"pad":"%0100d"}`, i*2+j, 0))
				if _, err := acme.PublishMsg(ctx, m); err != nil {
					rejected.Add(1)
					rejection.Store(err.Error())
				} else {
					sent.Add(1)
				}
			}
		}
	}()
	time.Sleep(time.Second)
	var busy []time.Duration
	for i := range 15 {
		busy = append(busy, probe(100+i))
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	<-flooding
	mi, mb := median(idle), median(busy)
	t.Logf("globex publish->queryable median: idle %v, while acme floods %v (%.2fx); acme sent %d, refused %d (%v); acme throttled %.0f times",
		mi, mb, float64(mb)/float64(mi), sent.Load(), rejected.Load(), rejection.Load(), e.metric(t, `tenantscope_collector_throttled_total{tenant="acme"}`))
	require.LessOrEqual(t, mb, 2*mi+20*time.Millisecond, "latency while another tenant floods stays within 2x idle")
	require.Positive(t, rejected.Load(), "beyond its backlog limit the flooding tenant's publishers are refused")
	require.Contains(t, fmt.Sprint(rejection.Load()), "maximum bytes")
	require.Positive(t, e.metric(t, `tenantscope_collector_throttled_total{tenant="acme"}`))
	// Slowed, not dropped: everything acme got acknowledged is stored, at its quota.
	require.Eventually(t, func() bool {
		return e.count(t, "ts_eu", "SELECT count() FROM events FINAL WHERE tenant_id = 'acme'") == uint64(sent.Load())
	}, 120*time.Second, 250*time.Millisecond)
}

// Users and configured API keys change only in the configuration: each start
// records what changed since the chains last saw it, in the platform chain
// and the tenant's own, once.
func TestConfiguredUserAndKeyChangesAreAudited(t *testing.T) {
	e := newEnv(t)
	base := e.cfgYAML
	e.cfgYAML = strings.Replace(base, "users:\n  - {name: carol, role: compliance}\n", `users:
  - {name: carol, role: compliance}
  - {name: alice, role: tenant-admin, tenant: acme}
api_keys:
  - {name: ci, role: tenant-viewer, tenant: acme, key_hash: "`+config.HashAPIKey("ci-key")+`"}
`, 1)
	platform := func(action string) uint64 {
		return e.count(t, "ts_eu", "SELECT count() FROM audit_records FINAL WHERE tenant_id = '_platform' AND action = '"+action+"'")
	}
	acme := func(action string) uint64 {
		return e.count(t, "ts_eu", "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme' AND action = '"+action+"'")
	}
	stop := func(cmd *exec.Cmd) {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait())
	}
	cmd := e.start(t)
	require.Eventually(t, func() bool { return platform("user.created") == 2 && platform("api_key.configured") == 1 }, 30*time.Second, 200*time.Millisecond)
	require.Eventually(t, func() bool { return acme("user.created") == 1 && acme("api_key.configured") == 1 }, 10*time.Second, 200*time.Millisecond)
	stop(cmd)

	// alice becomes a viewer, carol leaves, the key is rotated.
	e.cfgYAML = strings.Replace(base, "users:\n  - {name: carol, role: compliance}\n", `users:
  - {name: alice, role: tenant-viewer, tenant: acme}
api_keys:
  - {name: ci, role: tenant-viewer, tenant: acme, key_hash: "`+config.HashAPIKey("ci-key-2")+`"}
`, 1)
	cmd = e.start(t)
	require.Eventually(t, func() bool {
		return platform("user.changed") == 1 && platform("user.removed") == 1 && platform("api_key.changed") == 1
	}, 30*time.Second, 200*time.Millisecond)
	require.Eventually(t, func() bool { return acme("user.changed") == 1 && acme("api_key.changed") == 1 }, 10*time.Second, 200*time.Millisecond)
	var changes string
	conn, err := clickhouse.Open(e.engineOptions(t, "ts_eu"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT changes FROM audit_records FINAL WHERE tenant_id = 'acme' AND action = 'user.changed'").Scan(&changes))
	var diff struct {
		Before, After struct{ Role, Tenant string }
	}
	require.NoError(t, json.Unmarshal([]byte(changes), &diff))
	require.Equal(t, "tenant-admin", diff.Before.Role)
	require.Equal(t, "tenant-viewer", diff.After.Role)
	require.Equal(t, "acme", diff.After.Tenant)
	require.NotContains(t, changes, config.HashAPIKey("ci-key-2"), "no credential hash in the chain")
	total := func() uint64 {
		return e.count(t, "ts_eu", "SELECT count() FROM audit_records FINAL WHERE tenant_id = '_platform'")
	}
	before := total()
	stop(cmd)

	// Nothing changed: nothing more is recorded.
	cmd = e.start(t)
	time.Sleep(3 * time.Second)
	require.Equal(t, before, total())

	// The platform chain verifies.
	b, err := config.LoadBootstrap(e.data)
	require.NoError(t, err)
	st, err := chstore.Open(context.Background(), chstore.Options{DSN: e.engineDSN(t), Database: "ts_eu", Name: "t"})
	require.NoError(t, err)
	defer st.Close()
	rep, err := auditlog.Verify(context.Background(), st, config.PlatformTenant, 1, b.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.EqualValues(t, 6, rep.Records)
	stop(cmd)
}
