package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// MoveConfig sizes the region move benchmark.
type MoveConfig struct {
	LibPath string
	Dir     string
	Rows    int // events, logs and spans of the moved tenant (half, a quarter, a quarter)
	// OtherServer, when set, is the tenantscope binary: the destination
	// region is then a second engine ("tenantscope engine") that reads the
	// rows over HTTP, instead of another database of the same engine.
	OtherServer string
}

// MoveResult is what it measured.
type MoveResult struct {
	Rows, OtherRows int
	Servers         int // 1: regions in one engine; 2: on two servers
	LoadSeconds     float64
	// RawCopy is the engine alone copying the tenant's rows of the three
	// big tables to another database (INSERT … SELECT), the floor for a move.
	RawCopy time.Duration
	// Move is the whole job: pause, copy and verify every table, switch,
	// delete at the source, verify empty, sign.
	Move   time.Duration
	Tables int
	State  string
}

// RunMove stores cfg.Rows rows of tenant acme (and a tenth as many of
// globex) in region "from", times the engine copying acme's rows to a
// scratch database, then times moving acme to region "to".
func RunMove(ctx context.Context, cfg MoveConfig, progress io.Writer) (MoveResult, error) {
	if cfg.Rows == 0 {
		cfg.Rows = 10_000_000
	}
	res := MoveResult{Rows: cfg.Rows, OtherRows: cfg.Rows / 10, Servers: 1}
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench move: "+format+"\n", a...) }
	stores, addr, stop, err := migratedDatabases(ctx, cfg.Dir, cfg.LibPath, "move", "bench_from", "bench_to", "bench_raw")
	if err != nil {
		return res, err
	}
	defer stop()
	st := stores["bench_from"]
	to := config.Region{Name: "to", Database: "bench_to"}
	if cfg.OtherServer != "" {
		res.Servers = 2
		other, stopOther, err := otherServer(ctx, cfg.OtherServer, cfg.LibPath, addr)
		if err != nil {
			return res, err
		}
		defer stopOther()
		for _, db := range []string{"bench_to", "bench_raw"} {
			s, err := openMigrated(ctx, other, db)
			if err != nil {
				return res, err
			}
			defer s.Close() //nolint:errcheck // benchmark teardown
			stores[db] = s
		}
		to.DSN = benchDSN(other)
		step("destination: a second engine at %s", other)
	}
	t0 := time.Now()
	for _, tenant := range []struct {
		id string
		n  int
	}{{"acme", cfg.Rows}, {"globex", res.OtherRows}} {
		for _, q := range []struct {
			name, sql string
			share     int
		}{
			{"events", `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
				SELECT ?, 'crm', 'updated', now64(3) - toIntervalSecond(number % 5000000), generateUUIDv4(number),
					concat('user-', toString(number % 100000)), 'e', 1, 'plan=pro', 90 FROM numbers(?)`, 2},
			{"logs", `INSERT INTO logs (tenant_id, service, time, log_id, severity_text, severity_number, body, attributes, retention_days)
				SELECT ?, 'crm', now64(9) - toIntervalSecond(number % 2000000), generateUUIDv4(number), 'INFO', 9, 'a log line',
					map('user_id', concat('user-', toString(number % 100000))), 30 FROM numbers(?)`, 4},
			{"spans", `INSERT INTO spans (tenant_id, service, name, start_time, trace_id, span_id, kind, duration_ns, status_code, attributes, retention_days)
				SELECT ?, 'crm', 'GET /', now64(9) - toIntervalSecond(number % 1000000), hex(number), hex(number + 1), 'server', 1000, 'ok',
					map('user_id', concat('user-', toString(number % 100000))), 14 FROM numbers(?)`, 4},
		} {
			if err := st.Exec(ctx, q.sql, tenant.id, tenant.n/q.share); err != nil {
				return res, fmt.Errorf("load %s: %w", q.name, err)
			}
			step("loaded %d %s of %s", tenant.n/q.share, q.name, tenant.id)
		}
	}
	res.LoadSeconds = time.Since(t0).Seconds()

	settle(ctx, st, step)
	t1 := time.Now()
	for _, table := range []string{"events", "logs", "spans"} {
		from := "bench_from." + table
		if cfg.OtherServer != "" {
			from = "url('http://" + addr + "/?database=bench_from&query=SELECT+*+FROM+" + table + "+WHERE+tenant_id+%3D+%27acme%27+FORMAT+Native', 'Native', headers('X-ClickHouse-User' = '" + benchUser + "', 'X-ClickHouse-Key' = '" + benchPassword + "'))"
		}
		if err := stores["bench_raw"].Exec(ctx, "INSERT INTO bench_raw."+table+" SELECT * FROM "+from+" WHERE tenant_id = 'acme'"); err != nil {
			return res, fmt.Errorf("raw copy of %s: %w", table, err)
		}
	}
	res.RawCopy = time.Since(t1)
	step("the engine alone copied acme's rows in %s", res.RawCopy.Round(time.Millisecond))

	suite := config.Default()
	suite.Regions = []config.Region{{Name: "from", Database: "bench_from"}, to}
	suite.Tenants = []config.Tenant{{ID: "acme", Region: "from"}, {ID: "globex", Region: "from"}}
	suite.ClickHouse.User, suite.ClickHouse.Password = benchUser, benchPassword
	skey, _, err := auditlog.GenerateKey()
	if err != nil {
		return res, err
	}
	svc := retention.New(suite, placement.New(), map[string]*chstore.Store{"from": st, "to": stores["bench_to"]}, nil, nil, skey, zerolog.Nop())
	svc.EngineAddr = addr
	settle(ctx, st, step)
	t2 := time.Now()
	m, err := svc.BeginMove(ctx, "acme", "to", auditlog.Actor{Type: "user", ID: "bench"}, "benchmark")
	if err != nil {
		return res, err
	}
	m, err = svc.RunMove(ctx, m, func(s, table string, done, total int) {
		if table != "" {
			step("[%d/%d] %s %s (%s)", min(done+1, total), total, s, table, time.Since(t2).Round(time.Millisecond))
		}
	})
	res.Move = time.Since(t2)
	res.Tables, res.State = len(m.Tables), m.State
	if err != nil {
		return res, err
	}
	step("moved in %s", res.Move.Round(time.Millisecond))
	return res, nil
}

