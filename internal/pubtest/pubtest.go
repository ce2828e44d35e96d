// Package pubtest tests publishers against a real NATS server: Streams
// starts an embedded server with tenants' ingest streams, and Proxy stands
// in front of it to lose or forge JetStream publish acknowledgements, as a
// network or nats-server under load may.
package pubtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
)

// Server starts an embedded NATS server, until the test ends, with the
// tenants' accounts (service user "{tenant}-svc") and no streams yet, and
// returns it, its configuration and the bootstrap credentials.
func Server(t testing.TB, tenants ...string) (*natsbus.Server, config.Config, *config.Bootstrap) {
	t.Helper()
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Tenants = nil
	for _, id := range tenants {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, Region: "default", NATS: config.Credentials{User: id + "-svc"}})
	}
	_, err := config.EnsureSecrets(&cfg)
	require.NoError(t, err)
	b, err := config.LoadBootstrap(cfg.Data)
	require.NoError(t, err)
	srv, err := natsbus.Embedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv, cfg, b
}

// Suite connects to srv as the suite, until the test ends, and returns its
// JetStream.
func Suite(t testing.TB, srv *natsbus.Server) jetstream.JetStream {
	t.Helper()
	suite, err := srv.Connect("suite")
	require.NoError(t, err)
	t.Cleanup(suite.Close)
	js, err := jetstream.New(suite)
	require.NoError(t, err)
	return js
}

// Streams is Server with the tenants' ingest streams created; it returns
// the suite's JetStream instead of the configuration.
func Streams(t testing.TB, tenants ...string) (*natsbus.Server, jetstream.JetStream, *config.Bootstrap) {
	t.Helper()
	srv, cfg, b := Server(t, tenants...)
	js := Suite(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, natsbus.EnsureStreams(ctx, js, cfg))
	return srv, js, b
}

// Proxy is a loopback proxy in front of a NATS server that plays what a
// network or a busy server may do to JetStream's publish acknowledgements:
// it drops the first ToLose acknowledgements the server sends to a
// client's _INBOX, and it keeps the first ToForge publishes on tenant
// subjects from the server (the message is not stored) and answers each
// with another stream's acknowledgement, as nats-server does when two
// replies through the suite account's import draw the same token.
type Proxy struct {
	// Upstream is the server's host:port.
	Upstream string
	// ToLose and ToForge count down the acknowledgements still to lose and
	// the publishes still to answer with another stream's acknowledgement.
	ToLose, ToForge atomic.Int64
	mu              sync.Mutex // the client's side of the connection
	inbox, sid      string     // the client's _INBOX wildcard subscription
}

// Start listens on a free loopback port, until the test ends, and
// returns the URL clients connect to.
func (l *Proxy) Start(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() }) //nolint:errcheck // test teardown
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", l.Upstream)
			if err != nil {
				_ = c.Close() //nolint:errcheck // the client sees the failure
				continue
			}
			go func() { l.fromClient(s, c); _ = s.Close() }() //nolint:errcheck // ends with the connection
			go func() { l.fromServer(c, s); _ = c.Close() }() //nolint:errcheck // as above
		}
	}()
	return "nats://" + ln.Addr().String()
}

// frames reads the protocol frame by frame: a control line, and for the
// kinds that carry one (its last field the size) the payload after it.
func frames(r io.Reader, carries func(kind string) bool, each func(f []string, line string, payload []byte) error) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		var payload []byte
		if len(f) >= 3 && carries(f[0]) {
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			payload = make([]byte, size+2)
			if _, err := io.ReadFull(br, payload); err != nil {
				return
			}
		}
		if each(f, line, payload) != nil {
			return
		}
	}
}

// fromServer relays the server's frames to the client, but for the
// acknowledgements it is to lose.
func (l *Proxy) fromServer(client io.Writer, server io.Reader) {
	frames(server, func(k string) bool { return k == "MSG" || k == "HMSG" }, func(f []string, line string, payload []byte) error {
		if len(f) >= 4 && strings.HasPrefix(f[1], "_INBOX.") && take(&l.ToLose) {
			return nil
		}
		return l.toClient(client, line, payload)
	})
}

// fromClient relays the client's frames to the server, but for the
// publishes it answers with a forged acknowledgement.
func (l *Proxy) fromClient(server, client io.ReadWriter) {
	frames(client, func(k string) bool { return k == "PUB" || k == "HPUB" }, func(f []string, line string, payload []byte) error {
		if len(f) >= 3 && f[0] == "SUB" && strings.HasPrefix(f[1], "_INBOX.") {
			l.mu.Lock()
			l.inbox, l.sid = strings.TrimSuffix(f[1], "*"), f[len(f)-1]
			l.mu.Unlock()
		}
		// PUB <subject> <reply> <size> / HPUB <subject> <reply> <header size> <size>
		if (f[0] == "PUB" && len(f) == 4 || f[0] == "HPUB" && len(f) == 5) && strings.HasPrefix(f[1], "tenant.") && take(&l.ToForge) {
			l.mu.Lock()
			sid := l.sid
			l.mu.Unlock()
			ack := `{"stream":"INGEST_other","seq":7}`
			return l.toClient(client, fmt.Sprintf("MSG %s %s %d\r\n", f[2], sid, len(ack)), []byte(ack+"\r\n"))
		}
		if _, err := io.WriteString(server, line); err != nil {
			return err
		}
		_, err := server.Write(payload)
		return err
	})
}

func (l *Proxy) toClient(client io.Writer, line string, payload []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := io.WriteString(client, line); err != nil {
		return err
	}
	_, err := client.Write(payload)
	return err
}

// take counts one down from n, if it is not 0 yet.
func take(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}
