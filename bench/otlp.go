package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/chstore"
)

// OTLPConfig configures the OTLP benchmark.
type OTLPConfig struct {
	Dir     string
	LibPath string
	// Workers send concurrently, each with its own stock otlptracehttp
	// exporter (default 4).
	Workers int
	// Requests each worker sends (default 100), of SpansPerRequest spans
	// (default 512).
	Requests, SpansPerRequest int
	// Gzip compresses the requests (the exporter's default is none).
	Gzip bool
	// Binary is the tenantscope binary run as 'serve' (default: this
	// program); ServeCPUProfile, when set, is where serve writes a CPU
	// profile of the run.
	Binary, ServeCPUProfile string
	// ServeEnv is added to serve's environment, e.g. GOMEMLIMIT=512MiB.
	ServeEnv []string
	// HeapProfile, when set, is where serve's heap profile at its highest
	// heap in use during the load is written (as bench sdk's).
	HeapProfile string
}

// defaults fills the load's defaults: 4 workers x 100 requests x 512 spans.
func (c *OTLPConfig) defaults() {
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Requests == 0 {
		c.Requests = 100
	}
	if c.SpansPerRequest == 0 {
		c.SpansPerRequest = 512
	}
	if c.Binary == "" {
		if exe, err := os.Executable(); err == nil {
			c.Binary = exe
		}
	}
}

// OTLPResult is what the OTLP benchmark measured.
type OTLPResult struct {
	Workers, Requests, SpansPerRequest, Spans int
	Gzip                                      bool
	// SpansPerSec is spans over the time from the first request sent to
	// the last span stored.
	SpansPerSec float64
	// SendSeconds is how long sending took; StoredAtSendEnd how many
	// spans were stored by then.
	SendSeconds, Seconds float64
	StoredAtSendEnd      uint64
	// StreamMessages is how many messages the tenant's stream took.
	StreamMessages uint64
	// CPUPerSpan is serve's CPU (user+system, all its threads: receiver,
	// NATS, collector, engine, its periodic jobs) per stored span, from
	// the first request sent to the last span stored; ClientCPUPerSpan is
	// this process's meanwhile (the load generator, row-count polling).
	CPUPerSpan, ClientCPUPerSpan time.Duration
	// RSSStartMiB is serve's resident set once it is ready, before the
	// load; RSSMiB at the end, PeakRSSMiB its peak (VmHWM).
	RSSStartMiB, RSSMiB, PeakRSSMiB float64
	// Stages is where the collector's time went (its batch metrics).
	Stages string
}

const otlpBenchKey = "bench-otlp-key"

