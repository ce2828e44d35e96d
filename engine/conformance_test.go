package engine_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

func TestMain(m *testing.M) {
	if os.Getenv("TENANTSCOPE_HELPER") != "" {
		os.Exit(helperProcess())
	}
	code := m.Run()
	enginetest.Cleanup()
	os.Exit(code)
}

var compressions = []struct {
	name   string
	method clickhouse.CompressionMethod
}{
	{"none", clickhouse.CompressionNone},
	{"lz4", clickhouse.CompressionLZ4},
	{"zstd", clickhouse.CompressionZSTD},
	{"gzip", clickhouse.CompressionGZIP},
	{"deflate", clickhouse.CompressionDeflate},
	{"br", clickhouse.CompressionBrotli},
}

const allTypesDDL = `CREATE TABLE all_types (
	id UInt64,
	u UUID,
	t3 DateTime64(3, 'UTC'),
	t9 DateTime64(9, 'UTC'),
	lc LowCardinality(String),
	attrs Map(LowCardinality(String), String),
	tags Array(String),
	maybe Nullable(String),
	e Enum8('a' = 1, 'b' = 2),
	d Decimal(18, 4),
	fs FixedString(8),
	ip4 IPv4,
	ip6 IPv6,
	ok Bool,
	s String
) ENGINE = MergeTree ORDER BY id`

type allTypesRow struct {
	ID    uint64            `ch:"id"`
	U     uuid.UUID         `ch:"u"`
	T3    time.Time         `ch:"t3"`
	T9    time.Time         `ch:"t9"`
	LC    string            `ch:"lc"`
	Attrs map[string]string `ch:"attrs"`
	Tags  []string          `ch:"tags"`
	Maybe *string           `ch:"maybe"`
	E     string            `ch:"e"`
	D     decimal.Decimal   `ch:"d"`
	FS    string            `ch:"fs"`
	IP4   net.IP            `ch:"ip4"`
	IP6   net.IP            `ch:"ip6"`
	OK    bool              `ch:"ok"`
	S     string            `ch:"s"`
}

func sampleRow(i int) allTypesRow {
	var maybe *string
	if i%3 != 0 {
		v := fmt.Sprintf("m%d", i)
		maybe = &v
	}
	e := "a"
	if i%2 == 1 {
		e = "b"
	}
	return allTypesRow{
		ID:    uint64(i),
		U:     uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))),
		T3:    time.Date(2026, 11, 27, 10, 0, 0, 123_000_000, time.UTC).Add(time.Duration(i) * time.Second),
		T9:    time.Date(2026, 11, 27, 10, 0, 0, 123_456_789, time.UTC).Add(time.Duration(i) * time.Millisecond),
		LC:    []string{"info", "warn", "error"}[i%3],
		Attrs: map[string]string{"k": fmt.Sprint(i), "tenant": "acme"},
		Tags:  []string{"x", fmt.Sprint(i)},
		Maybe: maybe,
		E:     e,
		D:     decimal.New(int64(i)*12345, -4),
		FS:    fmt.Sprintf("%08d", i),
		IP4:   net.IPv4(10, 0, byte(i>>8), byte(i)).To4(),
		IP6:   net.ParseIP(fmt.Sprintf("2001:db8::%x", i)),
		OK:    i%2 == 0,
		// NUL bytes and invalid UTF-8 must survive the round trip.
		S: fmt.Sprintf("nul\x00here\xff\xfe-%d", i),
	}
}

