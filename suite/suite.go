// Package suite wires tenantscope's components by hand and runs them in an
// errgroup with a bounded graceful shutdown: `serve` runs all of them in one
// process, `collector` and `ui` run a subset against a NATS cluster and a
// ClickHouse server (the distributed shape).
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/edge"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/migrations"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
	"github.com/tenantscope/tenantscope/telemetry"
	"github.com/tenantscope/tenantscope/ui"
)

// Components selects what a process runs.
type Components struct {
	Collector bool
	UI        bool // the UI pages and API (every process serves /metrics and health)
	Demo      bool // publish demo traffic as the configured tenants
	// AuditWriter makes this process's collector the one writer of the
	// tenants' audit chains (serve always; one collector process otherwise).
	AuditWriter bool
}

// All is what `serve` runs.
var All = Components{Collector: true, UI: true, AuditWriter: true}

// Options configure Run.
type Options struct {
	Config     config.Config
	Components Components
	Log        zerolog.Logger
	// Out receives what a person should read once: URLs and bootstrap credentials.
	Out io.Writer
	// Ready, when set, receives the suite once everything is up (tests).
	Ready func(*Suite)
	// Collector tunes the collector (batching, fault injection in tests).
	Collector collector.Config
	// Version and Getenv feed the telemetry resource and OTLP exporter settings.
	Version string
	Getenv  func(string) string
}

// Suite is the running set of components.
type Suite struct {
	cfg config.Config
	// place is where tenants live after region moves (reloaded from the
	// platform store) and which are paused while they move; every
	// component that writes tenant data or finds a tenant's store shares it.
	place   *placement.Placement
	log     zerolog.Logger
	reg     *prometheus.Registry
	engine  *engine.Local // the embedded engine, when no server is configured
	engAddr string
	natsSrv *natsbus.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	stores  map[string]*chstore.Store
	http    *http.Server
	httpLn  net.Listener
	// metricsAddr is the metrics listener's bound address.
	metricsAddr string
	collector   *collector.Service
	certs       *edge.Certificates
	httpAddr    string
	migrated    atomic.Bool
	tracer      trace.Tracer
	// boot holds the secrets generated at first start, read once.
	boot *config.Bootstrap
	// apiKeys holds the keys tenant admins create (UI processes).
	apiKeys *apikeys.Store
	// card is the configured rate card; metering serves usage, cost and SLA.
	retention   *retention.Service
	card        *metering.RateCard
	metering    *metering.Service
	requests    *metering.Requests
	meterGauges *metering.Exporter
	// health is the last verification of each tenant's audit chain.
	health *auditlog.HealthBoard
	// bg owns the goroutines started outside Run's errgroup (the embedded
	// engine's listener watch); close waits for them.
	bg sync.WaitGroup
	// keys and pages count failed API keys and sign-ins (UI processes);
	// close flushes their summaries into the platform chain.
	keys  *identity.Keys
	pages *ui.UI
	// metricsLn is the metrics listener (close closes it and httpLn,
	// which Serve has not when Run returned early).
	metricsLn net.Listener
}

// HTTPAddr is where the UI, API and /metrics listen.
func (s *Suite) HTTPAddr() string { return s.httpAddr }

// EngineAddr is the embedded engine's HTTP interface ("" with a server).
func (s *Suite) EngineAddr() string { return s.engAddr }

// NATSURL is the bus address services publish to.
func (s *Suite) NATSURL() string { return s.nc.ConnectedUrl() }

// Store returns a region's store.
func (s *Suite) Store(region string) *chstore.Store { return s.stores[region] }

