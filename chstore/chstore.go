// Package chstore is the one place that opens ClickHouse connections: the
// embedded engine's HTTP interface or a server (clickhouse:// native or
// http(s)://), always through clickhouse-go/v2, with OpenTelemetry spans on
// every statement and Prometheus pool gauges.
package chstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tenantscope/tenantscope/migrations"
)

// Options configure a Store.
type Options struct {
	// DSN: clickhouse://user:pass@host:9000/db, http://host:8123/db, https://…
	DSN string
	// Database overrides the DSN's database (a region's database).
	Database string
	// Name labels metrics and spans (the region).
	Name         string
	MaxOpenConns int
	// CAFile verifies an https:// server against this CA (PEM) instead of
	// the system's roots.
	CAFile     string
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
}

// Store is a ClickHouse connection for one database.
type Store struct {
	conn     driver.Conn
	database string
	name     string
	tracer   trace.Tracer
}

// Open connects, creating the database if it does not exist yet.
func Open(ctx context.Context, o Options) (*Store, error) {
	opt, err := parseDSN(o.DSN)
	if err != nil {
		return nil, err
	}
	if o.MaxOpenConns > 0 {
		opt.MaxOpenConns = o.MaxOpenConns
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse %s: ca_file: %w", o.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("clickhouse %s: ca_file %s holds no PEM certificate", o.Name, o.CAFile)
		}
		if opt.TLS == nil {
			opt.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		opt.TLS.RootCAs = pool
	}
	db := opt.Auth.Database
	if o.Database != "" {
		db = o.Database
	}
	if db == "" {
		db = "default"
	}
	// Create the database through a connection that does not need it.
	boot := *opt
	boot.Auth.Database = "default"
	bc, err := clickhouse.Open(&boot)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", o.Name, err)
	}
	// Only when missing: a read-only user opens an existing database.
	var exists uint64
	if err = bc.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", db).Scan(&exists); err == nil && exists == 0 {
		err = bc.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db))
	}
	_ = bc.Close() //nolint:errcheck // bootstrap connection
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: create database %s: %w", o.Name, db, err)
	}
	opt.Auth.Database = db
	conn, err := clickhouse.Open(opt)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", o.Name, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close() //nolint:errcheck // already failing
		return nil, fmt.Errorf("clickhouse %s: ping: %w", o.Name, err)
	}
	s := &Store{conn: conn, database: db, name: o.Name, tracer: o.Tracer}
	if s.tracer == nil {
		s.tracer = noop.NewTracerProvider().Tracer("")
	}
	if o.Registerer != nil {
		if err := s.registerMetrics(o.Registerer); err != nil {
			_ = conn.Close() //nolint:errcheck // already failing
			return nil, err
		}
	}
	return s, nil
}

func parseDSN(dsn string) (*clickhouse.Options, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse dsn: %w", err)
	}
	switch u.Scheme {
	case "clickhouse", "tcp":
		opt, err := clickhouse.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("clickhouse dsn: %w", err)
		}
		return opt, nil
	case "http", "https":
		opt := &clickhouse.Options{Protocol: clickhouse.HTTP, Addr: []string{u.Host}}
		if u.Scheme == "https" {
			q := u.Query()
			if q.Get("secure") == "" {
				q.Set("secure", "true") // clickhouse-go wants it said for https
				u.RawQuery = q.Encode()
			}
			hd, err := clickhouse.ParseDSN(u.String())
			if err != nil {
				return nil, fmt.Errorf("clickhouse dsn: %w", err)
			}
			opt = hd
			if opt.TLS == nil {
				opt.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		}
		opt.Auth.Database = strings.Trim(u.Path, "/")
		if u.User != nil {
			opt.Auth.Username = u.User.Username()
			opt.Auth.Password, _ = u.User.Password()
		}
		opt.DialTimeout = 10 * time.Second
		return opt, nil
	}
	return nil, fmt.Errorf("clickhouse dsn %q: scheme must be clickhouse, http or https", redact(dsn))
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	return u.Redacted()
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "\\`") + "`" }

