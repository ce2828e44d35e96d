package sdk_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/internal/pubtest"
	"github.com/tenantscope/tenantscope/sdk"
)

// A JetStream acknowledgement lost on its way back (the message is stored)
// used to leave the publish pending for ever: Flush and Close waited until
// their context ended and the publisher never learnt the event's fate. Now
// the publish fails after AckWait and is published again under the same
// Nats-Msg-Id: the stream keeps one copy and the publisher counts it as
// published.
func TestPublisherRepublishesWhenTheAckIsLost(t *testing.T) {
	publishThroughProxy(t, func(p *pubtest.Proxy) *atomic.Int64 { return &p.ToLose })
}

// A publisher handed another publisher's acknowledgement (another
// tenant's stream, when nats-server draws the same reply token for two
// publishes through the suite account's import) used to count its own
// message as stored, though that message's fate was unknown: here it never
// reached the stream. Now an acknowledgement from any stream but the
// tenant's own is a failed publish, published again.
func TestPublisherRepublishesWhenAnotherStreamAcknowledges(t *testing.T) {
	publishThroughProxy(t, func(p *pubtest.Proxy) *atomic.Int64 { return &p.ToForge })
}

// publishThroughProxy publishes 20 of acme's events through a proxy that
// plays one trick on an acknowledgement (the counter trick picks), and
// checks that the trick was played, that Close returned, and that every
// event is stored once and counted as published.
func publishThroughProxy(t *testing.T, trick func(*pubtest.Proxy) *atomic.Int64) {
	srv, js, b := pubtest.Streams(t, "acme")
	proxy := &pubtest.Proxy{Upstream: strings.TrimPrefix(srv.ClientURL(), "nats://")}
	trick(proxy).Store(1)
	url := proxy.Start(t)

	pub, err := sdk.New(sdk.Config{URL: url, Tenant: "acme", User: "acme-svc", Password: b.NATS["acme-svc"], AckWait: time.Second})
	require.NoError(t, err)
	const n = 20
	for i := range n {
		require.NoError(t, pub.Event(context.Background(), "billing", "invoice_created", map[string]any{"i": i}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, pub.Close(ctx), "Close waits for an acknowledgement that never comes")
	require.Zero(t, trick(proxy).Load(), "the proxy played no trick: the test proves nothing")
	requireStoredOnce(ctx, t, pub, js, n)
}