// Run starts the selected components and blocks until ctx ends, then shuts
// everything down within cfg.Shutdown. Every goroutine it starts is waited
// for before it returns, also when it returns early with an error.
func Run(ctx context.Context, o Options) (err error) {
	cfg := o.Config
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Only the process that owns the embedded engine and NATS server
	// generates what is missing; every other process of a deployment reads
	// the one shared set (secrets_file) and refuses to start without it.
	var fresh []config.Secret
	if config.Generates(cfg) {
		fresh, err = config.EnsureSecrets(&cfg)
	} else {
		err = config.ApplySecrets(&cfg)
	}
	if err != nil {
		return err
	}
	tp, err := telemetry.New(ctx, "tenantscope", o.Version, o.Getenv)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, tp.Shutdown(sctx))
	}()
	s := &Suite{cfg: cfg, place: placement.New(), log: o.Log, reg: prometheus.NewRegistry(), stores: map[string]*chstore.Store{}, tracer: tp.Tracer("tenantscope"), health: auditlog.NewHealthBoard()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer func() {
		err = errors.Join(err, s.close())
	}()
	if s.boot, err = config.LoadSecrets(cfg); err != nil {
		return err
	}
	if cfg.Metering.RateCard != "" {
		if s.card, err = metering.LoadRateCard(cfg.Metering.RateCard, cfg); err != nil {
			return err
		}
	}
	if err := s.startClickHouse(ctx); err != nil {
		return err
	}
	if err := s.startNATS(ctx); err != nil {
		return err
	}
	// The components run in g. On an early error return below, the ones
	// already started are stopped and waited for before the deferred close
	// takes their stores and connections away.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	running := true
	defer func() {
		if running {
			stop()
			err = errors.Join(err, g.Wait())
		}
	}()
	s.retention = retention.New(cfg, s.place, s.stores, s.publishAudit, s.js, s.boot.AuditSignerKey, s.log)
	s.retention.EngineAddr = s.engAddr
	if err := retention.RegisterMetrics(s.reg, cfg); err != nil {
		return err
	}
	// Region moves: every process follows the placement; a move started in
	// an embedded serve pauses the only writer at once, otherwise it waits
	// for the other processes to notice.
	// A process that cannot reload where tenants live stops writing their
	// data (messages wait in JetStream) rather than write into a region a
	// tenant is leaving.
	s.place.FailClosedAfter(PlacementStale)
	if !cfg.Embedded() {
		s.retention.MoveSettle = MoveSettle
	}
	g.Go(func() error { return s.retention.WatchPlacement(gctx, PlacementEvery) })
	kek := cfg.Retention.KEK
	if kek == "" {
		kek = s.boot.ShredKEK
	}
	if kek != "" {
		keys, err := retention.NewKeyring(kek, s.storeOf)
		if err != nil {
			return err
		}
		s.retention.Shred = retention.NewShredder(keys, cfg)
		if o.Collector.ShredEvent == nil {
			o.Collector.ShredEvent = s.retention.Shred.Event
		}
	}
	if o.Components.Collector && o.Collector.RetentionFor == nil {
		cache, err := s.retention.NewCache(ctx)
		if err != nil {
			return err
		}
		o.Collector.RetentionFor = cache.Days
		g.Go(func() error { return cache.Run(gctx, 10*time.Second) })
	}
	if o.Components.AuditWriter {
		// One process runs the scheduled purges and erasure reminders, and
		// finishes or undoes a region move a stopped process left.
		g.Go(func() error { return s.retention.Run(gctx) })
	}
	if o.Components.Collector {
		b := s.boot
		stopLease := func() {}
		if o.Collector.PIISalts == nil {
			o.Collector.PIISalts = b.PIISalts
		}
		if o.Collector.Audit == nil && o.Components.AuditWriter {
			w, err := auditlog.NewWriter(s.storeOf, b.AuditSignerKey, 1000)
			if err != nil {
				return err
			}
			if s.retention.Shred != nil {
				w.Seal = s.retention.Shred.SealAudit
			}
			// Several processes may be audit writers (a rolling update
			// starts the new one first); the lease lets one chain at a time.
			host, _ := os.Hostname() //nolint:errcheck // the name only labels the lease
			lease, err := auditlog.NewLease(ctx, s.js, fmt.Sprintf("%s/%d", host, os.Getpid()), AuditLeaseTTL, cfg.NATS.Stream.Replicas, s.log)
			if err != nil {
				return err
			}
			held := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantscope_audit_writer_lease_held", Help: "1 while this process holds the audit writer's lease (chains the audit records)."})
			if err := s.reg.Register(held); err != nil {
				return err
			}
			lease.OnChange = func(h bool) {
				if h {
					held.Set(1)
				} else {
					held.Set(0)
				}
			}
			w.Lease = lease
			// The lease outlives the collector: on a stop, the collector
			// stores the batches it holds (audit records among them) and
			// only then is the lease let go. Released with the others, it
			// left the last audit batch unstored ("does not hold the audit
			// writer's lease"), for the next writer to take again.
			leaseCtx, cancel := context.WithCancel(context.WithoutCancel(gctx))
			stopLease = cancel
			g.Go(func() error { return lease.Run(leaseCtx) })
			o.Collector.Audit = w
			g.Go(func() error { return s.auditLoop(gctx, w, b.AuditVerifierKey) })
			g.Go(func() error {
				n, err := s.auditPrincipals(gctx)
				if err != nil {
					s.log.Error().Err(err).Msg("changes of users and API keys not audited")
				} else if n > 0 {
					s.log.Info().Int("changes", n).Msg("audited changes of configured users and API keys")
				}
				return nil
			})
		}
		col, err := collector.New(o.Collector, s.js, cfg, s.place, s.stores, s.log, s.reg, s.tracer)
		if err != nil {
			stopLease()
			return err
		}
		s.collector = col
		g.Go(func() error {
			defer stopLease()
			return col.Run(gctx)
		})
	}
	// Every process serves /metrics and the health endpoints; UI adds the pages.
	{
		if err := s.startHTTP(ctx, o.Components.UI); err != nil {
			return err
		}
		if cfg.HTTP.MetricsListen != "" {
			mln, err := listen(cfg.HTTP.MetricsListen)
			if err != nil {
				return fmt.Errorf("metrics listener: %w", err)
			}
			s.metricsLn, s.metricsAddr = mln, mln.Addr().String()
			ms := s.metricsServer()
			if err := s.useTLS(ms); err != nil {
				return err
			}
			g.Go(func() error {
				if err := serve(ms, mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					return fmt.Errorf("metrics http: %w", err)
				}
				return nil
			})
			g.Go(func() error {
				<-gctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Shutdown))
				defer cancel()
				return ms.Shutdown(sctx)
			})
		}
		if s.apiKeys != nil {
			g.Go(func() error { return s.apiKeys.Run(gctx) })
		}
		if s.requests != nil {
			g.Go(func() error { return s.requests.Run(gctx, MeteringEvery) })
			g.Go(func() error { return s.meterGauges.Run(gctx, MeteringEvery) })
		}
		g.Go(func() error {
			if err := serve(s.http, s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Shutdown))
			defer cancel()
			return s.http.Shutdown(sctx)
		})
	}
	if o.Components.Demo {
		g.Go(func() error { return runDemo(gctx, s, o.Log) })
	}
	s.printBanner(o.Out, fresh, o.Components)
	if o.Ready != nil {
		o.Ready(s)
	}
	running = false
	return g.Wait()
}

