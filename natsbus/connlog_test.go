package natsbus

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The suite's connection logs a disconnect once, and the reconnect with how
// long it was down; closing it on purpose logs nothing.
func TestConnectionLogsDisconnectsAndReconnects(t *testing.T) {
	cfg, _ := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg.NATS.Listen = ln.Addr().String()
	require.NoError(t, ln.Close())
	srv, err := Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(srv.user, srv.password), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	var out syncBuffer
	LogConnection(nc, zerolog.New(&out))

	srv.Shutdown()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"message":"nats: disconnected; reconnecting"`) },
		10*time.Second, 20*time.Millisecond, "the disconnect is logged")
	// The same credentials: the restarted server keeps the suite's user.
	cfg.NATS.User, cfg.NATS.Password = srv.user, srv.password
	srv, err = Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	defer srv.Shutdown()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"message":"nats: reconnected"`) },
		10*time.Second, 20*time.Millisecond, "the reconnect is logged")
	logged := out.String()
	t.Logf("logged:\n%s", logged)
	require.Contains(t, logged, `"down_for":"`)
	require.Equal(t, 1, strings.Count(logged, "disconnected"), "once per disconnect")
	require.NotContains(t, logged, srv.password, "no credentials in the log")

	nc.Close()
	require.Never(t, func() bool { return out.String() != logged }, 200*time.Millisecond, 20*time.Millisecond, "a close asked for is not reported")
}
