package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// trap is a TCP listener that counts the connections made to it.
type trap struct {
	ln    net.Listener
	calls atomic.Int64
}

func newTrap(t *testing.T) *trap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tr := &trap{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.calls.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return tr
}

// helpRun runs args in-process with every address of the configuration
// pointing at the trap, and returns what it printed.
func helpRun(t *testing.T, tr *trap, data string, args ...string) (string, error) {
	t.Helper()
	addr := tr.ln.Addr().String()
	env := map[string]string{
		"TENANTSCOPE_DATA":           data,
		"TENANTSCOPE_NATS_URL":       "nats://" + addr,
		"TENANTSCOPE_NATS_LISTEN":    addr,
		"TENANTSCOPE_CLICKHOUSE_DSN": "http://" + addr + "/db",
		"TENANTSCOPE_ENGINE_LISTEN":  addr,
		"TENANTSCOPE_HTTP":           addr,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		err := run(ctx, args, func(k string) string { return env[k] }, &out, &out)
		done <- result{err}
	}()
	select {
	case r := <-done:
		return out.String(), r.err
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatalf("%v did not return within 10s: it is running instead of printing help", args)
		return "", nil
	}
}

// Every command's and subcommand's -h prints its usage and returns: it
// connects to nothing, listens nowhere and writes no file.
func TestHelpNeverConnects(t *testing.T) {
	tr := newTrap(t)
	subs := map[string][]string{
		"bench":      {"engine", "ingest", "sdk", "otlp", "audit", "cost", "erase", "move"},
		"config":     {"validate", "show", "hash"},
		"deadletter": {"list", "show", "replay"},
		"export":     {"audit"},
		"migrate":    {"up", "status"},
		"nats":       {"setup", "creds"},
		"secrets":    {"init"},
		"report":     {"cost", "sla", "margin"},
		"period":     {"close", "adjust"},
		"slo":        {"rules"},
		"retention":  {"show", "set", "hold", "lift", "residency", "moves", "move"},
	}
	var cases [][]string
	for name := range commands() {
		for _, h := range []string{"-h", "--help"} {
			cases = append(cases, []string{name, h})
		}
		for _, sub := range subs[name] {
			cases = append(cases, []string{name, sub, "-h"})
		}
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			data := t.TempDir()
			out, err := helpRun(t, tr, data, args...)
			require.NoError(t, err, "help is not an error: %s", out)
			require.Contains(t, strings.ToLower(out), "usage", "prints its usage")
			require.Zero(t, tr.calls.Load(), "connected to the configured address")
			files, err := os.ReadDir(data)
			require.NoError(t, err)
			require.Empty(t, files, "wrote into the data directory")
		})
	}
}

// collector and ui list only the flags they use; serve lists the embedded
// servers' too; every --clickhouse-dsn help names both schemes.
func TestServerHelpListsOnlyItsFlags(t *testing.T) {
	tr := newTrap(t)
	help := func(cmd string) string {
		out, err := helpRun(t, tr, t.TempDir(), cmd, "-h")
		require.NoError(t, err)
		return out
	}
	lists := func(out, flag string) bool {
		return regexp.MustCompile(`(?m)^  -` + flag + `( |$)`).MatchString(out)
	}
	serveOnly := []string{"demo", "nats-listen", "engine-listen", "chdb-lib", "jetstream-budget"}
	serve := help("serve")
	for _, f := range append(serveOnly, "audit-writer", "nats-url", "clickhouse-dsn") {
		require.True(t, lists(serve, f), "serve -h lists --%s", f)
	}
	for _, cmd := range []string{"collector", "ui"} {
		out := help(cmd)
		for _, f := range serveOnly {
			require.False(t, lists(out, f), "%s -h lists --%s", cmd, f)
		}
		for _, f := range []string{"nats-url", "clickhouse-dsn", "config", "log-level", "data", "http"} {
			require.True(t, lists(out, f), "%s -h lists --%s", cmd, f)
		}
		require.Contains(t, out, "http(s)://", "--clickhouse-dsn names the HTTP interface")
		require.Contains(t, out, "clickhouse://")
	}
	require.True(t, lists(help("collector"), "audit-writer"))
	require.False(t, lists(help("ui"), "audit-writer"), "the ui writes no audit chain")
	require.True(t, lists(help("engine"), "log-level"))
}