func (s *Suite) startClickHouse(ctx context.Context) error {
	if s.cfg.Embedded() {
		local, err := engine.StartLocal(engine.Config{
			Dir: filepath.Join(s.cfg.Data, "engine"), LibPath: s.cfg.ClickHouse.ChdbLib,
			PoolSize: s.cfg.ClickHouse.PoolSize, Logger: s.log.With().Str("component", "engine").Logger(),
			Allocator: s.cfg.Memory.EngineAllocatorOptions(),
		}, engineServerConfig(s.cfg, s.log.With().Str("component", "engine-http").Logger()), s.cfg.ClickHouse.EngineListen)
		if err != nil {
			return err
		}
		s.engine, s.engAddr = local, local.Addr
		s.bg.Add(1)
		go func() { // ends when close closes the engine
			defer s.bg.Done()
			if err := <-local.Served; err != nil {
				s.log.Error().Err(err).Msg("engine http")
			}
		}()
	}
	for _, r := range s.cfg.Regions {
		st, err := chstore.Open(ctx, chstore.Options{DSN: s.cfg.RegionDSN(r, s.engAddr), Database: r.Database, Name: r.Name, CAFile: s.cfg.ClickHouse.CAFile, Registerer: s.reg, Tracer: s.tracer})
		if err != nil {
			return err
		}
		s.stores[r.Name] = st
		p := migrations.Params{Database: r.Database, Cluster: s.cfg.ClickHouse.Cluster}
		if s.cfg.Embedded() {
			if _, err := migrations.Up(ctx, st, p, func(line string) { s.log.Info().Str("region", r.Name).Msg(line) }); err != nil {
				return err
			}
			if err := metering.Setup(ctx, st, s.cfg, s.card, s.log); err != nil {
				return err
			}
		} else {
			status, err := migrations.StatusOf(ctx, st, r.Database)
			if err != nil {
				return err
			}
			for _, m := range status {
				if !m.Applied || m.Edited {
					return fmt.Errorf("region %s: migration %04d_%s is not applied (or was edited): run 'tenantscope migrate up'", r.Name, m.Version, m.Name)
				}
			}
		}
	}
	s.migrated.Store(true)
	// Where tenants live after region moves, before anything writes.
	if err := retention.LoadPlacement(ctx, s.cfg, s.place, s.stores[s.cfg.Regions[0].Name]); err != nil {
		return err
	}
	return s.registerTenants(ctx)
}