func TestClickHouseGoAllTypesEveryCompression(t *testing.T) {
	for _, c := range compressions {
		t.Run(c.name, func(t *testing.T) {
			db := enginetest.New(t)
			conn := db.Conn(t, func(o *clickhouse.Options) { o.Compression = &clickhouse.Compression{Method: c.method} })
			ctx := context.Background()
			require.NoError(t, conn.Ping(ctx))
			require.NoError(t, conn.Exec(ctx, allTypesDDL))
			batch, err := conn.PrepareBatch(ctx, "INSERT INTO all_types")
			require.NoError(t, err)
			const n = 2000
			for i := range n {
				require.NoError(t, batch.AppendStruct(ptr(sampleRow(i))))
			}
			require.NoError(t, batch.Send())

			var rows []allTypesRow
			require.NoError(t, conn.Select(ctx, &rows, "SELECT * FROM all_types ORDER BY id"))
			require.Len(t, rows, n)
			for _, i := range []int{0, 1, 2, 1234, n - 1} {
				want, got := sampleRow(i), rows[i]
				require.Equal(t, want.ID, got.ID)
				require.Equal(t, want.U, got.U)
				require.True(t, want.T3.Equal(got.T3), "t3 %v != %v", want.T3, got.T3)
				require.True(t, want.T9.Equal(got.T9), "t9 %v != %v", want.T9, got.T9)
				require.Equal(t, want.LC, got.LC)
				require.Equal(t, want.Attrs, got.Attrs)
				require.Equal(t, want.Tags, got.Tags)
				require.Equal(t, want.Maybe, got.Maybe)
				require.Equal(t, want.E, got.E)
				require.True(t, want.D.Equal(got.D), "decimal %v != %v", want.D, got.D)
				require.Equal(t, want.FS, got.FS)
				require.True(t, want.IP4.Equal(got.IP4))
				require.True(t, want.IP6.Equal(got.IP6))
				require.Equal(t, want.OK, got.OK)
				require.Equal(t, want.S, got.S)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestParametersAndErrors(t *testing.T) {
	db := enginetest.New(t)
	conn := db.Conn(t)
	ctx := context.Background()

	var got uint64
	require.NoError(t, conn.QueryRow(clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters{"x": "41"})),
		"SELECT {x:UInt64} + 1").Scan(&got))
	require.Equal(t, uint64(42), got)

	var s string
	require.NoError(t, conn.QueryRow(ctx, "SELECT concat(?, ?)", "a'b", "c\\d").Scan(&s))
	require.Equal(t, "a'bc\\d", s)

	require.NoError(t, conn.QueryRow(ctx, "SELECT @name", clickhouse.Named("name", "hostile'); DROP TABLE x; --")).Scan(&s))
	require.Equal(t, "hostile'); DROP TABLE x; --", s)

	err := conn.Exec(ctx, "SELECT * FROM no_such_table")
	var ex *clickhouse.Exception
	require.True(t, errors.As(err, &ex), "want *clickhouse.Exception, got %T %v", err, err)
	require.Equal(t, int32(60), ex.Code)

	err = conn.Exec(ctx, "SELEC 1")
	require.True(t, errors.As(err, &ex), "got %v", err)
	require.Equal(t, int32(62), ex.Code)

	// A setting the engine does not know is its error, not a crash.
	err = conn.Exec(clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"no_such_setting": 1})), "SELECT 1")
	require.True(t, errors.As(err, &ex), "got %v", err)
	require.Equal(t, int32(115), ex.Code)

	// Settings do not leak from one request to the next on pooled connections.
	var mt string
	require.NoError(t, conn.QueryRow(clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_threads": 1})),
		"SELECT toString(getSetting('max_threads'))").Scan(&mt))
	require.Equal(t, "1", mt)
	for range 8 {
		require.NoError(t, conn.QueryRow(ctx, "SELECT toString(getSetting('max_threads'))").Scan(&mt))
		require.NotEqual(t, "1", mt)
	}
}

func TestDatabaseSQL(t *testing.T) {
	db := enginetest.New(t)
	sdb := clickhouse.OpenDB(db.Options())
	defer sdb.Close()
	ctx := context.Background()
	_, err := sdb.ExecContext(ctx, "CREATE TABLE kv (k String, v Int64) ENGINE = MergeTree ORDER BY k")
	require.NoError(t, err)
	tx, err := sdb.Begin()
	require.NoError(t, err)
	stmt, err := tx.Prepare("INSERT INTO kv")
	require.NoError(t, err)
	for i := range 100 {
		_, err := stmt.Exec(fmt.Sprintf("k%03d", i), int64(i)*-3)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	var n int64
	var sum int64
	require.NoError(t, sdb.QueryRowContext(ctx, "SELECT count(), sum(v) FROM kv WHERE k >= ?", "k050").Scan(&n, &sum))
	require.Equal(t, int64(50), n)
	require.Equal(t, int64(-3*(50+99)*50/2), sum)
	rows, err := sdb.QueryContext(ctx, "SELECT k FROM kv ORDER BY k LIMIT 3")
	require.NoError(t, err)
	var ks []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		ks = append(ks, k)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"k000", "k001", "k002"}, ks)
	err = sdb.QueryRowContext(ctx, "SELECT * FROM nope").Scan(&n)
	var ex *clickhouse.Exception
	require.True(t, errors.As(err, &ex), "got %v", err)
	require.Equal(t, int32(60), ex.Code)
	require.ErrorIs(t, sdb.QueryRowContext(ctx, "SELECT 1 WHERE 0").Scan(&n), sql.ErrNoRows)
}

