package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/otlp"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/edge"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
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
	// CPUPerSpan is the whole process's CPU (user+system, getrusage) per
	// stored span: receiver, NATS, collector, engine and the load
	// generator; ClientCPUPerSpan is the load generator's alone, measured
	// first against a receiver that discards the requests.
	CPUPerSpan, ClientCPUPerSpan time.Duration
	// RSSStartMiB is the process's resident set once the components are
	// up, before the load; RSSMiB at the end, PeakRSSMiB its peak.
	RSSStartMiB, RSSMiB, PeakRSSMiB float64
	// Stages is where the collector's time went (its batch metrics).
	Stages string
	// GoPeakMiB is the most memory the Go runtime held from the OS during
	// the load (the rest of the RSS is the engine's and the library's).
	GoPeakMiB float64
}

// sampleGoMemory samples the memory the Go runtime holds from the OS
// (mapped, less what it released) every 20 ms, keeping the peak, until
// stop.
func sampleGoMemory() (peak *atomic.Uint64, stop func()) {
	peak = &atomic.Uint64{}
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			if v := samples[0].Value.Uint64() - samples[1].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return peak, func() { once.Do(func() { close(done); wg.Wait() }) }
}

const otlpBenchKey = "bench-otlp-key"

// RunOTLP sends OTLP/HTTP trace requests with the stock exporter to the
// suite's components, run as serve runs them but in this process (embedded
// NATS with the tenant streams, the embedded engine, the OTLP receiver
// behind the HTTP edge, one collector with serve's batching and retention
// cache), and times until every span is stored.
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

	// 0. The load generator alone, against a receiver that reads and
	//    discards: what the client side costs in this process.
	step("load generator alone: %d workers x %d requests x %d spans, to a discarding receiver", cfg.Workers, cfg.Requests, cfg.SpansPerRequest)
	null, err := startHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) //nolint:errcheck // a discarding receiver
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	if err != nil {
		return res, err
	}
	cpu0 := cpuTime()
	if err := sendOTLP(ctx, null.url, cfg, nil); err != nil {
		null.close()
		return res, fmt.Errorf("load generator alone: %w", err)
	}
	res.ClientCPUPerSpan = (cpuTime() - cpu0) / time.Duration(total)
	null.close()

	// 1. The suite's components, in this process.
	local, err := engine.StartLocal(engine.Config{Dir: filepath.Join(cfg.Dir, "engine"), LibPath: cfg.LibPath, Logger: zerolog.Nop()}, benchServerConfig(), "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer local.Close(context.Background()) //nolint:errcheck // benchmark teardown
	sc := config.Default()
	sc.Data = cfg.Dir
	sc.NATS.Listen = "127.0.0.1:0"
	// Quotas out of the way: this measures the pipeline, not the limits.
	sc.Quotas = config.Quota{EventsPerSecond: 1e7, BytesPerSecond: 1e10}
	sc.Regions = []config.Region{{Name: "bench", Database: "bench"}}
	sc.Tenants = []config.Tenant{{ID: "acme", Region: "bench", NATS: config.Credentials{User: "acme"}}}
	sc.APIKeys = []config.APIKey{{Name: "acme-otlp", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey(otlpBenchKey)}}
	p, closePipeline, err := startPipeline(ctx, local, &sc)
	if err != nil {
		return res, err
	}
	defer closePipeline()
	st, js := p.st, p.js
	stores := map[string]*chstore.Store{"bench": st}
	place := placement.New()
	cache, err := retention.New(sc, place, stores, nil, js, "", zerolog.Nop()).NewCache(ctx)
	if err != nil {
		return res, err
	}
	reg := prometheus.NewRegistry()
	col, err := collector.New(collector.Config{RetentionFor: cache.Days}, js, sc, place, stores, zerolog.Nop(), reg, nil)
	if err != nil {
		return res, err
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := col.Run(runCtx); err != nil {
			step("collector: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := cache.Run(runCtx, 10*time.Second); err != nil && !errors.Is(err, context.Canceled) {
			step("retention cache: %v", err)
		}
	}()
	defer func() { stop(); wg.Wait() }()
	rcv, err := otlp.New(sc, js, zerolog.Nop(), reg)
	if err != nil {
		return res, err
	}
	mux := http.NewServeMux()
	rcv.Register(mux)
	srv, err := startHTTP(edge.Wrap(mux, edge.Config{Logger: zerolog.Nop()}))
	if err != nil {
		return res, err
	}
	defer srv.close()
	stream, err := js.Stream(ctx, natsbus.IngestStream("acme"))
	if err != nil {
		return res, err
	}
	before, err := stream.Info(ctx)
	if err != nil {
		return res, err
	}

	res.RSSStartMiB = rssMiB()

	// 2. Send, and time until every span is stored.
	step("end to end: %d workers x %d requests x %d spans -> ClickHouse", cfg.Workers, cfg.Requests, cfg.SpansPerRequest)
	cpu0 = cpuTime()
	start := time.Now()
	goPeak, stopSampling := sampleGoMemory()
	defer stopSampling()
	if err := sendOTLP(ctx, srv.url, cfg, progress); err != nil {
		return res, err
	}
	res.SendSeconds = time.Since(start).Seconds()
	if err := st.QueryRow(ctx, []any{&res.StoredAtSendEnd}, "SELECT count() FROM spans"); err != nil {
		return res, err
	}
	if err := waitTable(ctx, st, "spans", uint64(total), progress); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPUPerSpan = (cpuTime() - cpu0) / time.Duration(total)
	res.SpansPerSec = float64(total) / res.Seconds
	res.RSSMiB = rssMiB()
	res.PeakRSSMiB = peakRSSMiB()
	res.Stages = stageTimes(reg)
	stopSampling()
	res.GoPeakMiB = float64(goPeak.Load()) / (1 << 20)
	after, err := stream.Info(ctx)
	if err != nil {
		return res, err
	}
	res.StreamMessages = after.State.LastSeq - before.State.LastSeq
	var distinct uint64
	if err := st.QueryRow(ctx, []any{&distinct}, "SELECT count() FROM spans FINAL"); err != nil {
		return res, err
	}
	if distinct != uint64(total) {
		return res, fmt.Errorf("%d spans sent, %d distinct stored", total, distinct)
	}
	return res, nil
}

type httpServer struct {
	url   string
	close func()
}

func startHTTP(h http.Handler) (httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return httpServer{}, err
	}
	srv := edge.Server(h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) //nolint:errcheck // ends with Close
	}()
	return httpServer{url: "http://" + ln.Addr().String(), close: func() { _ = srv.Close(); <-done }}, nil //nolint:errcheck // teardown
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
	fmt.Fprintf(w, "| messages the tenant's stream took | %d |\n", r.StreamMessages)
	fmt.Fprintf(w, "| CPU per span, whole process (receiver, NATS, collector, engine, load generator) | %.1f µs |\n", float64(r.CPUPerSpan.Nanoseconds())/1000)
	fmt.Fprintf(w, "| CPU per span, load generator alone (to a discarding receiver) | %.1f µs |\n", float64(r.ClientCPUPerSpan.Nanoseconds())/1000)
	fmt.Fprintf(w, "| CPU per span, the suite's share (difference) | %.1f µs |\n", float64((r.CPUPerSpan-r.ClientCPUPerSpan).Nanoseconds())/1000)
	fmt.Fprintf(w, "| process RSS before the load / at the end / peak (goal <= 600 MiB) | %.0f / %.0f / %.0f MiB |\n", r.RSSStartMiB, r.RSSMiB, r.PeakRSSMiB)
	fmt.Fprintf(w, "| of it the Go runtime's, peak during the load (the rest: the engine) | %.0f MiB |\n", r.GoPeakMiB)
	fmt.Fprintf(w, "| collector batches | %s |\n", r.Stages)
}
