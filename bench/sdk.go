package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/tenantscope/tenantscope/config"
)

// SDKConfig configures the SDK benchmark: services publishing domain
// events with the SDK's batches into 'tenantscope serve' as its users run
// it (a child process with its defaults, its Go memory limit included).
type SDKConfig struct {
	Dir, LibPath string
	// Tenants publish concurrently, each with its own SDK publisher
	// (default 4), Events each (default 250,000).
	Tenants, Events int
	// Binary is the tenantscope binary run as 'serve' (default: this
	// program); ServeCPUProfile, when set, is where serve writes a CPU
	// profile of the run.
	Binary, ServeCPUProfile string
	// ServeEnv is added to serve's environment, e.g. GOMEMLIMIT=512MiB
	// (serve's own default otherwise: memory.go_limit).
	ServeEnv []string
	// HeapProfile, when set, is where the heap profile serve gave when its
	// heap in use was at its highest is written (from /debug/pprof/heap on
	// its metrics listener, taken each time the heap passes its peak).
	HeapProfile string
}

// SDKResult is what the SDK benchmark measured.
type SDKResult struct {
	Tenants, Events int
	// EventsPerSec is events over the time from the first publish to the
	// last event stored; PublishSeconds how long publishing took (until
	// JetStream acknowledged the last batch).
	EventsPerSec, PublishSeconds, Seconds float64
	// Messages is how many NATS messages carried the events.
	Messages uint64
	// CPUPerEvent is serve's CPU per stored event; ClientCPUPerEvent this
	// process's (the publishers, the row-count polling).
	CPUPerEvent, ClientCPUPerEvent time.Duration
	// RSSStartMiB is serve's resident set once ready, PeakRSSMiB its
	// peak (VmHWM).
	RSSStartMiB, PeakRSSMiB float64
	// GoLimitMiB is serve's Go memory limit, HeapPeakMiB the most heap in
	// use seen (its metrics, read every 100 ms), GCs the collections
	// during the run.
	GoLimitMiB, HeapPeakMiB float64
	GCs                     uint64
	// GCPercent is serve's garbage collector percent (GOGC).
	GCPercent float64
	// Stages is where the collector's time went (its batch metrics).
	Stages string
}

// RunSDK publishes cfg.Events events from each of cfg.Tenants tenants with
// the SDK (batched, its defaults) into serve in a child process, through
// the tenants' own NATS accounts, and times until every event is stored,
// reading serve's CPU and memory from /proc and its metrics listener.
func RunSDK(ctx context.Context, cfg SDKConfig, progress io.Writer) (SDKResult, error) {
	if cfg.Tenants == 0 {
		cfg.Tenants = 4
	}
	if cfg.Events == 0 {
		cfg.Events = 250_000
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return SDKResult{}, err
		}
		cfg.Binary = exe
	}
	res := SDKResult{Tenants: cfg.Tenants, Events: cfg.Events}
	total := cfg.Tenants * cfg.Events
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tenantscope-bench-sdk-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench sdk: "+format+"\n", a...) }

	tenants := make([]string, cfg.Tenants)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("t%02d", i)
	}
	opts := serveOptions{Dir: cfg.Dir, LibPath: cfg.LibPath, Binary: cfg.Binary, CPUProfile: cfg.ServeCPUProfile, Env: cfg.ServeEnv}
	step("starting serve (%s)", cfg.Binary)
	srv, rssStart, messagesBefore, err := startServeIdle(ctx, opts, tenants, otlpBenchKey)
	if err != nil {
		return res, err
	}
	defer srv.close()
	res.RSSStartMiB = rssStart
	b, err := config.LoadBootstrap(srv.data)
	if err != nil {
		return res, err
	}
	svc := func(tenant string) string { return tenant + "-svc" } // serveYAML's users
	goBefore, err := srv.metricValues("go_")
	if err != nil {
		return res, err
	}
	res.GoLimitMiB = goBefore["gc_gomemlimit_bytes"] / (1 << 20)
	res.GCPercent = goBefore["gc_gogc_percent"]

	step("end to end, SDK batches: %d tenants x %d events -> ClickHouse", cfg.Tenants, cfg.Events)
	heap := watchHeap(srv, cfg.HeapProfile != "")
	serveCPU0, err := procCPU(srv.pid)
	if err != nil {
		return res, err
	}
	cpu0 := cpuTime()
	start := time.Now()
	took, err := phase(ctx, func(ctx context.Context) error {
		err := publishSDK(ctx, srv.nats, b, tenants, svc, cfg.Events)
		res.PublishSeconds = time.Since(start).Seconds()
		return err
	}, func(ctx context.Context) error { return waitTable(ctx, srv.st, "events", uint64(total), progress) })
	peak, profile := heap()
	res.HeapPeakMiB = peak / (1 << 20)
	if err != nil {
		return res, fmt.Errorf("%w%s", err, srv.logTail())
	}
	if cfg.HeapProfile != "" {
		if err := writeHeapProfile(cfg.HeapProfile, func() (float64, []byte) { return peak, profile }); err != nil {
			return res, err
		}
	}
	res.Seconds = took.Seconds()
	serveCPU, err := procCPU(srv.pid)
	if err != nil {
		return res, err
	}
	res.EventsPerSec = float64(total) / res.Seconds
	res.CPUPerEvent = (serveCPU - serveCPU0) / time.Duration(total)
	res.ClientCPUPerEvent = (cpuTime() - cpu0) / time.Duration(total)
	if res.PeakRSSMiB, err = procPeakRSSMiB(srv.pid); err != nil {
		return res, err
	}
	goAfter, err := srv.metricValues("go_")
	if err != nil {
		return res, err
	}
	res.GCs = uint64(goAfter["gc_duration_seconds_count"] - goBefore["gc_duration_seconds_count"])
	var messages uint64
	if res.Stages, messages, err = srv.collectorStages(); err != nil {
		return res, err
	}
	res.Messages = messages - messagesBefore
	var distinct uint64
	if err := srv.st.QueryRow(ctx, []any{&distinct}, "SELECT count() FROM events FINAL"); err != nil {
		return res, err
	}
	if distinct != uint64(total) {
		return res, fmt.Errorf("%d events published, %d distinct stored", total, distinct)
	}
	return res, nil
}