// RunOTLP sends OTLP/HTTP trace requests with the stock exporter to
// 'tenantscope serve' in a child process (its defaults: embedded NATS and
// engine, one collector, the OTLP receiver behind the HTTP edge) and times
// until every span is stored, reading serve's CPU and memory from /proc.
func RunOTLP(ctx context.Context, cfg OTLPConfig, progress io.Writer) (OTLPResult, error) {
	cfg.defaults()
	total := cfg.Workers * cfg.Requests * cfg.SpansPerRequest
	res := OTLPResult{Workers: cfg.Workers, Requests: cfg.Requests, SpansPerRequest: cfg.SpansPerRequest, Spans: total, Gzip: cfg.Gzip}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tenantscope-bench-otlp-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench otlp: "+format+"\n", a...) }

	// 1. The suite, as its users run it: serve in a child process.
	step("starting serve (%s)", cfg.Binary)
	srv, rssStart, messagesBefore, err := startServeIdle(ctx, serveOptions{Dir: cfg.Dir, LibPath: cfg.LibPath, Binary: cfg.Binary, CPUProfile: cfg.ServeCPUProfile, Env: cfg.ServeEnv}, []string{"acme"}, otlpBenchKey)
	if err != nil {
		return res, err
	}
	defer srv.close()
	res.RSSStartMiB = rssStart

	// 2. Send, and time until every span is stored.
	step("end to end: %d workers x %d requests x %d spans -> ClickHouse", cfg.Workers, cfg.Requests, cfg.SpansPerRequest)
	serveCPU0, err := procCPU(srv.pid)
	if err != nil {
		return res, err
	}
	cpu0 := cpuTime()
	var heap func() (float64, []byte)
	if cfg.HeapProfile != "" {
		heap = watchHeap(srv, true)
	}
	start := time.Now()
	if err := sendOTLP(ctx, srv.url, cfg, progress); err != nil {
		return res, fmt.Errorf("sending to serve: %w%s", err, srv.logTail())
	}
	res.SendSeconds = time.Since(start).Seconds()
	if err := srv.st.QueryRow(ctx, []any{&res.StoredAtSendEnd}, "SELECT count() FROM spans"); err != nil {
		return res, err
	}
	if err := waitTable(ctx, srv.st, "spans", uint64(total), progress); err != nil {
		return res, fmt.Errorf("%w%s", err, srv.logTail())
	}
	res.Seconds = time.Since(start).Seconds()
	serveCPU, err := procCPU(srv.pid)
	if err != nil {
		return res, err
	}
	if heap != nil {
		if err := writeHeapProfile(cfg.HeapProfile, heap); err != nil {
			return res, err
		}
	}
	res.CPUPerSpan = (serveCPU - serveCPU0) / time.Duration(total)
	res.ClientCPUPerSpan = (cpuTime() - cpu0) / time.Duration(total)
	res.SpansPerSec = float64(total) / res.Seconds
	if res.RSSMiB, err = procRSSMiB(srv.pid); err != nil {
		return res, err
	}
	if res.PeakRSSMiB, err = procPeakRSSMiB(srv.pid); err != nil {
		return res, err
	}
	// The collector observes a batch's metrics just after its rows are
	// stored: wait a moment for the last one.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var messages uint64
		if res.Stages, messages, err = srv.collectorStages(); err != nil {
			return res, err
		}
		res.StreamMessages = messages - messagesBefore
		if res.StreamMessages >= uint64(cfg.Workers*cfg.Requests) || time.Now().After(deadline) {
			break
		}
	}
	var distinct uint64
	if err := srv.st.QueryRow(ctx, []any{&distinct}, "SELECT count() FROM spans FINAL"); err != nil {
		return res, err
	}
	if distinct != uint64(total) {
		return res, fmt.Errorf("%d spans sent, %d distinct stored", total, distinct)
	}
	return res, nil
}

