package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/tenantscope/tenantscope/bench"
	"github.com/tenantscope/tenantscope/engine/chdb"
)

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ingest" {
		return runBenchIngest(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "sdk" {
		return runBenchSDK(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "audit" {
		return runBenchAudit(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "erase" {
		fs := flag.NewFlagSet("bench erase", flag.ContinueOnError)
		fs.SetOutput(stderr)
		lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
		rows := fs.Int("rows", 10_000_000, "rows of the tenant")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		res, err := bench.RunErase(ctx, bench.EraseConfig{LibPath: *lib, Rows: *rows}, stderr)
		return printTable(stdout, res, err)
	}
	if len(args) > 0 && args[0] == "move" {
		fs := flag.NewFlagSet("bench move", flag.ContinueOnError)
		fs.SetOutput(stderr)
		lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
		rows := fs.Int("rows", 10_000_000, "rows of the moved tenant")
		two := fs.Bool("two-servers", false, "move to a second engine (this binary's 'engine' command), which reads the rows over HTTP")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		mc := bench.MoveConfig{LibPath: *lib, Rows: *rows}
		if *two {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			mc.OtherServer = self
		}
		res, err := bench.RunMove(ctx, mc, stderr)
		return printTable(stdout, res, err)
	}
	if len(args) > 0 && args[0] == "cost" {
		return runBenchCost(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "otlp" {
		fs := flag.NewFlagSet("bench otlp", flag.ContinueOnError)
		fs.SetOutput(stderr)
		lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
		workers := fs.Int("workers", 4, "concurrent senders, each with its own stock otlptracehttp exporter")
		requests := fs.Int("requests", 100, "requests per worker")
		spans := fs.Int("spans", 512, "spans per request")
		gz := fs.Bool("gzip", false, "gzip the requests")
		peer := fs.String("peer", "", "also feed the same load to a peer and print both side by side: otelcol (the OpenTelemetry Collector built from bench/otelcol, storing in a 'tenantscope engine' child)")
		peerDir := fs.String("peer-dir", "", "the Collector's Go module (default: bench/otelcol of the repository around the working directory)")
		peerBin := fs.String("peer-bin", "", "where the built Collector is kept; rebuilt when missing or older than its module (default: <cache>/otelcol-bench/otelcol-bench)")
		peerCompress := fs.String("peer-compress", "none", "the ClickHouse exporter's compress setting: none (as the suite writes to its engine), lz4 (the exporter's default), zstd, gzip, ...")
		rounds := fs.Int("rounds", 1, "with --peer: rounds of both sides, alternating which goes first; prints each round and the median of each ratio")
		sf := addServeFlags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *rounds < 1 {
			return fmt.Errorf("%w: --rounds %d: at least 1", errUsage, *rounds)
		}
		load := bench.OTLPConfig{LibPath: *lib, Workers: *workers, Requests: *requests, SpansPerRequest: *spans, Gzip: *gz,
			ServeCPUProfile: *sf.cpuProfile, HeapProfile: *sf.heapProfile, ServeEnv: sf.env()}
		if *peer == "" {
			res, err := bench.RunOTLP(ctx, load, stderr)
			return printTable(stdout, res, err)
		}
		if *peer != "otelcol" {
			return fmt.Errorf("%w: --peer %q: the only peer is otelcol", errUsage, *peer)
		}
		return runBenchOTelCol(ctx, load, *peerDir, *peerBin, *peerCompress, *rounds, getenv, stdout, stderr)
	}
	if len(args) == 0 || args[0] != "engine" {
		return fmt.Errorf("%w: tenantscope bench engine|ingest|sdk|otlp|audit|cost|erase|move [flags]", errUsage)
	}
	fs := flag.NewFlagSet("bench engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
	rows := fs.Int("rows", 100_000, "rows per batch")
	rounds := fs.Int("rounds", 5, "batches per insert path")
	clients := fs.Int("clients", 8, "concurrent clients for small queries")
	queryFor := fs.Duration("query-for", 5*time.Second, "how long to run small queries")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	res, err := bench.RunEngine(ctx, bench.EngineConfig{LibPath: *lib, Rows: *rows, Rounds: *rounds, Clients: *clients, QueryFor: *queryFor}, stderr)
	return printTable(stdout, res, err)
}

func runBenchIngest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
	tenants := fs.Int("tenants", 4, "tenants publishing")
	events := fs.Int("events", 50_000, "events per tenant")
	latencyFor := fs.Duration("latency-for", 5*time.Second, "how long the half-load latency phase publishes")
	batched := fs.Int("batched-events", 250_000, "events per tenant published with the SDK's batches (negative: skip)")
	batchSize := fs.Int("batch-size", 0, "the collector's batch size in messages (0: its default, as serve runs it)")
	batchAge := fs.Duration("batch-age", 0, "the collector's longest wait for a batch to fill (0: its default)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stop, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	res, err := bench.RunIngest(ctx, bench.IngestConfig{LibPath: *lib, Tenants: *tenants, Events: *events, LatencyFor: *latencyFor, BatchedEvents: *batched,
		BatchSize: *batchSize, BatchAge: *batchAge}, stderr)
	return printTable(stdout, res, err)
}

func runBenchSDK(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sdk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
	tenants := fs.Int("tenants", 4, "tenants publishing, each with its own SDK publisher")
	events := fs.Int("events", 250_000, "events per tenant")
	sf := addServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := bench.RunSDK(ctx, bench.SDKConfig{LibPath: *lib, Tenants: *tenants, Events: *events,
		ServeCPUProfile: *sf.cpuProfile, HeapProfile: *sf.heapProfile, ServeEnv: sf.env()}, stderr)
	return printTable(stdout, res, err)
}

// printTable prints a benchmark's table to w, unless it failed.
func printTable(w io.Writer, res interface{ Table(io.Writer) }, err error) error {
	if err != nil {
		return err
	}
	res.Table(w)
	return nil
}

// serveFlags are the flags of the benchmarks that run serve in a child
// process: its profiles and its Go memory settings.
type serveFlags struct {
	cpuProfile, heapProfile, memLimit, gogc *string
}

// addServeFlags registers them on fs.
func addServeFlags(fs *flag.FlagSet) serveFlags {
	return serveFlags{
		cpuProfile:  fs.String("cpuprofile", "", "write a CPU profile of serve (the suite's child process) to this file"),
		heapProfile: fs.String("heapprofile", "", "write serve's heap profile at its highest heap in use during the load to this file"),
		memLimit:    fs.String("gomemlimit", "", "serve's GOMEMLIMIT, e.g. 512MiB (default: its memory.go_limit)"),
		gogc:        fs.String("gogc", "", "serve's GOGC, e.g. 50 (default: its memory.go_gc_percent)"),
	}
}

// env is serve's environment for --gomemlimit and --gogc: nothing for an
// empty one (serve's own settings apply).
func (f serveFlags) env() []string {
	var env []string
	if *f.memLimit != "" {
		env = append(env, "GOMEMLIMIT="+*f.memLimit)
	}
	if *f.gogc != "" {
		env = append(env, "GOGC="+*f.gogc)
	}
	return env
}

func runBenchAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
	records := fs.Int("records", 10_000_000, "audit records across all tenants")
	tenants := fs.Int("tenants", 1000, "tenants")
	queries := fs.Int("queries", 300, "page loads measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := bench.RunAudit(ctx, bench.AuditConfig{LibPath: *lib, Records: *records, Tenants: *tenants, Queries: *queries}, stderr)
	return printTable(stdout, res, err)
}

func runBenchCost(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench cost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb")
	events := fs.Int("events", 100_000_000, "events in the month, across all tenants")
	spans := fs.Int("spans", 10_000_000, "server spans in the month")
	tenants := fs.Int("tenants", 1000, "tenants")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := bench.RunCost(ctx, bench.CostConfig{LibPath: *lib, Events: *events, Spans: *spans, Tenants: *tenants}, stderr)
	return printTable(stdout, res, err)
}

// runBenchOTelCol runs the OpenTelemetry Collector on the load, then the
// suite on the same load, and prints both side by side; with rounds > 1 it
// does so again, the suite first in every second round, and prints the
// median of each ratio.
func runBenchOTelCol(ctx context.Context, load bench.OTLPConfig, dir, binary, compress string, rounds int, getenv func(string) string, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if binary == "" {
		binary = filepath.Join(cacheDir(getenv), "otelcol-bench", "otelcol-bench")
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if dir, err = bench.FindOTelColDir(wd); err != nil {
			return err
		}
	}
	if err := bench.BuildOTelCol(ctx, dir, binary, stderr); err != nil {
		return err
	}
	var all bench.Rounds
	for r := range rounds {
		var round bench.SideBySide
		round.SuiteFirst = r%2 == 1
		otelcol := func() (err error) {
			round.Collector, err = bench.RunOTelCol(ctx, bench.OTelColConfig{Load: load, Self: self, Binary: binary, Compress: compress}, stderr)
			if err != nil {
				return fmt.Errorf("otelcol: %w", err)
			}
			return nil
		}
		suite := func() (err error) {
			round.Suite, err = bench.RunOTLP(ctx, load, stderr)
			if err != nil {
				return fmt.Errorf("tenantscope: %w", err)
			}
			return nil
		}
		first, second := otelcol, suite
		if round.SuiteFirst {
			first, second = suite, otelcol
		}
		if rounds > 1 {
			fmt.Fprintf(stderr, "bench otlp: round %d of %d\n", r+1, rounds)
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		round.Table(stdout)
		all = append(all, round)
	}
	if rounds > 1 {
		fmt.Fprintln(stdout)
		all.Table(stdout)
	}
	return nil
}

// cacheDir is the suite's cache directory, where 'make chdb' puts the
// engine library too: $TENANTSCOPE_CACHE, else $XDG_CACHE_HOME/tenantscope,
// else ~/.cache/tenantscope (as chdb.DefaultLibraryPath).
func cacheDir(getenv func(string) string) string {
	if c := getenv("TENANTSCOPE_CACHE"); c != "" {
		return c
	}
	base := getenv("XDG_CACHE_HOME")
	if base == "" {
		home := getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir() //nolint:errcheck // an empty home gives a relative path, which still works
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "tenantscope")
}

// startCPUProfile profiles the Go side of a benchmark into path (nothing
// when empty); the engine's own threads are not in it.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
