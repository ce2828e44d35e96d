package suite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/suite"
)

// leftAfterRun runs the suite in the child until it fails ("error") or
// until it is up and then stopped ("stop"), and reports on stderr the
// goroutines of tenantscope code still running a while after Run returned
// (exit 3), or none (exit 0).
func leftAfterRun(ctx context.Context, opts suite.Options, how string) int {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if how == "stop" {
		opts.Ready = func(*suite.Suite) { stop() }
	}
	err := suite.Run(ctx, opts)
	fmt.Fprintln(os.Stderr, "suite:", err)
	if (err != nil) != (how == "error") {
		return 1
	}
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = ours()
		if len(left) == 0 {
			fmt.Fprintln(os.Stderr, "goroutines left: 0")
			return 0
		}
		if time.Now().After(deadline) {
			break
		}
	}
	fmt.Fprintf(os.Stderr, "goroutines left: %d\n\n%s\n", len(left), strings.Join(left, "\n\n"))
	return 3
}

// ours lists the stacks of the other goroutines that run, or were started
// by, tenantscope code.
func ours() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 { // this goroutine
			continue
		}
		if bytes.Contains(g, []byte("github.com/tenantscope/tenantscope/")) {
			out = append(out, string(g))
		}
	}
	return out
}

// Every goroutine suite.Run starts is stopped and waited for before it
// returns: when it fails after its components started (here the metrics
// listener's address is taken, found after the collector, the audit
// writer, the placement watch, the retention scheduler and the HTTP
// listener are up), and when it is stopped. Before: after the early error
// 10 goroutines of tenantscope code kept running against closed stores and
// a drained NATS connection (collector.(*Service).Run with its pulls and
// backlog watch, the placement watch, the retention scheduler, the policy
// cache, the audit lease and checkpoints).
func TestRunWaitsForItsGoroutines(t *testing.T) {
	for _, how := range []string{"error", "stop"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			if how == "error" {
				taken, err := net.Listen("tcp", e.metricsAddr)
				require.NoError(t, err)
				defer taken.Close()
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "TENANTSCOPE_SUITE_CHILD=1", "TENANTSCOPE_SUITE_CONFIG="+e.cfgYAML, "TENANTSCOPE_SUITE_LEFT_AFTER="+how)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			require.NoError(t, cmd.Start())
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(3 * time.Minute):
				_ = cmd.Process.Kill() //nolint:errcheck // failing anyway
				<-done
				t.Fatalf("the suite did not return:\n%s", tail(stderr.String()))
			}
			out := stderr.String()
			if how == "error" {
				require.Contains(t, out, "suite: metrics listener", "the suite failed where the test expects:\n%s", tail(out))
			} else {
				require.Contains(t, out, "suite: <nil>", "the suite stopped cleanly:\n%s", tail(out))
			}
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Fatalf("exit %d: goroutines of tenantscope code outlived suite.Run:\n%s", exit.ExitCode(), tail(out))
			}
			require.NoError(t, err)
			require.Contains(t, out, "goroutines left: 0")
		})
	}
}

func tail(s string) string {
	if len(s) > 20000 {
		return "…" + s[len(s)-20000:]
	}
	return s
}
