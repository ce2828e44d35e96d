// Package bench holds the suite's benchmarks that print tables for people:
// `tenantscope bench <name>` runs one, `make bench` runs them all. Every
// ratio in a table is measured in the same run, because these machines are
// noisy and absolute numbers from different runs do not compare.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/engine/chdb"
)

// EngineConfig configures the engine benchmark.
type EngineConfig struct {
	Dir      string // data directory (a fresh temporary one if empty)
	LibPath  string
	Rows     int           // rows per batch (default 100,000)
	Rounds   int           // batches per path (default 5)
	Clients  int           // concurrent clients for small queries (default 8)
	QueryFor time.Duration // how long to run small queries (default 5s)
}

// EngineResult is what the engine benchmark measured.
type EngineResult struct {
	Rows                 int
	HTTPSendRowsPerSec   float64 // clickhouse-go batch.Send through the HTTP interface
	HTTPAppendRowsPerSec float64 // the client's Append loop before Send
	InProcRowsPerSec     float64 // in-process streaming insert of the same Native block
	Ratio                float64 // HTTPSendRowsPerSec / InProcRowsPerSec
	ScanSeconds          float64 // SELECT of the 100k-row batch through clickhouse-go
	SmallQueriesPerSec   float64 // through the HTTP interface
	SmallInProcPerSec    float64 // the same queries on engine connections directly
	RSSAfterStartMiB     float64
	RSSAfterWorkloadMiB  float64
}

const benchDDL = `CREATE TABLE bench_events (
	tenant_id LowCardinality(String),
	ts DateTime64(3, 'UTC'),
	id UUID,
	service LowCardinality(String),
	action LowCardinality(String),
	actor String,
	seq UInt64,
	attrs Map(LowCardinality(String), String),
	payload String
) ENGINE = MergeTree ORDER BY (tenant_id, ts, id)`

type benchRow struct {
	tenant, service, action, actor, payload string
	ts                                      time.Time
	id                                      uuid.UUID
	seq                                     uint64
	attrs                                   map[string]string
}

func makeRows(n int) []benchRow {
	rows := make([]benchRow, n)
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		rows[i] = benchRow{
			tenant:  fmt.Sprintf("tenant-%02d", i%20),
			service: []string{"billing", "auth", "orders", "search"}[i%4],
			action:  []string{"created", "updated", "deleted"}[i%3],
			actor:   fmt.Sprintf("user-%d", i%997),
			payload: fmt.Sprintf(`{"order":%d,"amount":%d.%02d,"currency":"EUR","items":[1,2,3]}`, i, i%1000, i%100),
			ts:      base.Add(time.Duration(i) * time.Millisecond),
			id:      uuid.New(),
			seq:     uint64(i),
			attrs:   map[string]string{"region": "eu", "plan": []string{"free", "pro"}[i%2]},
		}
	}
	return rows
}

// nativeBlock encodes rows as one Native block (revision 0, what the
// engine's streaming insert reads) with clickhouse-go's codecs.
func nativeBlock(rows []benchRow) ([]byte, error) {
	b := proto.NewBlock()
	for _, c := range []struct{ name, typ string }{
		{"tenant_id", "LowCardinality(String)"}, {"ts", "DateTime64(3, 'UTC')"}, {"id", "UUID"},
		{"service", "LowCardinality(String)"}, {"action", "LowCardinality(String)"}, {"actor", "String"},
		{"seq", "UInt64"}, {"attrs", "Map(LowCardinality(String), String)"}, {"payload", "String"},
	} {
		if err := b.AddColumn(c.name, column.Type(c.typ)); err != nil {
			return nil, err
		}
	}
	for _, r := range rows {
		if err := b.Append(r.tenant, r.ts, r.id, r.service, r.action, r.actor, r.seq, r.attrs, r.payload); err != nil {
			return nil, err
		}
	}
	var buf chproto.Buffer
	if err := b.Encode(&buf, 0); err != nil {
		return nil, err
	}
	return buf.Buf, nil
}