// watchHeap reads serve's heap in use every 100 ms until the returned
// function is called, which answers the most it saw and, with profile,
// the heap profile serve gave when it saw it.
func watchHeap(srv *serveProcess, profile bool) func() (float64, []byte) {
	var (
		mu   sync.Mutex
		peak float64
		prof []byte
		wg   sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			v, err := srv.metricValues("go_memstats_heap_inuse_bytes")
			if err != nil {
				continue // serve busy or ending: the next tick tries again
			}
			mu.Lock()
			higher := v[""] > peak
			peak = max(peak, v[""])
			mu.Unlock()
			if higher && profile {
				if p, err := srv.heapProfile(); err == nil {
					mu.Lock()
					prof = p
					mu.Unlock()
				}
			}
		}
	}()
	return func() (float64, []byte) {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak, prof
	}
}

// writeHeapProfile stops a heap watch and writes the profile it took at
// the peak to path.
func writeHeapProfile(path string, stop func() (float64, []byte)) error {
	_, profile := stop()
	if len(profile) == 0 {
		return fmt.Errorf("serve gave no heap profile during the run")
	}
	return os.WriteFile(path, profile, 0o644)
}

// Table prints the result.
func (r SDKResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| SDK batches through serve (%d tenants x %d events) | value |\n|---|---|\n", r.Tenants, r.Events)
	fmt.Fprintf(w, "| end to end: publish -> stored in ClickHouse (goal >= 150,000/s) | %.0f events/s |\n", r.EventsPerSec)
	fmt.Fprintf(w, "| messages that carried them | %d (%.0f events each) |\n", r.Messages, float64(r.Tenants*r.Events)/max(float64(r.Messages), 1))
	fmt.Fprintf(w, "| publishing took (until JetStream acknowledged the last) | %.1f s of %.1f s |\n", r.PublishSeconds, r.Seconds)
	fmt.Fprintf(w, "| serve CPU per event (NATS, collector, engine, all its threads) | %.2f µs |\n", float64(r.CPUPerEvent)/float64(time.Microsecond))
	fmt.Fprintf(w, "| publishers' CPU per event (this process) | %.2f µs |\n", float64(r.ClientCPUPerEvent)/float64(time.Microsecond))
	fmt.Fprintf(w, "| serve RSS: ready / peak (goal <= 600 MiB) | %.0f / %.0f MiB |\n", r.RSSStartMiB, r.PeakRSSMiB)
	limit := fmt.Sprintf("%.0f MiB", r.GoLimitMiB)
	if r.GoLimitMiB >= 1<<40 { // GOMEMLIMIT=off: math.MaxInt64 bytes
		limit = "none"
	}
	fmt.Fprintf(w, "| serve Go heap in use, peak / Go memory limit (GOGC) | %.0f MiB / %s (%.0f) |\n", r.HeapPeakMiB, limit, r.GCPercent)
	fmt.Fprintf(w, "| serve garbage collections during the run | %d |\n", r.GCs)
	fmt.Fprintf(w, "| collector batches | %s |\n", r.Stages)
}