// sendOTLP sends cfg.Requests requests of cfg.SpansPerRequest spans from
// each of cfg.Workers workers, each with its own stock exporter.
func sendOTLP(ctx context.Context, url string, cfg OTLPConfig, progress io.Writer) error {
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"), attribute.String("service.version", "1.4.2"),
		attribute.String("host.name", "bench-host-1"), attribute.String("tenant.id", "acme"))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
		errs = make(chan error, cfg.Workers)
	)
	total := cfg.Workers * cfg.Requests
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(url + "/v1/traces"),
				otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer " + otlpBenchKey})}
			if cfg.Gzip {
				opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
			}
			exp, err := otlptracehttp.New(ctx, opts...)
			if err != nil {
				errs <- err
				return
			}
			defer exp.Shutdown(context.Background()) //nolint:errcheck // benchmark teardown
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for range cfg.Requests {
				if err := exp.ExportSpans(ctx, benchSpans(rnd, res, cfg.SpansPerRequest)); err != nil {
					errs <- err
					return
				}
				if progress != nil {
					mu.Lock()
					sent++
					bar(progress, "sent", sent, total)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if progress != nil {
		fmt.Fprintln(progress)
	}
	close(errs)
	return <-errs
}

var benchScope = instrumentation.Scope{Name: "bench", Version: "1.0.0"}

// benchSpans is one request's spans: traces of 8 spans, a server span with
// an HTTP route and status and seven children (database and cache calls).
func benchSpans(rnd *rand.Rand, res *resource.Resource, n int) []sdktrace.ReadOnlySpan {
	out := make([]sdktrace.ReadOnlySpan, 0, n)
	now := time.Now()
	var tid trace.TraceID
	var root trace.SpanID
	for i := range n {
		var sid trace.SpanID
		fillRandom(rnd, sid[:])
		stub := tracetest.SpanStub{Resource: res, InstrumentationScope: benchScope, StartTime: now.Add(-time.Duration(n-i) * time.Millisecond)}
		if i%8 == 0 {
			fillRandom(rnd, tid[:])
			root = sid
			stub.Name, stub.SpanKind = "POST /checkout", trace.SpanKindServer
			stub.EndTime = stub.StartTime.Add(time.Duration(20+rnd.IntN(200)) * time.Millisecond)
			status := 200
			if rnd.IntN(50) == 0 {
				status = 503
				stub.Status = sdktrace.Status{Code: codes.Error, Description: "upstream unavailable"}
			}
			stub.Attributes = []attribute.KeyValue{attribute.String("http.request.method", "POST"), attribute.String("http.route", "/checkout"),
				attribute.Int("http.response.status_code", status), attribute.String("url.scheme", "https"), attribute.String("user_agent.original", "bench/1.0")}
		} else {
			stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: root, TraceFlags: trace.FlagsSampled})
			stub.Name, stub.SpanKind = "SELECT orders", trace.SpanKindClient
			stub.EndTime = stub.StartTime.Add(time.Duration(1+rnd.IntN(20)) * time.Millisecond)
			stub.Attributes = []attribute.KeyValue{attribute.String("db.system", "postgresql"), attribute.String("db.operation.name", "SELECT"),
				attribute.String("db.collection.name", "orders"), attribute.String("server.address", "db-1")}
		}
		stub.SpanContext = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
		out = append(out, stub.Snapshot())
	}
	return out
}

func fillRandom(rnd *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSMiB is the process's peak resident set.
func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// waitTable waits until table holds want rows.
func waitTable(ctx context.Context, st *chstore.Store, table string, want uint64, progress io.Writer) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var n uint64
		if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+table); err != nil {
			return err
		}
		bar(progress, "stored", int(min(n, want)), int(want))
		if n >= want {
			fmt.Fprintln(progress)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d %s stored after 10 minutes", n, want, table)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Table prints the result.
func (r OTLPResult) Table(w io.Writer) {
	comp := "uncompressed"
	if r.Gzip {
		comp = "gzip"
	}
	fmt.Fprintf(w, "| otlp (%d workers x %d requests x %d spans, stock otlptracehttp, %s) | value |\n|---|---|\n", r.Workers, r.Requests, r.SpansPerRequest, comp)
	fmt.Fprintf(w, "| spans stored per second (first request sent -> last span stored) | %.0f spans/s |\n", r.SpansPerSec)
	fmt.Fprintf(w, "| sending took / all stored after | %.2f s / %.2f s |\n", r.SendSeconds, r.Seconds)
	fmt.Fprintf(w, "| spans waiting when sending ended | %d of %d |\n", uint64(r.Spans)-min(r.StoredAtSendEnd, uint64(r.Spans)), r.Spans)
	fmt.Fprintf(w, "| messages the collector took (one per request; serve's own records count too) | %d |\n", r.StreamMessages)
	fmt.Fprintf(w, "| CPU per span, serve (receiver, NATS, collector, engine, its jobs) | %.1f µs |\n", float64(r.CPUPerSpan.Nanoseconds())/1000)
	fmt.Fprintf(w, "| CPU per span, the load generator in this process | %.1f µs |\n", float64(r.ClientCPUPerSpan.Nanoseconds())/1000)
	fmt.Fprintf(w, "| serve RSS before the load / at the end / peak (goal <= 600 MiB) | %.0f / %.0f / %.0f MiB |\n", r.RSSStartMiB, r.RSSMiB, r.PeakRSSMiB)
	fmt.Fprintf(w, "| collector batches | %s |\n", r.Stages)
}
