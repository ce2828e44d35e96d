package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tenantscope/tenantscope/chstore"
)

// OTelColConfig configures the OpenTelemetry Collector's side of
// "bench otlp --peer otelcol": the Collector built from its own module
// (bench/otelcol) receives the same OTLP load as the suite and stores it
// with the contrib ClickHouse exporter in a "tenantscope engine" child.
type OTelColConfig struct {
	// Load is the load, the same as the suite's side gets.
	Load OTLPConfig
	// Self is this binary; its engine subcommand stores the Collector's spans.
	Self string
	// Binary is the built Collector.
	Binary string
	// Compress is the exporter's compress setting ("" leaves the
	// exporter's default, lz4).
	Compress string
}

// OTelColResult is what the Collector's side measured.
type OTelColResult struct {
	Spans int
	// Stored is how many rows otel_traces holds at the end (more than
	// Spans when the exporter retried an insert that had been stored).
	Stored uint64
	// SpansPerSec is spans over the time from the first request sent to
	// the last span stored.
	SpansPerSec          float64
	SendSeconds, Seconds float64
	StoredAtSendEnd      uint64
	// CollectorCPUPerSpan and EngineCPUPerSpan are the user+system CPU of
	// the otelcol process and of its engine process over the load, per
	// span (/proc/<pid>/stat before and after); LoadCPUPerSpan is this
	// process's (the load generator and the row-count polling).
	CollectorCPUPerSpan, EngineCPUPerSpan, LoadCPUPerSpan time.Duration
	// CollectorPeakRSSMiB and EnginePeakRSSMiB are the processes' peak
	// resident sets (VmHWM) at the end; LoadPeakRSSMiB is this process's
	// after the run (the load generator's).
	CollectorPeakRSSMiB, EnginePeakRSSMiB, LoadPeakRSSMiB float64
	// Compress is the exporter's compression.
	Compress string
}

// CPUPerSpan is the Collector's CPU per span: otelcol and its engine.
func (r OTelColResult) CPUPerSpan() time.Duration { return r.CollectorCPUPerSpan + r.EngineCPUPerSpan }

// PeakRSSMiB is the sum of the two processes' peaks.
func (r OTelColResult) PeakRSSMiB() float64 { return r.CollectorPeakRSSMiB + r.EnginePeakRSSMiB }

// The database the Collector's exporter creates and writes, and its
// table of spans (the exporter's default name).
const (
	otelcolDatabase = "otel"
	otelcolTraces   = "otel_traces"
)

// FindOTelColDir finds the Collector's module, bench/otelcol, in dir or
// the nearest directory above it that has one.
func FindOTelColDir(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "bench", "otelcol")
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no bench/otelcol/go.mod in %s or above it: run in the repository or pass --peer-dir", dir)
		}
	}
}

// BuildOTelCol builds the Collector's module in dir into binary with the
// go command, when binary is missing or older than a file of the module.
// The first build downloads the Collector's modules and compiles them for
// minutes; go build -v's lines go to progress.
func BuildOTelCol(ctx context.Context, dir, binary string, progress io.Writer) error {
	newest, err := newestFile(dir)
	if err != nil {
		return fmt.Errorf("the Collector's module: %w", err)
	}
	if fi, err := os.Stat(binary); err == nil && !fi.ModTime().Before(newest) {
		fmt.Fprintf(progress, "bench otlp: the Collector %s is up to date\n", binary)
		return nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building the Collector needs the go command: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(binary), 0o750); err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench otlp: building the Collector from %s into %s (the first build downloads and compiles for minutes)\n", dir, binary)
	start := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "build", "-v", "-o", binary, ".")
	cmd.Dir = dir
	// The module is built by itself, never as part of a workspace.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	// One writer for both: the go command's output comes through one pipe,
	// copied by one goroutine, never concurrently with another into progress.
	out := &prefixWriter{w: progress, prefix: "  go build: "}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build the Collector in %s: %w", dir, err)
	}
	fmt.Fprintf(progress, "bench otlp: built the Collector in %.0f s\n", time.Since(start).Seconds())
	return nil
}

