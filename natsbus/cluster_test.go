package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// clusterNodeEnv, set to a nats-server configuration file, makes the test
// binary run that server instead of the tests. The cluster test's nodes are
// such child processes, so that a kill is a real SIGKILL: inside the test
// process, server.Shutdown first steps down every raft group the server
// leads, a graceful handover that a crash never gives.
const clusterNodeEnv = "TENANTSCOPE_TEST_NATS_NODE"

func TestMain(m *testing.M) {
	if conf := os.Getenv(clusterNodeEnv); conf != "" {
		os.Exit(runClusterNode(conf))
	}
	os.Exit(m.Run())
}

// runClusterNode runs one cluster node until it is killed, or until the
// test process is gone (its stdin closes).
func runClusterNode(conf string) int {
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster node: %v\n", err)
		return 2
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster node: %v\n", err)
		return 2
	}
	ns.ConfigureLogger()
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "cluster node: not ready after 30s")
		return 1
	}
	//nolint:errcheck // EOF or an error: the test process is gone either way
	_, _ = io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
	ns.WaitForShutdown()
	return 0
}

// clusterNode is one nats-server child process. Its ports stay the same
// across restarts, as a node's would behind a fixed address.
type clusterNode struct {
	name                  string
	dir                   string
	clientPort, routePort int
	cmd                   *exec.Cmd
	stdin                 io.Closer
	exited                chan struct{}
}

func (n *clusterNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

func (n *clusterNode) running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// natsCluster is three JetStream nodes, clustered over routes, in operator
// mode with the resolver configuration SetupAuth writes.
type natsCluster struct {
	nodes []*clusterNode
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		addr, ok := l.Addr().(*net.TCPAddr)
		require.True(t, ok)
		ports = append(ports, addr.Port)
	}
	return ports
}

func startCluster(t *testing.T, resolverConf []byte) *natsCluster {
	t.Helper()
	ports := freePorts(t, 6)
	c := &natsCluster{}
	for i := range 3 {
		n := &clusterNode{name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), clientPort: ports[2*i], routePort: ports[2*i+1]}
		require.NoError(t, os.WriteFile(filepath.Join(n.dir, "resolver.conf"), resolverConf, 0o600))
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.running() {
				c.kill(t, n)
			}
		}
		if t.Failed() {
			for _, n := range c.nodes {
				logTail(t, n)
			}
		}
	})
	for _, n := range c.nodes {
		c.start(t, n)
	}
	return c
}

func (c *natsCluster) urls() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, n.url())
	}
	return strings.Join(us, ",")
}

func (c *natsCluster) node(t *testing.T, name string) *clusterNode {
	t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	require.Failf(t, "no such node", "%q", name)
	return nil
}

