package sdk_test

import (
	"context"
	"strings"
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
	srv, js, b := pubtest.Streams(t, "acme")
	proxy := &pubtest.Proxy{Upstream: strings.TrimPrefix(srv.ClientURL(), "nats://")}
	proxy.ToLose.Store(1)
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
	require.Zero(t, proxy.ToLose.Load(), "the proxy lost no acknowledgement: the test proves nothing")
	published, failed, lastErr := pub.Stats()
	require.EqualValues(t, n, published)
	require.Zero(t, failed, "%v", lastErr)
	stored := storedEvents(ctx, t, js)
	require.Len(t, stored, n, "every event stored")
	for id, copies := range stored {
		require.Equal(t, 1, copies, "event %x stored %d times", id, copies)
	}
}

// A publisher handed another publisher's acknowledgement (another
// tenant's stream, when nats-server draws the same reply token for two
// publishes through the suite account's import) used to count its own
// message as stored, though that message's fate was unknown: here it never
// reached the stream. Now an acknowledgement from any stream but the
// tenant's own is a failed publish, published again.
func TestPublisherRepublishesWhenAnotherStreamAcknowledges(t *testing.T) {
	srv, js, b := pubtest.Streams(t, "acme")
	proxy := &pubtest.Proxy{Upstream: strings.TrimPrefix(srv.ClientURL(), "nats://")}
	proxy.ToForge.Store(1)
	url := proxy.Start(t)

	pub, err := sdk.New(sdk.Config{URL: url, Tenant: "acme", User: "acme-svc", Password: b.NATS["acme-svc"], AckWait: time.Second})
	require.NoError(t, err)
	const n = 20
	for i := range n {
		require.NoError(t, pub.Event(context.Background(), "billing", "invoice_created", map[string]any{"i": i}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, pub.Close(ctx))
	require.Zero(t, proxy.ToForge.Load(), "the proxy forged no acknowledgement: the test proves nothing")
	published, failed, lastErr := pub.Stats()
	require.EqualValues(t, n, published)
	require.Zero(t, failed, "%v", lastErr)
	stored := storedEvents(ctx, t, js)
	require.Len(t, stored, n, "every event stored, the one acknowledged by another stream too")
	for id, copies := range stored {
		require.Equal(t, 1, copies, "event %x stored %d times", id, copies)
	}
}