// newestFile is the latest modification time of the Go sources, go.mod
// and go.sum under dir.
func newestFile(dir string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !(strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	if err == nil && newest.IsZero() {
		err = fmt.Errorf("no Go sources in %s", dir)
	}
	return newest, err
}

// prefixWriter starts each line written through it with prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
	mid    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var out bytes.Buffer
	for _, c := range b {
		if !p.mid {
			out.WriteString(p.prefix)
			p.mid = true
		}
		out.WriteByte(c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := p.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// otelcolSettings are what the Collector's configuration file is made of.
type otelcolSettings struct {
	// OTLPAddr is where the OTLP/HTTP receiver listens (host:port).
	OTLPAddr string
	// EngineAddr is the HTTP interface of the engine the exporter writes to.
	EngineAddr         string
	User, Password, DB string
	// Compress is the exporter's compress ("" for its default).
	Compress string
}

// otelcolYAML is the Collector's configuration: the OTLP receiver (HTTP
// only), the batch processor with its defaults and the ClickHouse exporter
// with its defaults (schema created by the exporter in a database of its
// own, async inserts, its sending queue), over ClickHouse's HTTP interface.
// The Collector's own telemetry logs warnings and exports no metrics (its
// default Prometheus port, 8888, would collide between runs).
func otelcolYAML(s otelcolSettings) string {
	var b strings.Builder
	fmt.Fprintf(&b, `receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
processors:
  batch: {}
exporters:
  clickhouse:
    endpoint: %s
    username: %s
    password: %s
    database: %s
    create_schema: true
`, strconv.Quote(s.OTLPAddr), strconv.Quote("http://"+s.EngineAddr), strconv.Quote(s.User), strconv.Quote(s.Password), strconv.Quote(s.DB))
	if s.Compress != "" {
		fmt.Fprintf(&b, "    compress: %s\n", strconv.Quote(s.Compress))
	}
	b.WriteString(`service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [clickhouse]
`)
	return b.String()
}

// RunOTelCol starts a "tenantscope engine" child and the Collector
// (cfg.Binary) writing to it, sends it the load that RunOTLP sends the
// suite, and times until every span is stored in otel_traces.
func RunOTelCol(ctx context.Context, cfg OTelColConfig, progress io.Writer) (res OTelColResult, err error) {
	load := cfg.Load
	load.defaults()
	total := load.Workers * load.Requests * load.SpansPerRequest
	res = OTelColResult{Spans: total, Compress: cfg.Compress}
	if res.Compress == "" {
		res.Compress = "lz4 (exporter's default)"
	}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench otlp: otelcol: "+format+"\n", a...) }

	dir, err := os.MkdirTemp("", "tenantscope-bench-otelcol-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // benchmark teardown

	step("starting a tenantscope engine child")
	eng, err := startEngineChild(ctx, cfg.Self, load.LibPath)
	if err != nil {
		return res, err
	}
	defer eng.stop()

	otlpAddr, err := freeLoopbackAddr()
	if err != nil {
		return res, err
	}
	confPath := filepath.Join(dir, "otelcol.yaml")
	conf := otelcolYAML(otelcolSettings{OTLPAddr: otlpAddr, EngineAddr: eng.addr, User: benchUser, Password: benchPassword, DB: otelcolDatabase, Compress: cfg.Compress})
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return res, err
	}
	col, err := startChild(ctx, "the Collector", cfg.Binary, []string{"--config", "file:" + confPath}, nil, filepath.Join(dir, "otelcol.log"))
	if err != nil {
		return res, err
	}
	defer col.stop()
	step("started %s (pid %d), OTLP/HTTP on %s, exporting to the engine at %s (pid %d)", cfg.Binary, col.pid, otlpAddr, eng.addr, eng.pid)
	if err := col.waitListening(ctx, otlpAddr, time.Minute); err != nil {
		return res, err
	}

	st, err := chstore.Open(ctx, chstore.Options{DSN: benchDSN(eng.addr), Database: otelcolDatabase, Name: otelcolDatabase, MaxOpenConns: 2})
	if err != nil {
		return res, err
	}
	defer st.Close() //nolint:errcheck // benchmark teardown
	count := func() (uint64, error) {
		var n uint64
		err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+otelcolTraces)
		return n, err
	}
	if n, err := count(); err != nil {
		return res, fmt.Errorf("the exporter's table: %w", err)
	} else if n != 0 {
		return res, fmt.Errorf("%s holds %d rows before the load", otelcolTraces, n)
	}

	if err := waitIdle(ctx, col.pid, eng.pid); err != nil {
		return res, err
	}
	step("%d workers x %d requests x %d spans -> otelcol -> ClickHouse", load.Workers, load.Requests, load.SpansPerRequest)
	colCPU0, err := procCPU(col.pid)
	if err != nil {
		return res, err
	}
	engCPU0, err := procCPU(eng.pid)
	if err != nil {
		return res, err
	}
	selfCPU0 := cpuTime()
	start := time.Now()
	if err := sendOTLP(ctx, "http://"+otlpAddr, load, progress); err != nil {
		return res, fmt.Errorf("sending to the Collector: %w%s", err, col.logTail())
	}
	res.SendSeconds = time.Since(start).Seconds()
	if res.StoredAtSendEnd, err = count(); err != nil {
		return res, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		n, err := count()
		if err != nil {
			return res, err
		}
		bar(progress, "stored", int(min(n, uint64(total))), total)
		if n >= uint64(total) {
			fmt.Fprintln(progress)
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d spans stored by the Collector after 10 minutes%s", n, total, col.logTail())
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-col.exited:
			return res, fmt.Errorf("the Collector exited with %d of %d spans stored%s", n, total, col.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	res.Seconds = time.Since(start).Seconds()
	selfCPU := cpuTime() - selfCPU0
	colCPU, err := procCPU(col.pid)
	if err != nil {
		return res, err
	}
	engCPU, err := procCPU(eng.pid)
	if err != nil {
		return res, err
	}
	res.SpansPerSec = float64(total) / res.Seconds
	res.CollectorCPUPerSpan = (colCPU - colCPU0) / time.Duration(total)
	res.EngineCPUPerSpan = (engCPU - engCPU0) / time.Duration(total)
	res.LoadCPUPerSpan = selfCPU / time.Duration(total)
	if res.CollectorPeakRSSMiB, err = procPeakRSSMiB(col.pid); err != nil {
		return res, err
	}
	if res.EnginePeakRSSMiB, err = procPeakRSSMiB(eng.pid); err != nil {
		return res, err
	}
	res.LoadPeakRSSMiB = peakRSSMiB()

	var distinct uint64
	if err := st.QueryRow(ctx, []any{&res.Stored, &distinct}, "SELECT count(), uniqExact(TraceId, SpanId) FROM "+otelcolTraces); err != nil {
		return res, err
	}
	if distinct != uint64(total) {
		return res, fmt.Errorf("%d spans sent, %d distinct stored by the Collector", total, distinct)
	}
	return res, nil
}

// freeLoopbackAddr is a loopback address with a port that was free a
// moment ago, for a child process to listen on.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// childProcess is a program the benchmark runs beside itself (the
// Collector, the suite's serve), whose CPU and memory it reads from /proc.
type childProcess struct {
	name    string
	pid     int
	logPath string
	// exited is closed when the process has ended.
	exited chan struct{}
	stop   func()
}

// startChild starts binary with args; its output goes to logPath. name
// says what it is in errors.
func startChild(ctx context.Context, name, binary string, args, env []string, logPath string) (*childProcess, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() //nolint:errcheck // already failing
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &childProcess{name: name, pid: cmd.Process.Pid, logPath: logPath, exited: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(p.exited)
		_ = cmd.Wait() //nolint:errcheck // an early exit is reported with the log
	}()
	p.stop = func() {
		_ = cmd.Process.Signal(os.Interrupt) //nolint:errcheck // benchmark teardown
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill() //nolint:errcheck // benchmark teardown
		}
		wg.Wait()
		_ = logFile.Close() //nolint:errcheck // benchmark teardown
	}
	return p, nil
}

// waitListening waits until the child accepts connections on addr.
func (p *childProcess) waitListening(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within %v%s", p.name, addr, limit, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("%s exited at start%s", p.name, p.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail is the end of the child's output, to explain a failure.
func (p *childProcess) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "; the output of " + p.name + " ends:\n" + string(b)
}

// waitIdle waits, at most 15 s, until the processes together use less
// than 5 % of a core over half a second: what they do once started
// (migrations, first passes of periodic jobs) is not counted against the
// load.
func waitIdle(ctx context.Context, pids ...int) error {
	const window = 500 * time.Millisecond
	total := func() (time.Duration, error) {
		var sum time.Duration
		for _, pid := range pids {
			d, err := procCPU(pid)
			if err != nil {
				return 0, err
			}
			sum += d
		}
		return sum, nil
	}
	deadline := time.Now().Add(15 * time.Second)
	prev, err := total()
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		cur, err := total()
		if err != nil {
			return err
		}
		if cur-prev < window/20 {
			return nil
		}
		prev = cur
	}
	return nil
}

// clockTicks is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100
// on Linux's x86 and arm ABIs).
const clockTicks = 100

// procCPU is a process's user and system CPU time so far, all its threads.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return parseProcStatCPU(string(b))
}

var errProcFormat = errors.New("unexpected /proc format")

// parseProcStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line; the command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: no command name in %q", errProcFormat, stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: %d fields after the command name", errProcFormat, len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errProcFormat, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procPeakRSSMiB is a process's peak resident set (VmHWM).
func procPeakRSSMiB(pid int) (float64, error) { return procStatusMiB(pid, "VmHWM") }

// procRSSMiB is a process's resident set now (VmRSS).
func procRSSMiB(pid int) (float64, error) { return procStatusMiB(pid, "VmRSS") }

func procStatusMiB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("%s of process %d: %w", field, pid, err)
	}
	return parseStatusMiB(string(b), field)
}