// start writes the node's configuration (the deployment's resolver
// included, as deploy/nats.conf does) and starts it; it returns once the
// node accepts connections.
func (c *natsCluster) start(t *testing.T, n *clusterNode) {
	t.Helper()
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.routePort))
	}
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 1MB
jetstream {
  store_dir: %q
  max_file_store: 256MB
  max_memory_store: 32MB
}
cluster {
  name: tenantscope
  listen: 127.0.0.1:%d
  routes: [%s]
}
include ./resolver.conf
`, n.name, n.clientPort, filepath.Join(n.dir, "js"), n.routePort, strings.Join(routes, ", "))
	path := filepath.Join(n.dir, "nats.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	logf, err := os.OpenFile(filepath.Join(n.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clusterNodeEnv+"="+path)
	cmd.Stdout, cmd.Stderr = logf, logf
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	n.cmd, n.stdin, n.exited = cmd, stdin, make(chan struct{})
	go func(exited chan struct{}) {
		//nolint:errcheck // a killed node exits with an error; the log says why another one stopped
		_ = cmd.Wait()
		//nolint:errcheck // nothing more is written
		_ = logf.Close()
		close(exited)
	}(n.exited)
	require.Eventually(t, func() bool {
		if !n.running() {
			return true
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.clientPort), 200*time.Millisecond)
		if err != nil {
			return false
		}
		//nolint:errcheck // a probe
		_ = conn.Close()
		return true
	}, 30*time.Second, 50*time.Millisecond, "node %s accepts connections", n.name)
	require.True(t, n.running(), "node %s exited at start (see its log)", n.name)
}

// kill sends SIGKILL, as kill -9 does, and waits for the process to end.
func (c *natsCluster) kill(t *testing.T, n *clusterNode) {
	t.Helper()
	require.NoError(t, n.cmd.Process.Kill())
	<-n.exited
	//nolint:errcheck // the pipe's reader is gone
	_ = n.stdin.Close()
}

func logTail(t *testing.T, n *clusterNode) {
	raw, err := os.ReadFile(filepath.Join(n.dir, "server.log"))
	if err != nil {
		t.Logf("%s: no log: %v", n.name, err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	t.Logf("%s: last lines of its log:\n%s", n.name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
}

// clusterView asks the cluster who leads what.
type clusterView struct {
	nc  *nats.Conn // the suite's
	js  jetstream.JetStream
	sys *nats.Conn // the system account's, for the meta group
}

type leaders struct {
	meta, stream, consumer string
	// healthy: every group has a leader and two current followers.
	healthy bool
}

func currentPeers(ci *jetstream.ClusterInfo) int {
	if ci == nil {
		return 0
	}
	n := 0
	for _, p := range ci.Replicas {
		if p.Current && !p.Offline {
			n++
		}
	}
	return n
}

func (v clusterView) leaders(ctx context.Context, stream string) (leaders, error) {
	var l leaders
	msg, err := v.sys.RequestWithContext(ctx, "$SYS.REQ.SERVER.PING.JSZ", nil)
	if err != nil {
		return l, fmt.Errorf("jsz: %w", err)
	}
	var jsz struct {
		Data struct {
			Meta *jetstream.ClusterInfo `json:"meta_cluster"`
		} `json:"data"`
	}
	if err := json.Unmarshal(msg.Data, &jsz); err != nil {
		return l, fmt.Errorf("jsz: %w", err)
	}
	if jsz.Data.Meta != nil {
		l.meta = jsz.Data.Meta.Leader
	}
	st, err := v.js.Stream(ctx, stream)
	if err != nil {
		return l, err
	}
	si := st.CachedInfo()
	cons, err := st.Consumer(ctx, CollectorDurable)
	if err != nil {
		return l, err
	}
	ci := cons.CachedInfo()
	if si.Cluster != nil {
		l.stream = si.Cluster.Leader
	}
	if ci.Cluster != nil {
		l.consumer = ci.Cluster.Leader
	}
	l.healthy = l.meta != "" && l.stream != "" && l.consumer != "" &&
		currentPeers(jsz.Data.Meta) == 2 && currentPeers(si.Cluster) == 2 && currentPeers(ci.Cluster) == 2
	return l, nil
}

func (v clusterView) waitHealthy(t *testing.T, stream string) leaders {
	t.Helper()
	var l leaders
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		l, err = v.leaders(ctx, stream)
		return err == nil && l.healthy
	}, 30*time.Second, 100*time.Millisecond, "three nodes, a leader and two current followers for the meta group, %s and its consumer", stream)
	return l
}

// moveLeader asks the group's leader to step down in favour of to, until
// to leads (subject: the stream's or consumer's stepdown API).
func (v clusterView) moveLeader(t *testing.T, stream, subject, to string, leader func(leaders) string) {
	t.Helper()
	var asked time.Time
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		l, err := v.leaders(ctx, stream)
		if err != nil {
			return false
		}
		if leader(l) == to {
			return true
		}
		if time.Since(asked) > 3*time.Second {
			asked = time.Now()
			req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to)
			//nolint:errcheck // the next poll tells whether it moved; a refusal (election under way) is asked again
			_, _ = v.nc.RequestWithContext(ctx, subject, []byte(req))
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "%s leader moves to %s", subject, to)
}

// received is what the collector's consumer was handed: for each message id
// the stream sequences it was stored under, and how often each came.
type received struct {
	mu        sync.Mutex
	seqs      map[string]map[uint64]int
	total     int
	ackErrors int
	first     map[string]time.Time // each id's first delivery
	distinct  map[string]int       // ids delivered, by prefix (fault)
}

func (r *received) add(id string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seqs[id] == nil {
		r.seqs[id] = map[uint64]int{}
		r.first[id] = time.Now()
		if prefix, _, ok := strings.Cut(id, "-"); ok {
			r.distinct[prefix]++
		}
	}
	r.seqs[id][seq]++
	r.total++
}

func (r *received) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.distinct[prefix]
}

// endToEnd is the time from the kill to the first delivery of a message
// first sent after it: when new data reaches the collector again.
func (r *received) endToEnd(killedAt time.Time, p *published) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for j, id := range p.ids {
		if !p.firstSent[j].After(killedAt) {
			continue
		}
		if d, ok := r.first[id]; ok && (first.IsZero() || d.Before(first)) {
			first = d
		}
	}
	if first.IsZero() {
		return 0
	}
	return first.Sub(killedAt)
}

func (r *received) ackFailed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ackErrors++
}

func (r *received) has(ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if len(r.seqs[id]) == 0 {
			return false
		}
	}
	return true
}

// tally counts, for the ids with the prefix: how many arrived, how many
// were stored more than once (two stream sequences for one Nats-Msg-Id)
// and how many deliveries were redeliveries of the same stored message.
func (r *received) tally(prefix string, acked []string) (stored, lost, duplicated, redelivered, unacked int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, id := range acked {
		want[id] = true
		if len(r.seqs[id]) == 0 {
			lost++
		}
	}
	for id, seqs := range r.seqs {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		stored++
		if !want[id] {
			unacked++
		}
		if len(seqs) > 1 {
			duplicated++
		}
		for _, n := range seqs {
			redelivered += n - 1
		}
	}
	return stored, lost, duplicated, redelivered, unacked
}

// collect pulls the stream with the collectors' durable consumer, as the
// collector does (a Messages iterator, short pull expiry), and acks each
// message once recorded. It runs until the test ends.
func collect(t *testing.T, js jetstream.JetStream, stream string, r *received) {
	t.Helper()
	cons, err := js.Consumer(context.Background(), stream, CollectorDurable)
	require.NoError(t, err)
	it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullExpiry(3*time.Second))
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue // as the collector: heartbeats missed during a failover, then it pulls again
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			r.add(m.Headers().Get(nats.MsgIdHdr), md.Sequence.Stream)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if m.DoubleAck(ctx) != nil {
				r.ackFailed() // redelivered after the ack wait
			}
			cancel()
		}
	}()
	t.Cleanup(func() { it.Stop(); wg.Wait() })
}

// published is one publisher's run: every message acked once, retried with
// the same Nats-Msg-Id until then. For message j: ids[j], when its first
// attempt was sent (firstSent), when the attempt that was acked was sent
// (lastSent) and when the ack came (ackedAt).
type published struct {
	ids                          []string
	firstSent, lastSent, ackedAt []time.Time
	attempts                     int
	// dedupAcks: retries the stream answered as duplicates of a message it
	// had stored (the first attempt's ack was lost).
	dedupAcks int
	errs      map[string]int
}

func publishAll(ctx context.Context, js jetstream.JetStream, tenant, prefix string, n int, acked *atomic.Int64) (*published, error) {
	p := &published{errs: map[string]int{}}
	for i := range n {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		first := time.Now()
		for {
			p.attempts++
			sent := time.Now()
			m := nats.NewMsg("tenant." + tenant + ".orders.order_created")
			m.Header.Set(nats.MsgIdHdr, id)
			m.Data = fmt.Appendf(nil, `{"id":%q,"pad":%q}`, id, strings.Repeat("x", 200))
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := js.PublishMsg(actx, m)
			cancel()
			if err == nil {
				if ack.Duplicate {
					p.dedupAcks++
				}
				p.ids = append(p.ids, id)
				p.ackedAt = append(p.ackedAt, time.Now())
				p.firstSent = append(p.firstSent, first)
				p.lastSent = append(p.lastSent, sent)
				acked.Add(1)
				break
			}
			p.errs[err.Error()]++
			select {
			case <-ctx.Done():
				return p, fmt.Errorf("publish %s: %w (last error: %w)", id, ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return p, nil
}

// recovery is the time from the kill to the first ack of an attempt sent
// after it: when publishing works again. (An ack already on its way when
// the node died arrives after the kill but says nothing about recovery.)
func recovery(killedAt time.Time, p *published) time.Duration {
	var first time.Time
	for j, at := range p.ackedAt {
		if p.lastSent[j].After(killedAt) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	if first.IsZero() {
		return 0
	}
	return first.Sub(killedAt)
}

// faultRow is one line of the fault table.
type faultRow struct {
	fault, victim                                      string
	acked, stored, lost, duplicated, redelivered       int
	retries, dedupAcks                                 int
	recovery, longestGap, endToEnd, elected            time.Duration
	publisherOnVictim, collectorOnVictim, victimsRoles string
}

// TestClusterSurvivesKills: three nats-server processes clustered with
// JetStream, in operator mode with the deployment's accounts (SetupAuth),
// and the suite's streams at R3. acme publishes continuously with its own
// creds, acked by JetStream and retried with the same Nats-Msg-Id on any
// error; the collectors' durable consumer pulls and acks. During the
// publishing one node gets SIGKILL — the stream leader; a follower; the
// meta leader holding the consumer's leadership too — and is restarted.
// Every acknowledged message reaches the consumer (0 lost), none is stored
// twice (0 duplicated: one stream sequence per message id; redeliveries of
// the same stored message are counted apart), the stream drains, and the
// time from the kill to the next acked publish is measured.
func TestClusterSurvivesKills(t *testing.T) {
	const tenant = "acme"
	const perFault = 1500
	stream := IngestStream(tenant)

	cfg, _ := testConfig(t)
	cfg.NATS.Stream.Replicas = 3
	cfg.NATS.Stream.MaxBytes = 16 << 20
	cfg.NATS.Stream.DeadLetterMaxBytes = 16 << 20
	authDir := filepath.Join(t.TempDir(), "nats-auth")
	auth, err := SetupAuth(authDir, cfg)
	require.NoError(t, err)
	resolver, err := os.ReadFile(filepath.Join(authDir, "resolver.conf"))
	require.NoError(t, err)

	c := startCluster(t, resolver)

	connect := func(name string, creds []byte) *nats.Conn {
		path := filepath.Join(t.TempDir(), name+".creds")
		require.NoError(t, os.WriteFile(path, creds, 0o600))
		opt, err := CredsOption(path)
		require.NoError(t, err)
		nc, err := nats.Connect(c.urls(), opt, nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond), quiet())
		require.NoError(t, err, "%s signs in", name)
		t.Cleanup(nc.Close)
		return nc
	}
	suiteCreds, err := os.ReadFile(filepath.Join(authDir, "suite.creds"))
	require.NoError(t, err)
	suite := connect("suite", suiteCreds)
	sysCreds, err := auth.userCreds(auth.system, "sys", nil)
	require.NoError(t, err)
	view := clusterView{nc: suite, sys: connect("sys", sysCreds)}
	view.js, err = jetstream.New(suite)
	require.NoError(t, err)

	// The streams' owner ('migrate up' against a cluster) declares them at R3
	// once the meta group has a leader.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := view.js.AccountInfo(ctx)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "the meta group elects a leader")
	ctx := context.Background()
	require.NoError(t, EnsureStreams(ctx, view.js, cfg))
	for _, tn := range cfg.ChainTenants() {
		st, err := view.js.Stream(ctx, IngestStream(tn.ID))
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, "%s is R3", IngestStream(tn.ID))
	}
	view.waitHealthy(t, stream)

	tenantCreds, err := auth.TenantCreds(tenant, tenant+"-svc")
	require.NoError(t, err)
	pubConn := connect(tenant+"-svc", tenantCreds)
	pub, err := jetstream.New(pubConn)
	require.NoError(t, err)

	got := &received{seqs: map[string]map[uint64]int{}, first: map[string]time.Time{}, distinct: map[string]int{}}
	collect(t, view.js, stream, got)

	stepStream := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	stepConsumer := "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + CollectorDurable
	streamLeader := func(l leaders) string { return l.stream }
	consumerLeader := func(l leaders) string { return l.consumer }
	other := func(not ...string) string {
		for _, n := range c.nodes {
			if !slices.Contains(not, n.name) {
				return n.name
			}
		}
		return ""
	}

	faults := []struct {
		name string
		// arrange places the leaders and names the node to kill.
		arrange func(t *testing.T, l leaders) string
	}{
		{"stream leader", func(t *testing.T, l leaders) string {
			// A node that leads the stream only.
			victim := other(l.meta)
			view.moveLeader(t, stream, stepStream, victim, streamLeader)
			if l.consumer == victim {
				view.moveLeader(t, stream, stepConsumer, other(victim), consumerLeader)
			}
			return victim
		}},
		{"follower", func(t *testing.T, l leaders) string {
			// A node that leads nothing.
			victim := other(l.meta, l.stream)
			if l.consumer == victim {
				view.moveLeader(t, stream, stepConsumer, l.stream, consumerLeader)
			}
			return victim
		}},
		{"meta and consumer leader", func(t *testing.T, l leaders) string {
			victim := l.meta
			view.moveLeader(t, stream, stepConsumer, victim, consumerLeader)
			if l.stream == victim {
				view.moveLeader(t, stream, stepStream, other(victim), streamLeader)
			}
			return victim
		}},
	}
	var table []faultRow
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			victim := f.arrange(t, view.waitHealthy(t, stream))
			l := view.waitHealthy(t, stream)
			// The collector's pull requests follow a moved consumer leader
			// only after missed heartbeats: wait until messages flow again.
			wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer wcancel()
			var warm atomic.Int64
			_, err := publishAll(wctx, pub, tenant, fmt.Sprintf("w%d", i), 20, &warm)
			require.NoError(t, err)
			require.Eventually(t, func() bool { return got.count(fmt.Sprintf("w%d", i)) == 20 }, 30*time.Second, 10*time.Millisecond,
				"the collector's consumer receives before the fault")
			var roles []string
			for role, leader := range map[string]string{"meta": l.meta, "stream": l.stream, "consumer": l.consumer} {
				if leader == victim {
					roles = append(roles, role)
				}
			}
			slices.Sort(roles)
			row := faultRow{fault: f.name, victim: victim, victimsRoles: strings.Join(roles, "+"),
				publisherOnVictim: fmt.Sprint(pubConn.ConnectedServerName() == victim),
				collectorOnVictim: fmt.Sprint(suite.ConnectedServerName() == victim)}
			if row.victimsRoles == "" {
				row.victimsRoles = "follower"
			}

			pctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			var acked atomic.Int64
			var p *published
			var perr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				p, perr = publishAll(pctx, pub, tenant, fmt.Sprintf("f%d", i), perFault, &acked)
			}()
			defer func() { cancel(); <-done }()

			// Kill once publishing and consuming both flow.
			require.Eventually(t, func() bool {
				return acked.Load() >= perFault/3 && got.count(fmt.Sprintf("f%d", i)) >= perFault/4
			}, 20*time.Second, 5*time.Millisecond, "acme publishes and the collector's consumer receives")
			n := c.node(t, victim)
			killedAt := time.Now()
			c.kill(t, n)
			require.Less(t, acked.Load(), int64(2*perFault/3), "the kill comes while acme publishes")
			// The groups it led elect another leader.
			require.Eventually(t, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				l, err := view.leaders(ctx, stream)
				if err != nil {
					return false
				}
				for _, leader := range []string{l.meta, l.stream, l.consumer} {
					if leader == "" || leader == victim {
						return false
					}
				}
				return true
			}, 30*time.Second, 50*time.Millisecond, "new leaders after the kill of %s", victim)
			row.elected = time.Since(killedAt)
			require.Eventually(t, func() bool { return acked.Load() >= 2*perFault/3 }, 30*time.Second, 5*time.Millisecond,
				"two nodes of three keep taking acme's messages")
			c.start(t, n)
			<-done
			require.NoError(t, perr)
			require.Len(t, p.ids, perFault)

			row.recovery = recovery(killedAt, p)
			for j := 1; j < len(p.ackedAt); j++ {
				row.longestGap = max(row.longestGap, p.ackedAt[j].Sub(p.ackedAt[j-1]))
			}

			// Everything acked arrives and is acked by the consumer; the work
			// queue drains. Messages handed out by a dead consumer leader come
			// back after the ack wait (10 s).
			require.Eventually(t, func() bool {
				if !got.has(p.ids) {
					return false
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				cons, err := view.js.Consumer(ctx, stream, CollectorDurable)
				if err != nil {
					return false
				}
				st, err := view.js.Stream(ctx, stream)
				if err != nil {
					return false
				}
				ci := cons.CachedInfo()
				return ci.NumPending == 0 && ci.NumAckPending == 0 && st.CachedInfo().State.Msgs == 0
			}, 40*time.Second, 50*time.Millisecond, "every acked message reaches the collector's consumer and the stream drains")
			view.waitHealthy(t, stream)

			var unacked int
			row.acked = len(p.ids)
			row.stored, row.lost, row.duplicated, row.redelivered, unacked = got.tally(fmt.Sprintf("f%d-", i), p.ids)
			row.endToEnd = got.endToEnd(killedAt, p)
			row.retries, row.dedupAcks = p.attempts-perFault, p.dedupAcks
			t.Logf("kill -9 of %s (%s; publisher connected to it: %s, collector: %s): %d acked, %d stored, %d lost, %d duplicated, %d redelivered; new leaders seen after %v; "+
				"recovery (kill to the next ack once publishing works) %v, longest wait between acks %v; kill to the first delivery of a message first sent after it %v; %d publish retries (%d answered as duplicates): %v",
				victim, row.victimsRoles, row.publisherOnVictim, row.collectorOnVictim, row.acked, row.stored, row.lost, row.duplicated,
				row.redelivered, row.elected.Round(10*time.Millisecond), row.recovery.Round(100*time.Microsecond), row.longestGap.Round(100*time.Microsecond), row.endToEnd.Round(100*time.Microsecond), row.retries, row.dedupAcks, p.errs)
			require.Zero(t, row.lost, "acknowledged messages lost")
			require.Zero(t, row.duplicated, "messages stored twice")
			require.Zero(t, unacked, "messages stored that no publish acked")
			require.Equal(t, row.acked, row.stored)
			table = append(table, row)
		})
	}
	got.mu.Lock()
	ackErrors := got.ackErrors
	got.mu.Unlock()
	var b strings.Builder
	b.WriteString("fault | node (roles) | acknowledged | stored | lost | duplicated | redelivered | recovery (kill → publishing works) | longest wait between acks | kill → new data delivered\n")
	for _, r := range table {
		fmt.Fprintf(&b, "%s | %s (%s) | %d | %d | %d | %d | %d | %v | %v | %v\n", r.fault, r.victim, r.victimsRoles, r.acked, r.stored,
			r.lost, r.duplicated, r.redelivered, r.recovery.Round(100*time.Microsecond), r.longestGap.Round(100*time.Microsecond),
			r.endToEnd.Round(100*time.Microsecond))
	}
	t.Logf("fault table (%d consumer acks unconfirmed within 2 s):\n%s", ackErrors, b.String())
}