// settle waits (at most two minutes) for background merges to finish, so
// the step timed next does not share the CPUs with them.
func settle(ctx context.Context, st *chstore.Store, step func(string, ...any)) {
	t0 := time.Now()
	for time.Since(t0) < 2*time.Minute {
		var n uint64
		if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM system.merges"); err != nil || n == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	step("merges settled after %s", time.Since(t0).Round(100*time.Millisecond))
}

// Table prints the result as a Markdown table.
func (r MoveResult) Table(w io.Writer) {
	where := "another database of the same engine"
	copyHow := "INSERT … SELECT"
	if r.Servers == 2 {
		where, copyHow = "a second server, reading over HTTP", "INSERT … SELECT FROM url(…, Native) on the destination"
	}
	fmt.Fprintf(w, "| region move of one tenant (%d rows; %d rows of another tenant stay) to %s | value |\n|---|---|\n", r.Rows, r.OtherRows, where)
	fmt.Fprintf(w, "| load | %.0f s |\n", r.LoadSeconds)
	fmt.Fprintf(w, "| the engine alone copying the rows of events, logs, spans (%s) | %.1f s |\n", copyHow, r.RawCopy.Seconds())
	fmt.Fprintf(w, "| the move: pause, copy + verify %d tables, switch, delete at the source, verify, sign | %.1f s |\n", r.Tables, r.Move.Seconds())
	fmt.Fprintf(w, "| move ÷ raw copy | %.2f |\n", r.Move.Seconds()/r.RawCopy.Seconds())
	fmt.Fprintf(w, "| rows moved per second | %.0f |\n", float64(r.Rows)/r.Move.Seconds())
	fmt.Fprintf(w, "| state | %s |\n", r.State)
}
