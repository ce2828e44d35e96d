package natsbus

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

// spy is one tenant's service user subscribed to every pattern an attacker
// would try, counting what arrives that is not an ack of its own publishes.
type spy struct {
	tenant  string
	mu      sync.Mutex
	foreign map[string]int // pattern -> messages of someone else
	samples []string
	own     map[string]int // pattern -> acks of its own publishes
}

var spyPatterns = []string{">", "_INBOX.>", "tenant.>", "$JS.>", "$SYS.>", "deadletter.>", "$JS.EVENT.>", "_R_.>"}

func (s *spy) watch(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for _, p := range spyPatterns {
		p := p
		_, err := nc.Subscribe(p, func(m *nats.Msg) {
			if strings.Contains(string(m.Data), `"stream":"`+IngestStream(s.tenant)+`"`) && strings.HasPrefix(m.Subject, "_INBOX.") {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.own[p]++
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.foreign[p]++
			if len(s.samples) < 5 {
				s.samples = append(s.samples, fmt.Sprintf("%s on %s: %.80s", p, m.Subject, m.Data))
			}
		})
		require.NoError(t, err)
	}
}

// TestTenantsObserveNothingOfEachOtherOrOfTheSuite runs both tenants'
// traffic, with the suite's pull consumer delivering on its inboxes and a
// dead letter, while each tenant's service user (password and nkey) listens
// on every pattern. Nothing foreign may arrive.
func TestTenantsObserveNothingOfEachOtherOrOfTheSuite(t *testing.T) {
	cfg, pw := testConfig(t)
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	defer srv.Shutdown()
	suite, err := srv.Connect("suite")
	require.NoError(t, err)
	defer suite.Close()
	b, err := config.LoadBootstrap(cfg.Data)
	require.NoError(t, err)

	conns := map[string][]*nats.Conn{}
	for _, tenant := range []string{"acme", "globex"} {
		byPassword, err := nats.Connect(srv.ClientURL(), nats.UserInfo(tenant+"-svc", pw[tenant+"-svc"]), quiet())
		require.NoError(t, err)
		defer byPassword.Close()
		seed, ok := b.NATSNkeySeeds[tenant]
		require.True(t, ok, "an nkey seed for %s", tenant)
		byNkey, err := nats.Connect(srv.ClientURL(), nkeyOption(t, seed), quiet())
		require.NoError(t, err, "the tenant's nkey signs in")
		defer byNkey.Close()
		conns[tenant] = []*nats.Conn{byPassword, byNkey}
	}
	assertIsolated(t, cfg, suite, conns)
}

func quiet() nats.Option { return nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}) }

// assertIsolated runs every tenant's traffic on each of its connections,
// with the suite pulling and acking (deliveries on its inboxes), a dead
// letter, and a tenant publishing on the suite's own subject, while every
// connection listens on every pattern. Nothing foreign may arrive.
func assertIsolated(t *testing.T, cfg config.Config, suite *nats.Conn, conns map[string][]*nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(suite)
	require.NoError(t, err)
	require.NoError(t, EnsureStreams(ctx, js, cfg))
	spies := map[string]*spy{}
	for tenant, cs := range conns {
		s := &spy{tenant: tenant, foreign: map[string]int{}, own: map[string]int{}}
		for _, nc := range cs {
			s.watch(t, nc)
			require.NoError(t, nc.Flush())
		}
		spies[tenant] = s
	}

	// The suite pulls and acks, so deliveries travel on its inboxes.
	var pulled atomic.Int64
	for tenant := range conns {
		cons, err := js.Consumer(ctx, IngestStream(tenant), CollectorDurable)
		require.NoError(t, err)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			pulled.Add(1)
			_ = m.Ack() //nolint:errcheck // a lost ack is redelivered; the count only needs progress
		})
		require.NoError(t, err)
		defer cc.Stop()
	}
	_, err = js.Publish(ctx, DeadLetterPrefix+".globex.bad_json", []byte(`globex dead letter`))
	require.NoError(t, err)

	const each = 200
	var wg sync.WaitGroup
	for tenant, cs := range conns {
		for i, nc := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tjs, err := jetstream.New(nc)
				if err != nil {
					t.Error(err)
					return
				}
				for n := range each {
					subj := fmt.Sprintf("tenant.%s.billing.invoice_created", tenant)
					if _, err := tjs.Publish(ctx, subj, []byte(fmt.Sprintf(`{"tenant":%q,"n":%d,"conn":%d}`, tenant, n, i))); err != nil {
						t.Errorf("%s publishes its own subject: %v", tenant, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	total := 0
	for _, cs := range conns {
		total += len(cs) * each
	}
	require.Eventually(t, func() bool { return pulled.Load() >= int64(total) }, 30*time.Second, 50*time.Millisecond, "the suite pulled everything")
	for _, cs := range conns {
		for _, nc := range cs {
			require.NoError(t, nc.Flush())
		}
	}
	for tenant, cs := range conns {
		// The suite's own audit subject under the tenant's token is closed.
		tjs, err := jetstream.New(cs[0])
		require.NoError(t, err)
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		_, err = tjs.Publish(tctx, SuiteSubjects(tenant)[:len(SuiteSubjects(tenant))-1]+"_audit", []byte(`{"actor":{"type":"system"}}`))
		tcancel()
		require.Error(t, err, "%s publishes on the suite's own subject", tenant)
	}
	for tenant, s := range spies {
		s.mu.Lock()
		t.Logf("%s: acks of its own publishes by pattern: %v; foreign by pattern: %v", tenant, s.own, s.foreign)
		total := 0
		for _, n := range s.foreign {
			total += n
		}
		require.Zero(t, total, "%s observed foreign traffic: %v", tenant, s.samples)
		// A tenant's n connections share its account, so each sees all of
		// the tenant's n×each acks.
		n := len(conns[tenant])
		require.Equal(t, map[string]int{"_INBOX.>": n * n * each}, s.own, "%s sees its own publish acks, on its inboxes only", tenant)
		s.mu.Unlock()
	}
	// A tenant account has no JetStream API of its own or of the suite.
	for _, nc := range conns["acme"] {
		ajs, err := jetstream.New(nc)
		require.NoError(t, err)
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		_, err = ajs.Stream(tctx, IngestStream("acme"))
		tcancel()
		require.Error(t, err)
	}
}

func nkeyOption(t *testing.T, seed string) nats.Option {
	t.Helper()
	opt, err := NkeyOption([]byte(seed))
	require.NoError(t, err)
	return opt
}