// storeOf is a tenant's region store.
func (s *Suite) storeOf(tenant string) (*chstore.Store, error) {
	if r, ok := s.place.RegionOf(s.cfg, tenant); ok {
		if st := s.stores[r.Name]; st != nil {
			return st, nil
		}
	}
	return nil, fmt.Errorf("tenant %q has no region store", tenant)
}

// auditLoop checkpoints every tenant's chain each minute and verifies every
// chain each AuditVerifyEvery, exporting the result as metrics.
func (s *Suite) auditLoop(ctx context.Context, w *auditlog.Writer, verifierKey string) error {
	ok := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_audit_chain_verified", Help: "1 when the tenant's audit chain and checkpoints verified at the last run, 0 when not."}, []string{"tenant"})
	records := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_audit_chain_records", Help: "Records in the tenant's audit chain at the last verification."}, []string{"tenant"})
	last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantscope_audit_verify_last_run_timestamp_seconds", Help: "When the audit chains were last verified."})
	for _, c := range []prometheus.Collector{ok, records, last} {
		if err := s.reg.Register(c); err != nil {
			return err
		}
	}
	verify := func() {
		for _, t := range s.cfg.ChainTenants() {
			st, err := s.storeOf(t.ID)
			if err != nil {
				continue
			}
			rep, err := auditlog.Verify(ctx, st, t.ID, 1, verifierKey)
			if err != nil {
				s.log.Warn().Err(err).Str("tenant_id", t.ID).Msg("audit verification failed to run")
				continue
			}
			s.health.Set(rep, time.Now())
			records.WithLabelValues(t.ID).Set(float64(rep.Records))
			if rep.OK() {
				ok.WithLabelValues(t.ID).Set(1)
			} else {
				ok.WithLabelValues(t.ID).Set(0)
				s.log.Error().Str("tenant_id", t.ID).Str("problem", rep.Problem.String()).Msg("audit chain does not verify")
			}
		}
		last.SetToCurrentTime()
	}
	checkpoint := time.NewTicker(time.Minute)
	defer checkpoint.Stop()
	verifyTick := time.NewTicker(AuditVerifyEvery)
	defer verifyTick.Stop()
	verify()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-checkpoint.C:
			for _, t := range s.cfg.ChainTenants() {
				release, ok := s.place.Write(t.ID)
				if !ok {
					continue // being moved to another region: checkpointed after the move
				}
				if err := w.Checkpoint(ctx, t.ID); err != nil && ctx.Err() == nil {
					s.log.Warn().Err(err).Str("tenant_id", t.ID).Msg("audit checkpoint")
				}
				release()
			}
		case <-verifyTick.C:
			verify()
		}
	}
}

// AuditLeaseTTL is how long the audit writer's lease outlives its holder's
// last renewal: another writer takes over within about this long.
var AuditLeaseTTL = 6 * time.Second

// MeteringEvery is how often request counts are written and the metering
// gauges recomputed.
var MeteringEvery = 30 * time.Second

// PlacementEvery is how often a process reloads where tenants live (region
// moves made by other processes); after PlacementStale without a
// successful reload it stops writing tenant data; a move that may have
// writers in other processes waits MoveSettle after pausing the tenant, by
// which time each of them has seen the pause or stopped writing.
var (
	PlacementEvery = 2 * time.Second
	PlacementStale = 6 * time.Second
	MoveSettle     = PlacementStale + PlacementEvery
)