// Database is the store's database.
func (s *Store) Database() string { return s.database }

// Name is the store's label (its region).
func (s *Store) Name() string { return s.name }

// Conn exposes the clickhouse-go connection for batch inserts.
func (s *Store) Conn() driver.Conn { return s.conn }

// Close closes the connections.
func (s *Store) Close() error { return s.conn.Close() }

func (s *Store) span(ctx context.Context, op, query string) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, "clickhouse "+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system", "clickhouse"),
		attribute.String("db.namespace", s.database),
		attribute.String("db.query.text", truncate(query, 2000)),
		attribute.String("tenantscope.store", s.name),
	))
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Exec runs a statement.
func (s *Store) Exec(ctx context.Context, query string, args ...any) (err error) {
	ctx, span := s.span(ctx, "exec", query)
	defer func() { end(span, err) }()
	return s.conn.Exec(ctx, query, args...)
}

// Query runs a query.
func (s *Store) Query(ctx context.Context, query string, args ...any) (rows driver.Rows, err error) {
	ctx, span := s.span(ctx, "query", query)
	defer func() { end(span, err) }()
	return s.conn.Query(ctx, query, args...)
}

// Select scans every row into dest (a pointer to a slice of structs).
func (s *Store) Select(ctx context.Context, dest any, query string, args ...any) (err error) {
	ctx, span := s.span(ctx, "select", query)
	defer func() { end(span, err) }()
	return s.conn.Select(ctx, dest, query, args...)
}

// QueryRow runs a query for one row.
func (s *Store) QueryRow(ctx context.Context, dest []any, query string, args ...any) (err error) {
	ctx, span := s.span(ctx, "query_row", query)
	defer func() { end(span, err) }()
	return s.conn.QueryRow(ctx, query, args...).Scan(dest...)
}

// PrepareBatch starts a batch insert.
func (s *Store) PrepareBatch(ctx context.Context, query string) (b driver.Batch, err error) {
	ctx, span := s.span(ctx, "batch", query)
	defer func() { end(span, err) }()
	return s.conn.PrepareBatch(ctx, query)
}

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Applied implements migrations.Exec.
func (s *Store) Applied(ctx context.Context, database string) ([]migrations.Applied, error) {
	var rows []struct {
		Version   uint32    `ch:"version"`
		Name      string    `ch:"name"`
		Checksum  string    `ch:"checksum"`
		AppliedAt time.Time `ch:"applied_at"`
	}
	if err := s.Select(ctx, &rows, "SELECT version, name, checksum, applied_at FROM "+quoteIdent(database)+".schema_migrations FINAL ORDER BY version"); err != nil {
		return nil, err
	}
	out := make([]migrations.Applied, len(rows))
	for i, r := range rows {
		out[i] = migrations.Applied{Version: r.Version, Name: r.Name, Checksum: r.Checksum, AppliedAt: r.AppliedAt}
	}
	return out, nil
}

func (s *Store) registerMetrics(reg prometheus.Registerer) error {
	labels := prometheus.Labels{"store": s.name}
	stat := func(f func(driver.Stats) int) func() float64 {
		return func() float64 { return float64(f(s.conn.Stats())) }
	}
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tenantscope_clickhouse_pool_open_connections", Help: "Open ClickHouse connections.", ConstLabels: labels}, stat(func(st driver.Stats) int { return st.Open })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tenantscope_clickhouse_pool_idle_connections", Help: "Idle ClickHouse connections.", ConstLabels: labels}, stat(func(st driver.Stats) int { return st.Idle })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tenantscope_clickhouse_pool_max_open_connections", Help: "Configured maximum of open ClickHouse connections.", ConstLabels: labels}, stat(func(st driver.Stats) int { return st.MaxOpenConns })),
	} {
		if err := reg.Register(g); err != nil {
			return fmt.Errorf("clickhouse %s metrics: %w", s.name, err)
		}
	}
	return nil
}