// RunEngine runs the engine benchmark, printing progress to progress.
func RunEngine(ctx context.Context, cfg EngineConfig, progress io.Writer) (EngineResult, error) {
	if cfg.Rows == 0 {
		cfg.Rows = 100_000
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 5
	}
	if cfg.Clients == 0 {
		cfg.Clients = 8
	}
	if cfg.QueryFor == 0 {
		cfg.QueryFor = 5 * time.Second
	}
	res := EngineResult{Rows: cfg.Rows}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tenantscope-bench-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench engine: "+format+"\n", a...) }

	local, err := engine.StartLocal(engine.Config{Dir: cfg.Dir, LibPath: cfg.LibPath, Logger: zerolog.Nop()}, benchServerConfig(), "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer local.Close(context.Background()) //nolint:errcheck // benchmark teardown
	eng := local.Engine
	res.RSSAfterStartMiB = rssMiB()
	step("engine %s up, RSS %.0f MiB", eng.Version, res.RSSAfterStartMiB)

	conn, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.HTTP, Addr: []string{local.Addr}, Auth: clickhouse.Auth{Username: benchUser, Password: benchPassword}, MaxOpenConns: cfg.Clients})
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, benchDDL); err != nil {
		return res, err
	}
	rows := makeRows(cfg.Rows)
	block, err := nativeBlock(rows)
	if err != nil {
		return res, err
	}

	var httpSend, httpAppend, inproc time.Duration
	for round := range cfg.Rounds {
		step("round %d/%d: %d rows through HTTP, then in-process", round+1, cfg.Rounds, cfg.Rows)
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO bench_events")
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		for _, r := range rows {
			if err := batch.Append(r.tenant, r.ts, r.id, r.service, r.action, r.actor, r.seq, r.attrs, r.payload); err != nil {
				return res, err
			}
		}
		t1 := time.Now()
		if err := batch.Send(); err != nil {
			return res, err
		}
		httpSend += time.Since(t1)
		httpAppend += t1.Sub(t0)

		c, err := eng.Acquire(ctx, false)
		if err != nil {
			return res, err
		}
		t2 := time.Now()
		ins, err := c.InsertStream([]byte("INSERT INTO bench_events"), "Native", nil)
		if err == nil {
			err = ins.Append(block)
			if err == nil {
				_, err = ins.Done()
			}
			ins.Close()
		}
		inproc += time.Since(t2)
		eng.Release(c)
		if err != nil {
			return res, err
		}
	}
	total := float64(cfg.Rows * cfg.Rounds)
	res.HTTPSendRowsPerSec = total / httpSend.Seconds()
	res.HTTPAppendRowsPerSec = total / httpAppend.Seconds()
	res.InProcRowsPerSec = total / inproc.Seconds()
	res.Ratio = res.HTTPSendRowsPerSec / res.InProcRowsPerSec

	step("scanning %d rows", cfg.Rows)
	var scan time.Duration
	for range 3 {
		t0 := time.Now()
		r, err := conn.Query(ctx, "SELECT * FROM bench_events LIMIT {n:UInt64}", clickhouse.Named("n", strconv.Itoa(cfg.Rows)))
		if err != nil {
			return res, err
		}
		n := 0
		for r.Next() {
			n++
		}
		if err := r.Err(); err != nil {
			return res, err
		}
		r.Close()
		if n != cfg.Rows {
			return res, fmt.Errorf("scan read %d rows, want %d", n, cfg.Rows)
		}
		scan += time.Since(t0)
	}
	res.ScanSeconds = scan.Seconds() / 3

	step("small parameterised queries from %d clients for %s, through HTTP then in-process", cfg.Clients, cfg.QueryFor)
	const small = "SELECT count() FROM bench_events WHERE tenant_id = {t:String} AND ts = {ts:DateTime64(3, 'UTC')}"
	base := rows[0].ts
	arg := func(i int) (string, string) {
		return fmt.Sprintf("tenant-%02d", i%20), base.Add(time.Duration(i%cfg.Rows) * time.Millisecond).Format("2006-01-02 15:04:05.000")
	}
	n, err := hammer(cfg.Clients, cfg.QueryFor, func(i int) error {
		t, ts := arg(i)
		var n uint64
		return conn.QueryRow(ctx, small, clickhouse.Named("t", t), clickhouse.Named("ts", ts)).Scan(&n)
	})
	if err != nil {
		return res, err
	}
	res.SmallQueriesPerSec = n
	n, err = hammer(cfg.Clients, cfg.QueryFor, func(i int) error {
		t, ts := arg(i)
		c, err := eng.Acquire(ctx, true)
		if err != nil {
			return err
		}
		defer eng.Release(c)
		_, err = c.Query([]byte(small), "Native", []chdb.Param{{Name: "t", Value: t}, {Name: "ts", Value: ts}})
		return err
	})
	if err != nil {
		return res, err
	}
	res.SmallInProcPerSec = n
	res.RSSAfterWorkloadMiB = rssMiB()
	return res, nil
}

// hammer runs fn from clients goroutines for d and returns calls per second.
func hammer(clients int, d time.Duration, fn func(i int) error) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c * 7919; time.Now().Before(deadline); i++ {
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds(), firstErr
}

// Table prints the result as a Markdown table.
func (r EngineResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| engine (%d-row batches, 9 columns) | value |\n|---|---|\n", r.Rows)
	fmt.Fprintf(w, "| HTTP interface insert (clickhouse-go batch.Send) | %.2f M rows/s |\n", r.HTTPSendRowsPerSec/1e6)
	fmt.Fprintf(w, "| in-process streaming insert, Native, same rows | %.2f M rows/s |\n", r.InProcRowsPerSec/1e6)
	fmt.Fprintf(w, "| ratio HTTP / in-process (goal >= 0.50) | %.2f |\n", r.Ratio)
	fmt.Fprintf(w, "| client-side Append loop (not the server) | %.2f M rows/s |\n", r.HTTPAppendRowsPerSec/1e6)
	fmt.Fprintf(w, "| %d-row scan through clickhouse-go | %.0f ms |\n", r.Rows, r.ScanSeconds*1000)
	fmt.Fprintf(w, "| small parameterised queries, 8 clients, HTTP | %.0f /s |\n", r.SmallQueriesPerSec)
	fmt.Fprintf(w, "| same queries in-process (no HTTP) | %.0f /s |\n", r.SmallInProcPerSec)
	fmt.Fprintf(w, "| ratio HTTP / in-process | %.2f |\n", r.SmallQueriesPerSec/r.SmallInProcPerSec)
	fmt.Fprintf(w, "| RSS after start (goal <= 300 MiB) | %.0f MiB |\n", r.RSSAfterStartMiB)
	fmt.Fprintf(w, "| RSS after the workload | %.0f MiB |\n", r.RSSAfterWorkloadMiB)
}

// rssMiB is this process's resident set (0 if /proc cannot say).
func rssMiB() float64 {
	mib, err := procRSSMiB(os.Getpid())
	if err != nil {
		return 0
	}
	return mib
}
