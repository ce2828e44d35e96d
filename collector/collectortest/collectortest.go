// Package collectortest runs the real ingest pipeline in-process for tests:
// an embedded NATS server, the shared embedded ClickHouse engine with a fresh
// database per test as the one region, migrations, and a collector.
package collectortest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/migrations"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// Pipeline is a running pipeline.
type Pipeline struct {
	Config config.Config
	// Placement is where the tenants live after region moves, shared by
	// the collector, its audit writer and the policy cache (pass it to a
	// retention engine that moves a tenant).
	Placement *placement.Placement
	// Store is the first region's; Stores has every region's, by name.
	Store  *chstore.Store
	Stores map[string]*chstore.Store
	// EngineAddr is the shared embedded engine's HTTP address, and
	// EngineURL its base URL with the credentials a client needs.
	EngineAddr string
	EngineURL  string
	NATS       *natsbus.Server
	URL        string
	Registry   *prometheus.Registry
	// Passwords are the tenants' NATS service passwords by tenant id.
	Passwords map[string]string
	JS        jetstream.JetStream // the suite's own (admin) connection
	// AuditVerifierKey verifies the audit checkpoints the collector signs.
	AuditVerifierKey string
	// Retention is the policy cache the collector writes retention from
	// (Load it after changing policies in a test).
	Retention *retention.Cache
	// Shredder encrypts the tenants' configured personal fields at ingest.
	Shredder *retention.Shredder
}

// Start runs a pipeline for the given tenant ids, stopped at the test's end.
// The tenants live in region "default"; a region mutate adds with no
// database gets a fresh database of the same engine.
func Start(t testing.TB, mutate func(*config.Config), tenants ...string) *Pipeline {
	return StartWith(t, mutate, nil, tenants...)
}

// StartWith is Start with the collector's configuration changed by
// collectorMutate (when not nil) before it starts.
func StartWith(t testing.TB, mutate func(*config.Config), collectorMutate func(*collector.Config), tenants ...string) *Pipeline {
	t.Helper()
	db := enginetest.New(t)
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Regions = []config.Region{{Name: "default", Database: db.Name}}
	for _, id := range tenants {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, Name: id, Region: "default", NATS: config.Credentials{User: id + "-svc"}})
	}
	// The engine answers its users only; the suite connects as the test
	// engine's read-write user.
	cfg.ClickHouse.User, cfg.ClickHouse.Password = db.User, db.Password
	cfg.ClickHouse.ReaderUser, cfg.ClickHouse.ReaderPassword = db.Reader, db.ReaderPassword
	if mutate != nil {
		mutate(&cfg)
	}
	if _, err := config.EnsureSecrets(&cfg); err != nil {
		t.Fatal(err)
	}
	b, err := config.LoadBootstrap(cfg.Data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stores := map[string]*chstore.Store{}
	for i, r := range cfg.Regions {
		if r.Database == "" {
			r.Database = enginetest.New(t).Name
			cfg.Regions[i] = r
		}
		dsn := r.DSN
		if dsn == "" {
			dsn = db.URL()
		}
		st, err := chstore.Open(ctx, chstore.Options{DSN: dsn, Database: r.Database, Name: r.Name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if _, err := migrations.Up(ctx, st, migrations.Params{Database: r.Database}, nil); err != nil {
			t.Fatal(err)
		}
		stores[r.Name] = st
	}
	st := stores[cfg.Regions[0].Name]
	place := placement.New()
	storeOf := func(tenant string) (*chstore.Store, error) {
		r, ok := place.RegionOf(cfg, tenant)
		if !ok {
			return nil, fmt.Errorf("unknown tenant %q", tenant)
		}
		return stores[r.Name], nil
	}
	srv, err := natsbus.Embedded(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("collectortest")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log := zerolog.Nop()
	if os.Getenv("TENANTSCOPE_TEST_LOG") != "" {
		log = zerolog.New(os.Stderr).With().Timestamp().Logger()
	}
	writer, err := auditlog.NewWriter(storeOf, b.AuditSignerKey, 10)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := retention.New(cfg, place, stores, nil, js, "", log).NewCache(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := retention.NewKeyring(b.ShredKEK, storeOf)
	if err != nil {
		t.Fatal(err)
	}
	shredder := retention.NewShredder(keys, cfg)
	colCfg := collector.Config{BatchAge: 50 * time.Millisecond, PIISalts: b.PIISalts, Audit: writer, RetentionFor: cache.Days,
		ShredEvent: shredder.Event}
	if collectorMutate != nil {
		collectorMutate(&colCfg)
	}
	col, err := collector.New(colCfg, js, cfg, place, stores, log, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- col.Run(runCtx) }()
	// The policy cache refreshes as the suite's does.
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- cache.Run(runCtx, 10*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector: %v", err)
		}
		if err := <-cacheDone; err != nil {
			t.Errorf("retention cache: %v", err)
		}
		nc.Close()
		srv.Shutdown()
	})
	pw := map[string]string{}
	for _, tn := range cfg.Tenants {
		pw[tn.ID] = b.NATS[tn.NATS.User]
	}
	return &Pipeline{Config: cfg, Placement: place, Store: st, Stores: stores, EngineAddr: db.Addr, EngineURL: db.URL(), NATS: srv, URL: srv.ClientURL(), Registry: reg, Passwords: pw, JS: js, AuditVerifierKey: b.AuditVerifierKey, Retention: cache, Shredder: shredder}
}

// Count runs a count query against the pipeline's database.
func (p *Pipeline) Count(t testing.TB, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := p.Store.QueryRow(context.Background(), []any{&n}, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TenantConn connects with a tenant's service credentials.
func (p *Pipeline) TenantConn(t testing.TB, tenant string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(p.URL, nats.UserInfo(tenant+"-svc", p.Passwords[tenant]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