// AuditVerifyEvery is how often serve verifies every audit chain.
var AuditVerifyEvery = 15 * time.Minute

// registerTenants records each tenant in its region's store.
func (s *Suite) registerTenants(ctx context.Context) error {
	for _, t := range s.cfg.Tenants {
		release, ok := s.place.Write(t.ID)
		if !ok {
			continue // being moved: its row moves with it
		}
		region := s.place.TenantRegion(t)
		err := s.stores[region].Exec(ctx, "INSERT INTO tenants (tenant_id, name, region) VALUES (?, ?, ?)", t.ID, t.Name, region)
		release()
		if err != nil {
			return fmt.Errorf("register tenant %s: %w", t.ID, err)
		}
	}
	return nil
}

func (s *Suite) startNATS(ctx context.Context) error {
	var err error
	if s.cfg.EmbeddedNATS() {
		s.natsSrv, err = natsbus.Embedded(s.cfg, s.log)
		if err != nil {
			return err
		}
		s.nc, err = s.natsSrv.Connect("tenantscope")
	} else {
		s.nc, err = natsbus.ConnectExternal(s.cfg, "tenantscope")
	}
	if err != nil {
		return err
	}
	natsbus.LogConnection(s.nc, s.log)
	s.js, err = jetstream.New(s.nc)
	if err != nil {
		return err
	}
	streams, err := natsbus.NewStreams(s.js, s.cfg, s.log, s.reg)
	if err != nil {
		return err
	}
	if s.cfg.EmbeddedNATS() {
		// The process that runs the server owns the stream settings.
		return streams.Apply(ctx)
	}
	// On a cluster they belong to 'tenantscope migrate up': this process
	// only warns where its configuration differs (and fails if one is missing).
	_, err = streams.Check(ctx)
	return err
}