// parseStatusMiB reads a line like "VmHWM:   123456 kB" of a
// /proc/<pid>/status, in MiB.
func parseStatusMiB(status, field string) (float64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%w: %q", errProcFormat, line)
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errProcFormat, err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("%w: no %s line", errProcFormat, field)
}

// SideBySide is the suite and the Collector on the same load, in one run.
type SideBySide struct {
	Suite     OTLPResult
	Collector OTelColResult
	// SuiteFirst: the suite's side ran before the Collector's.
	SuiteFirst bool
}

// Ratios are the suite's spans/s, CPU per span and peak RSS, each divided
// by the Collector's (0 where the Collector's is 0).
func (s SideBySide) Ratios() (spans, cpu, rss float64) {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return div(s.Suite.SpansPerSec, s.Collector.SpansPerSec),
		div(float64(s.Suite.CPUPerSpan), float64(s.Collector.CPUPerSpan())),
		div(s.Suite.PeakRSSMiB, s.Collector.PeakRSSMiB())
}

// Rounds are side-by-side runs of one benchmark, in the order they ran.
type Rounds []SideBySide

// Medians are the median of each ratio over the rounds.
func (rs Rounds) Medians() (spans, cpu, rss float64) {
	var a, b, c []float64
	for _, r := range rs {
		x, y, z := r.Ratios()
		a, b, c = append(a, x), append(b, y), append(c, z)
	}
	return median(a), median(b), median(c)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// Table prints a row per round (which side went first, both sides' spans/s,
// CPU per span and peak RSS, and their ratios) and the median ratios.
func (rs Rounds) Table(w io.Writer) {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	fmt.Fprintf(w, "| round (first) | spans/s tenantscope / otelcol | ratio (goal >= 1.0) | CPU µs a span tenantscope / otelcol | ratio (goal <= 1.0) | peak RSS MiB tenantscope / otelcol | ratio |\n|---|---|---|---|---|---|---|\n")
	for i, r := range rs {
		first := "otelcol"
		if r.SuiteFirst {
			first = "tenantscope"
		}
		spans, cpu, rss := r.Ratios()
		fmt.Fprintf(w, "| %d (%s) | %.0f / %.0f | %.2f | %.1f / %.1f | %.2f | %.0f / %.0f | %.2f |\n", i+1, first,
			r.Suite.SpansPerSec, r.Collector.SpansPerSec, spans, us(r.Suite.CPUPerSpan), us(r.Collector.CPUPerSpan()), cpu,
			r.Suite.PeakRSSMiB, r.Collector.PeakRSSMiB(), rss)
	}
	spans, cpu, rss := rs.Medians()
	fmt.Fprintf(w, "| median of %d rounds | | %.2f | | %.2f | | %.2f |\n", len(rs), spans, cpu, rss)
}

// Table prints both columns and the ratio suite / Collector.
func (s SideBySide) Table(w io.Writer) {
	t, c := s.Suite, s.Collector
	comp := "uncompressed"
	if t.Gzip {
		comp = "gzip"
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	fmt.Fprintf(w, "| otlp side by side (%d workers x %d requests x %d spans, stock otlptracehttp, %s) | tenantscope serve | otelcol (exporter compress %s) | ratio tenantscope / otelcol |\n|---|---|---|---|\n",
		t.Workers, t.Requests, t.SpansPerRequest, comp, c.Compress)
	fmt.Fprintf(w, "| spans stored per second, first request -> last span stored (goal ratio >= 1.0) | %.0f | %.0f | %s |\n", t.SpansPerSec, c.SpansPerSec, ratio(t.SpansPerSec, c.SpansPerSec))
	fmt.Fprintf(w, "| sending took / all stored after | %.2f s / %.2f s | %.2f s / %.2f s | |\n", t.SendSeconds, t.Seconds, c.SendSeconds, c.Seconds)
	fmt.Fprintf(w, "| spans waiting when sending ended | %d of %d | %d of %d | |\n",
		uint64(t.Spans)-min(t.StoredAtSendEnd, uint64(t.Spans)), t.Spans, uint64(c.Spans)-min(c.StoredAtSendEnd, uint64(c.Spans)), c.Spans)
	fmt.Fprintf(w, "| rows stored (more than sent: inserts retried) | %d | %d | |\n", t.Spans, c.Stored)
	fmt.Fprintf(w, "| CPU per span, the pipeline (goal ratio <= 1.0): serve's process; otelcol + its engine | %.1f µs | %.1f µs | %s |\n",
		us(t.CPUPerSpan), us(c.CPUPerSpan()), ratio(us(t.CPUPerSpan), us(c.CPUPerSpan())))
	fmt.Fprintf(w, "| CPU per span, parts | serve %.1f µs (receiver, NATS, collector, engine) | otelcol %.1f µs + engine %.1f µs | |\n",
		us(t.CPUPerSpan), us(c.CollectorCPUPerSpan), us(c.EngineCPUPerSpan))
	fmt.Fprintf(w, "| CPU per span, load generator (and row-count polling) in this process | %.1f µs | %.1f µs | |\n", us(t.ClientCPUPerSpan), us(c.LoadCPUPerSpan))
	fmt.Fprintf(w, "| peak RSS (goal <= 600 MiB): serve's process; otelcol + its engine | %.0f MiB | %.0f MiB (%.0f + %.0f) | %s |\n",
		t.PeakRSSMiB, c.PeakRSSMiB(), c.CollectorPeakRSSMiB, c.EnginePeakRSSMiB, ratio(t.PeakRSSMiB, c.PeakRSSMiB()))
	fmt.Fprintf(w, "| peak RSS of this process during the Collector's run (the load generator) | | %.0f MiB | |\n", c.LoadPeakRSSMiB)
}