func TestLargeResultStreamsAndConcurrentClients(t *testing.T) {
	db := enginetest.New(t)
	conn := db.Conn(t, func(o *clickhouse.Options) { o.MaxOpenConns = 8 })
	ctx := context.Background()
	// 10 million rows: the count and sum prove every block arrived, in order.
	rows, err := conn.Query(ctx, "SELECT number FROM system.numbers LIMIT 10000000")
	require.NoError(t, err)
	var n, sum, prev uint64
	for rows.Next() {
		var v uint64
		require.NoError(t, rows.Scan(&v))
		if n > 0 {
			require.Equal(t, prev+1, v)
		}
		prev = v
		n++
		sum += v
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.Equal(t, uint64(10_000_000), n)
	require.Equal(t, new(big.Int).SetUint64(49999995000000).Uint64(), sum)

	require.NoError(t, conn.Exec(ctx, "CREATE TABLE c (client UInt8, i UInt32) ENGINE = MergeTree ORDER BY (client, i)"))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for client := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 5 {
				b, err := conn.PrepareBatch(ctx, "INSERT INTO c")
				if err != nil {
					errs <- err
					return
				}
				for i := range 1000 {
					if err := b.Append(uint8(client), uint32(round*1000+i)); err != nil {
						errs <- err
						return
					}
				}
				if err := b.Send(); err != nil {
					errs <- err
					return
				}
				var cnt uint64
				if err := conn.QueryRow(ctx, "SELECT count() FROM c WHERE client = ?", uint8(client)).Scan(&cnt); err != nil {
					errs <- err
					return
				}
				if cnt != uint64((round+1)*1000) {
					errs <- fmt.Errorf("client %d round %d: count %d", client, round, cnt)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var total uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM c").Scan(&total))
	require.Equal(t, uint64(40000), total)
}

func TestCancelStopsQueryInEngine(t *testing.T) {
	db := enginetest.New(t)
	conn := db.Conn(t)
	heavy := "SELECT sum(cityHash64(number)) FROM numbers(100000000000)"

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var s uint64
	err := conn.QueryRow(ctx, heavy).Scan(&s)
	require.Error(t, err)
	requireNothingRunning(t, db)

	// max_execution_time is enforced by the engine itself.
	start := time.Now()
	err = conn.QueryRow(clickhouse.Context(context.Background(), clickhouse.WithSettings(clickhouse.Settings{"max_execution_time": 1})), heavy).Scan(&s)
	var ex *clickhouse.Exception
	require.True(t, errors.As(err, &ex), "got %v", err)
	require.Equal(t, int32(159), ex.Code) // TIMEOUT_EXCEEDED
	require.Less(t, time.Since(start), 30*time.Second)
	requireNothingRunning(t, db)
}

func requireNothingRunning(t *testing.T, db *enginetest.DB) {
	t.Helper()
	assertEventually := require.Eventually
	if os.Getenv("DBG") != "" {
		assertEventually = func(t require.TestingT, f func() bool, a, b time.Duration, m ...any) {
			if !assertEventuallyOK(f, a, b) {
				t.Errorf("%v", m)
			}
		}
	}
	assertEventually(t, func() bool {
		n, err := db.Engine.Engine.Running()
		return err == nil && n == 0
	}, 20*time.Second, 50*time.Millisecond, "queries left in system.processes")
	if t.Failed() {
		r, err := db.Engine.Engine.Control("SELECT query, elapsed, is_cancelled FROM system.processes")
		t.Logf("processes: %s %v", r.Data, err)
	}
}

func TestMidStreamErrorIsTaggedException(t *testing.T) {
	db := enginetest.New(t)
	conn := db.Conn(t)
	// Rows 0..49 are sent before row 50 fails, so the error can only travel
	// as the tagged exception block after the data.
	const sql = "SELECT number, throwIf(number = 50, 'boom mid-stream') + sleepEachRow(0.01) FROM numbers(100) SETTINGS max_block_size = 10"
	rows, err := conn.Query(context.Background(), sql)
	require.NoError(t, err, "the response must have started before the error")
	seen := 0
	for rows.Next() {
		seen++
	}
	err = rows.Err()
	_ = rows.Close()
	var ex *clickhouse.Exception
	require.True(t, errors.As(err, &ex), "got %T %v", err, err)
	require.Equal(t, int32(395), ex.Code)
	require.Contains(t, ex.Message, "boom mid-stream")
	require.Greater(t, seen, 0)

	r := do(t, "POST", q(db), strings.NewReader(sql), nil)
	require.Equal(t, 200, r.status)
	tag := r.header.Get("X-ClickHouse-Exception-Tag")
	require.Len(t, tag, 16)
	require.True(t, strings.HasPrefix(r.body, "0\t0\n"), r.body)
	require.Contains(t, r.body, "\r\n__exception__\r\n"+tag+"\r\nCode: 395. DB::Exception: ")
	require.True(t, strings.HasSuffix(r.body, " "+tag+"\r\n__exception__\r\n"), r.body)
}

// helperProcess opens the engine on TENANTSCOPE_HELPER_DIR in a child
// process, so close/reopen is tested against a real process boundary.
func helperProcess() int {
	dir := os.Getenv("TENANTSCOPE_HELPER_DIR")
	if os.Getenv("TENANTSCOPE_HELPER") == "allocator" {
		// Opens the engine with the allocator options given, nothing else.
		e, err := engine.Open(engine.Config{Dir: dir, Allocator: os.Getenv("TENANTSCOPE_HELPER_ALLOCATOR")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("opened")
		if err := e.Close(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		return 0
	}
	e, err := enginetest.Start(dir, engineServerConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.HTTP, Addr: []string{e.Addr}, Auth: clickhouse.Auth{Username: e.User, Password: e.Password}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	var out string
	switch os.Getenv("TENANTSCOPE_HELPER") {
	case "write":
		err = conn.Exec(ctx, "CREATE TABLE persist (i UInt32, s String) ENGINE = MergeTree ORDER BY i")
		if err == nil {
			var b interface {
				Append(...any) error
				Send() error
			}
			b, err = conn.PrepareBatch(ctx, "INSERT INTO persist")
			for i := 0; err == nil && i < 5000; i++ {
				err = b.Append(uint32(i), strings.Repeat("x", i%17))
			}
			if err == nil {
				err = b.Send()
			}
		}
		out = "written"
	case "closekill":
		// A query that would run for minutes; Close with a 1s deadline must
		// kill it, close every connection and return.
		before := runtime.NumGoroutine()
		errc := make(chan error, 1)
		go func() {
			var n uint64
			errc <- conn.QueryRow(ctx, "SELECT sum(cityHash64(number)) FROM numbers(1000000000000)").Scan(&n)
		}()
		time.Sleep(500 * time.Millisecond)
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err = e.Engine.Close(cctx)
		cancel()
		took := time.Since(start)
		qerr := <-errc
		_ = conn.Close()
		if stopErr := e.Stop(); err == nil {
			err = stopErr
		}
		if err == nil && qerr == nil {
			err = errors.New("the long query finished instead of being killed")
		}
		time.Sleep(200 * time.Millisecond)
		out = fmt.Sprintf("closed in %v, goroutines %d -> %d", took.Round(100*time.Millisecond), before, runtime.NumGoroutine())
		if took > 15*time.Second {
			err = fmt.Errorf("close took %v", took)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(out)
		return 0
	case "read":
		var n, sum uint64
		err = conn.QueryRow(ctx, "SELECT count(), sum(i) FROM persist").Scan(&n, &sum)
		out = fmt.Sprintf("%d %d", n, sum)
	}
	_ = conn.Close()
	if stopErr := e.Stop(); err == nil {
		err = stopErr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(out)
	return 0
}

func assertEventuallyOK(f func() bool, wait, tick time.Duration) bool {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(tick)
	}
	return false
}
