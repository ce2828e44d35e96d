package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// serveProcess is the suite as its users run it: 'tenantscope serve' in a
// child process (embedded NATS and engine, the collector, the OTLP
// receiver, the UI and the periodic jobs), so that its CPU and memory are
// its own, read from /proc as the Collector's are.
type serveProcess struct {
	*childProcess
	url     string         // the HTTP listener: the OTLP receiver
	metrics string         // the metrics listener
	nats    string         // its NATS listener, for the tenants' services
	data    string         // its data directory (bootstrap.json: the tenants' NATS passwords)
	st      *chstore.Store // its engine, as the read-only user
}

// serveOptions is how a benchmark runs serve: which binary, with which
// engine library, under which directory; CPUProfile, when set, is where
// serve writes a CPU profile of its run; Env is added to its environment
// (e.g. GOMEMLIMIT).
type serveOptions struct {
	Dir, LibPath, Binary, CPUProfile string
	Env                              []string
}

// serveYAML is the configuration of the benchmark's serve: one region,
// tenants and API keys, quotas out of the way, every listener on a free
// loopback port.
func serveYAML(data, httpAddr, metricsAddr, natsAddr, engineAddr, readerPassword string, tenants []string, keyHash string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "data: %q\nhttp: {listen: %q, metrics_listen: %q, metrics_pprof: true}\n", data, httpAddr, metricsAddr)
	fmt.Fprintf(&b, "nats:\n  listen: %q\n  jetstream_budget: 8GB\n  stream: {max_bytes: %d}\n", natsAddr, 512<<20)
	fmt.Fprintf(&b, "clickhouse: {engine_listen: %q, reader_password: %q}\n", engineAddr, readerPassword)
	b.WriteString("quotas: {events_per_second: 10000000, bytes_per_second: 10000000000}\n")
	b.WriteString("regions: [{name: bench, database: bench}]\ntenants:\n")
	for _, t := range tenants {
		fmt.Fprintf(&b, "  - {id: %s, name: %s, region: bench, nats: {user: %s-svc}}\n", t, t, t)
	}
	fmt.Fprintf(&b, "api_keys: [{name: %s-otlp, role: tenant-admin, tenant: %s, key_hash: %q}]\n", tenants[0], tenants[0], keyHash)
	return b.String()
}

// startServe runs cfg.Binary's serve with a fresh data directory under
// cfg.Dir and waits until it is ready.
func startServe(ctx context.Context, cfg serveOptions, tenants []string, key string) (*serveProcess, error) {
	dir := cfg.Dir
	addrs := make([]string, 4)
	for i := range addrs {
		a, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	httpAddr, metricsAddr, natsAddr, engineAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	reader := hex.EncodeToString(pw)
	conf := filepath.Join(dir, "serve.yaml")
	data := filepath.Join(dir, "serve")
	if err := config.WriteSecretFile(conf, []byte(serveYAML(data, httpAddr, metricsAddr, natsAddr, engineAddr, reader, tenants, config.HashAPIKey(key)))); err != nil {
		return nil, err
	}
	args := []string{"serve", "--config", conf, "--log-level", "warn"}
	if cfg.LibPath != "" {
		args = append(args, "--chdb-lib", cfg.LibPath)
	}
	if cfg.CPUProfile != "" {
		args = append(args, "--cpuprofile", cfg.CPUProfile)
	}
	child, err := startChild(ctx, "serve", cfg.Binary, args, cfg.Env, filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	p := &serveProcess{childProcess: child, url: "http://" + httpAddr, metrics: "http://" + metricsAddr, nats: "nats://" + natsAddr, data: data}
	if err := p.waitReady(ctx, 2*time.Minute); err != nil {
		p.stop()
		return nil, err
	}
	if p.st, err = chstore.Open(ctx, chstore.Options{DSN: "http://reader:" + reader + "@" + engineAddr, Database: "bench", Name: "bench", MaxOpenConns: 2}); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// startServeIdle starts serve as startServe does and waits until it is
// idle; it answers serve's RSS then and how many messages its collector
// had taken, for a benchmark to measure from.
func startServeIdle(ctx context.Context, cfg serveOptions, tenants []string, key string) (srv *serveProcess, rssMiB float64, messages uint64, err error) {
	if srv, err = startServe(ctx, cfg, tenants, key); err != nil {
		return nil, 0, 0, err
	}
	if rssMiB, err = procRSSMiB(srv.pid); err == nil {
		if _, messages, err = srv.collectorStages(); err == nil {
			err = waitIdle(ctx, srv.pid)
		}
	}
	if err != nil {
		srv.close()
		return nil, 0, 0, err
	}
	return srv, rssMiB, messages, nil
}

// waitReady waits until serve's /readyz answers 200.
func (p *serveProcess) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		res, err := http.Get(p.url + "/readyz")
		if err == nil {
			_ = res.Body.Close() //nolint:errcheck // only the status is read
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serve was not ready within %v%s", limit, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("serve exited at start%s", p.logTail())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// close ends serve.
func (p *serveProcess) close() {
	_ = p.st.Close() //nolint:errcheck // benchmark teardown
	p.stop()
}

// collectorStages reads the collector's batch metrics from serve's
// metrics listener: batches, messages per batch, seconds storing.
func (p *serveProcess) collectorStages() (stages string, messages uint64, err error) {
	values, err := p.metricValues("tenantscope_collector_")
	if err != nil {
		return "", 0, err
	}
	return formatStages(values), uint64(values["batch_messages_sum"]), nil
}

// heapProfile is serve's heap profile (its metrics listener serves Go's
// profiles: serveYAML turns http.metrics_pprof on).
func (p *serveProcess) heapProfile() ([]byte, error) {
	res, err := http.Get(p.metrics + "/debug/pprof/heap")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("heap profile: %s", res.Status)
	}
	return io.ReadAll(res.Body)
}

// metricValues reads serve's metrics listener: the unlabelled series
// whose names begin with prefix, by their names without it.
func (p *serveProcess) metricValues(prefix string) (map[string]float64, error) {
	res, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	values := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			values[strings.TrimPrefix(name, prefix)] = v
		}
	}
	return values, sc.Err()
}