func (s *Suite) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.Shutdown))
	defer cancel()
	var errs []error
	// Failed sign-ins and API keys still being counted: their bursts'
	// summaries go to the platform chain while NATS is up (the HTTP
	// server has stopped: no attempt comes after them).
	if s.pages != nil {
		s.pages.Flush()
	}
	if s.keys != nil {
		s.keys.Flush()
	}
	// Work that outlives its request (a region move started through the
	// API or the UI) ends while the stores and NATS are still there.
	if s.retention != nil {
		if err := s.retention.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ln := range []net.Listener{s.httpLn, s.metricsLn} {
		if ln == nil {
			continue
		}
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if s.nc != nil {
		if err := s.nc.Drain(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.natsSrv != nil {
		s.natsSrv.Shutdown()
	}
	for _, st := range s.stores {
		if err := st.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.engine != nil {
		if err := s.engine.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.bg.Wait()
	return errors.Join(errs...)
}

// ready checks every dependency.
func (s *Suite) ready(ctx context.Context) error {
	var errs []error
	if s.nc == nil || !s.nc.IsConnected() {
		errs = append(errs, errors.New("nats: not connected"))
	}
	if !s.migrated.Load() {
		errs = append(errs, errors.New("migrations: not applied"))
	}
	for name, st := range s.stores {
		if err := st.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("clickhouse %s: %w", name, err))
		}
	}
	if s.collector != nil && s.collector.StoreUnavailable() {
		errs = append(errs, errors.New("collector: a store does not answer; pulling stopped until it does"))
	}
	// A backlog older than the configured age: the collectors do not keep
	// up (or cannot store). The body names no tenant: /readyz is public.
	if limit := time.Duration(s.cfg.NATS.Stream.MaxBacklogAge); limit > 0 && s.collector != nil {
		if oldest, n := s.collector.OldestWaiting(limit); n > 0 {
			errs = append(errs, fmt.Errorf("backlog: %d tenant(s) have messages waiting longer than nats.stream.max_backlog_age %s (the oldest %s)",
				n, limit, oldest.Round(time.Second)))
		}
	}
	// Audit records this collector left for the writer wait while no process
	// holds the writer's lease: say so rather than nak them silently.
	if s.collector != nil && s.js != nil && s.collector.AuditWaiting(10*time.Second) {
		if holder, err := auditlog.LeaseHolder(ctx, s.js); err == nil && holder == "" {
			errs = append(errs, errors.New("audit: records are waiting and no audit writer holds the lease (start a collector with --audit-writer)"))
		}
	}
	return errors.Join(errs...)
}

// engineServerConfig gives the embedded engine's HTTP interface its two
// users, its accepted names and origins, and the region engines url() may
// read (a move to or from a region on another server).
func engineServerConfig(cfg config.Config, log zerolog.Logger) engine.ServerConfig {
	ch := cfg.ClickHouse
	sc := engine.ServerConfig{
		Users: map[string]engine.User{
			ch.User:       {Password: ch.Password},
			ch.ReaderUser: {Password: ch.ReaderPassword, ReadOnly: true},
		},
		AllowOrigins: ch.EngineAllowOrigins,
		TLSCert:      ch.EngineTLSCert,
		TLSKey:       ch.EngineTLSKey,
		Hosts:        ch.EngineHosts,
		Logger:       log,
	}
	for _, r := range cfg.Regions {
		for _, raw := range []string{r.HTTPURL, r.DSN} {
			if u, err := url.Parse(raw); err == nil && u.Host != "" {
				host := u.Host
				if u.Port() == "" {
					host += ":8123"
				}
				sc.URLHosts = append(sc.URLHosts, host)
			}
		}
	}
	return sc
}

func (s *Suite) printBanner(w io.Writer, fresh []config.Secret, c Components) {
	if w == nil {
		return
	}
	if s.httpAddr != "" {
		if c.UI {
			fmt.Fprintf(w, "tenantscope is up\n  UI and API   %s://%s/\n", s.scheme(), s.httpAddr)
		} else {
			fmt.Fprintf(w, "tenantscope is up\n")
		}
		fmt.Fprintf(w, "  ready        %s://%s/readyz\n", s.scheme(), s.httpAddr)
	}
	if s.metricsAddr != "" {
		fmt.Fprintf(w, "  metrics      %s://%s/metrics (every series; the main listener's /metrics has none per tenant)\n", s.scheme(), s.metricsAddr)
	}
	if s.engAddr != "" {
		es := "http"
		if s.cfg.ClickHouse.EngineTLSCert != "" {
			es = "https"
		}
		fmt.Fprintf(w, "  ClickHouse   %s://%s/ (embedded engine; users %s (read-write) and %s (read-only), e.g. curl -u %s '%s://%s/?query=SELECT+version()')\n",
			es, s.engAddr, s.cfg.ClickHouse.User, s.cfg.ClickHouse.ReaderUser, s.cfg.ClickHouse.ReaderUser, es, s.engAddr)
	}
	if s.nc != nil {
		fmt.Fprintf(w, "  NATS         %s\n", s.nc.ConnectedUrl())
	}
	if c.Demo {
		fmt.Fprintf(w, "  demo traffic is being published for %d tenants\n", len(s.cfg.Tenants))
	}
	if len(fresh) == 0 {
		return
	}
	var b strings.Builder
	for _, sec := range fresh {
		scope := sec.Role
		if sec.Tenant != "" {
			scope += " of " + sec.Tenant
		}
		fmt.Fprintf(&b, "  %-10s %-18s %-26s %s\n", sec.Kind, sec.Name, scope, sec.Value)
	}
	if isTerminal(w) {
		fmt.Fprintf(w, "\nBootstrap credentials, shown once (hashes are kept in %s):\n%s", config.BootstrapPath(s.cfg.Data), b.String())
		return
	}
	// Output that is not a terminal ends up in log collectors: the
	// credentials go to a file only the suite's user may read.
	path := filepath.Join(s.cfg.Data, "first-start-credentials.txt")
	if err := config.WriteSecretFile(path, []byte("Bootstrap credentials, shown once:\n"+b.String())); err != nil {
		s.log.Error().Err(err).Msg("writing the first-start credentials")
		return
	}
	fmt.Fprintf(w, "\nBootstrap credentials were written to %s (mode 0600); read them, then delete the file.\n", path)
}

// scheme is how browsers reach the HTTP listeners.
func (s *Suite) scheme() string {
	if s.cfg.HTTP.TLSCert != "" {
		return "https"
	}
	return "http"
}

// serve serves srv on ln, over TLS when srv has a TLS configuration.
func serve(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}
