package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"text/tabwriter"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/demo"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/migrations"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
	"github.com/tenantscope/tenantscope/suite"
)

// configFlags are the flags every suite command shares; set flags win over
// the environment, which wins over the file.
type configFlags struct {
	fs   *flag.FlagSet
	path *string
	set  map[string]*string
	// args are the positional arguments, which may stand among the flags.
	args []string
}

// parseInterleaved parses flags that may come after positional arguments
// ("show 42 --config x") and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagFields are the configuration's flags. The embedded ones configure
// the embedded NATS server and ClickHouse engine: serve runs them, and the
// CLI commands reach them; collector and ui processes do not list them.
var flagFields = []struct {
	flag, usage string
	embedded    bool
}{
	{"data", "data directory", false},
	{"http", "listen address of the UI, API, OTLP receiver and health endpoints", false},
	{"metrics-listen", "listen address of the metrics endpoint with per-tenant series (loopback by default)", false},
	{"nats-listen", "listen address of the embedded NATS server", true},
	{"nats-url", "use this NATS cluster (nats:// or tls://host:4222) instead of the embedded server", false},
	{"engine-listen", "listen address of the embedded ClickHouse engine's HTTP interface", true},
	{"clickhouse-dsn", "use this ClickHouse server instead of the embedded engine: clickhouse://user:password@host:9000/db (native protocol) or http(s)://user:password@host:8123/db (HTTP interface, e.g. 'tenantscope engine')", false},
	{"chdb-lib", "path of libchdb (fetched by 'make chdb')", true},
	{"log-level", "debug, info, warn or error", false},
	{"jetstream-budget", "JetStream storage a NATS node may reserve for the streams (its max_file_store), e.g. 10GB; the embedded server uses it", true},
}

// newConfigFlags has every configuration flag (serve and the CLI commands).
func newConfigFlags(name string, stderr io.Writer) *configFlags {
	return newFlags(name, stderr, true)
}

// newFlags has the configuration's flags, the embedded servers' only when
// embedded is set.
func newFlags(name string, stderr io.Writer, embedded bool) *configFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &configFlags{fs: fs, path: fs.String("config", "", "YAML configuration file (see examples/tenantscope.yaml)"), set: map[string]*string{}}
	for _, f := range flagFields {
		if f.embedded && !embedded {
			continue
		}
		c.set[f.flag] = fs.String(f.flag, "", f.usage)
	}
	return c
}

func (c *configFlags) load(getenv func(string) string) (config.Config, error) {
	path := *c.path
	if path == "" {
		path = getenv("TENANTSCOPE_CONFIG")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, err
	}
	cfg.ApplyEnv(getenv)
	if err := cfg.ReadSecretFiles(); err != nil {
		return cfg, err
	}
	var ferr error
	c.fs.Visit(func(f *flag.Flag) {
		v := f.Value.String()
		switch f.Name {
		case "data":
			cfg.Data = v
		case "http":
			cfg.HTTP.Listen = v
		case "metrics-listen":
			cfg.HTTP.MetricsListen = v
		case "nats-listen":
			cfg.NATS.Listen = v
		case "nats-url":
			cfg.NATS.URL = v
		case "engine-listen":
			cfg.ClickHouse.EngineListen = v
		case "clickhouse-dsn":
			cfg.ClickHouse.DSN = v
		case "chdb-lib":
			cfg.ClickHouse.ChdbLib = v
		case "log-level":
			cfg.Log.Level = v
		case "jetstream-budget":
			b, err := config.ParseByteSize(v)
			if err != nil {
				ferr = fmt.Errorf("--jetstream-budget: %w", err)
			}
			cfg.NATS.JetStreamBudget = b
		}
	})
	return cfg, ferr
}

// parseAndLoad parses a command's flags and returns its valid configuration.
func (c *configFlags) parseAndLoad(args []string, getenv func(string) string) (config.Config, error) {
	var err error
	if c.args, err = parseInterleaved(c.fs, args); err != nil {
		return config.Config{}, err
	}
	cfg, err := c.load(getenv)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("configuration is invalid:\n%w", err)
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.Log.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// runSuite runs a server process. serve (components.UI and Collector)
// runs the embedded servers and takes their flags and --demo; collector and
// ui connect to a cluster and take only the flags they use: --audit-writer
// only the collector.
func runSuite(components suite.Components, name string) func(context.Context, []string, func(string) string, io.Writer, io.Writer) error {
	serve := components.UI && components.Collector
	return func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
		cf := newFlags(name, stderr, serve)
		demoFlag := new(bool)
		if serve {
			demoFlag = cf.fs.Bool("demo", false, "publish demo traffic as the configured tenants")
		}
		auditWriter := new(bool)
		if components.Collector {
			auditWriter = cf.fs.Bool("audit-writer", components.AuditWriter, "write the tenants' audit chains (one process at a time holds the writer's lease)")
		}
		cpuProfile := cf.fs.String("cpuprofile", "", "write a CPU profile of this process to this file until it stops (for performance work, e.g. 'bench otlp --cpuprofile')")
		if err := cf.fs.Parse(args); err != nil {
			return err
		}
		cfg, err := cf.load(getenv)
		if err != nil {
			return err
		}
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
		setGoMemory(cfg, getenv)
		c := components
		c.Demo = *demoFlag
		c.AuditWriter = c.Collector && *auditWriter
		return suite.Run(ctx, suite.Options{Config: cfg, Components: c, Log: newLogger(cfg, stderr), Out: stdout, Version: version, Getenv: getenv})
	}
}

func runConfig(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: tenantscope config validate|show|hash", errUsage)
	}
	switch args[0] {
	case "hash":
		// Reads a secret from stdin, prints the bcrypt hash for password_hash
		// fields and the SHA-256 for key_hash fields.
		if wantsHelp(args[1:]) {
			_, err := fmt.Fprintln(stdout, "usage: echo -n SECRET | tenantscope config hash\n\nprints the bcrypt password_hash and the SHA-256 key_hash of the secret read from stdin")
			return err
		}
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
		if err != nil {
			return err
		}
		secret := trimNewline(string(b))
		if secret == "" {
			return errors.New("config hash: pipe the secret on stdin")
		}
		h, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "password_hash: %s\nkey_hash: %s\n", h, config.HashAPIKey(secret))
		return err
	case "validate", "show":
		cfg, err := newConfigFlags("config "+args[0], stderr).parseAndLoad(args[1:], getenv)
		if err != nil {
			return storageOnError(stdout, args[0], cfg, err)
		}
		if args[0] == "show" {
			return yaml.NewEncoder(stdout).Encode(cfg.Redacted())
		}
		card := "no rate card"
		if cfg.Metering.RateCard != "" {
			rc, err := metering.LoadRateCard(cfg.Metering.RateCard, cfg)
			if err != nil {
				return err
			}
			card = fmt.Sprintf("rate card %s: %d versions", cfg.Metering.RateCard, len(rc.Versions))
		}
		_, err = fmt.Fprintf(stdout, "configuration is valid: %d regions, %d tenants, %d users, %d API keys, %d meters; %s\n",
			len(cfg.Regions), len(cfg.Tenants), len(cfg.Users), len(cfg.APIKeys), len(cfg.Metering.Meters), card)
		if err != nil {
			return err
		}
		return printStorage(stdout, cfg)
	}
	return fmt.Errorf("%w: tenantscope config validate|show|hash", errUsage)
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// openRegion opens a region's store the way a client of a running suite
// does: the embedded engine over its HTTP interface, or the configured server.
func openRegion(ctx context.Context, cfg config.Config, r config.Region) (*chstore.Store, error) {
	if err := config.LoadEngineCredentials(&cfg); err != nil {
		return nil, err
	}
	st, err := chstore.Open(ctx, chstore.Options{DSN: cfg.RegionDSN(r, cfg.ClickHouse.EngineListen), Database: r.Database, Name: r.Name, CAFile: cfg.ClickHouse.CAFile})
	if err != nil {
		return nil, fmt.Errorf("region %s (is 'tenantscope serve' or the ClickHouse server running?): %w", r.Name, err)
	}
	return st, nil
}

// openTenantRegion opens the store of a configured tenant's region: where
// it lives after region moves (recorded in the first region's store).
func openTenantRegion(ctx context.Context, cfg config.Config, tenant string) (*chstore.Store, error) {
	first, err := openRegion(ctx, cfg, cfg.Regions[0])
	if err != nil {
		return nil, err
	}
	place := placement.New()
	if err := retention.LoadPlacement(ctx, cfg, place, first); err != nil {
		_ = first.Close() //nolint:errcheck // already failing
		return nil, err
	}
	r, ok := place.RegionOf(cfg, tenant)
	if ok && r.Name == cfg.Regions[0].Name {
		return first, nil
	}
	_ = first.Close() //nolint:errcheck // only read the placement
	if !ok {
		return nil, fmt.Errorf("--tenant %q is not a configured tenant", tenant)
	}
	return openRegion(ctx, cfg, r)
}

// runMigrate applies or lists migrations on every region's store. With the
// embedded engine it reaches the engine over its HTTP interface (the engine
// belongs to the running serve process).
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "status") {
		return fmt.Errorf("%w: tenantscope migrate up|status", errUsage)
	}
	cfg, err := newConfigFlags("migrate "+args[0], stderr).parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if args[0] == "status" {
		fmt.Fprintln(tw, "REGION\tVERSION\tNAME\tSTATE\tAPPLIED AT")
	}
	for _, r := range cfg.Regions {
		st, err := openRegion(ctx, cfg, r)
		if err != nil {
			return err
		}
		p := migrations.Params{Database: r.Database, Cluster: cfg.ClickHouse.Cluster}
		if args[0] == "up" {
			n, err := migrations.Up(ctx, st, p, func(line string) { fmt.Fprintln(stdout, line) })
			if err == nil {
				err = setupMetering(ctx, st, cfg)
			}
			_ = st.Close() //nolint:errcheck // short-lived
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "region %s: %d migrations applied\n", r.Name, n)
			continue
		}
		status, err := migrations.StatusOf(ctx, st, r.Database)
		_ = st.Close() //nolint:errcheck // short-lived
		if err != nil {
			return err
		}
		for _, m := range status {
			state, at := "pending", ""
			if m.Applied {
				state, at = "applied", m.AppliedAt.Format("2006-01-02 15:04:05")
			}
			if m.Edited {
				state = "EDITED after applying"
			}
			fmt.Fprintf(tw, "%s\t%04d\t%s\t%s\t%s\n", r.Name, m.Version, m.Name, state, at)
		}
	}
	if args[0] == "up" {
		return migrateStreams(ctx, cfg, stdout)
	}
	return nil
}

// runDemo publishes demo traffic to a running suite.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cf := newConfigFlags("demo", stderr)
	rate := cf.fs.Float64("rate", 20, "requests per second per tenant")
	count := cf.fs.Int("count", 0, "stop after this many requests per tenant (0: until interrupted)")
	if err := cf.fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.load(getenv)
	if err != nil {
		return err
	}
	tenants, err := suite.DemoTenants(cfg)
	if err != nil {
		return err
	}
	url := cfg.NATS.URL
	if url == "" {
		url = "nats://" + cfg.NATS.Listen
	}
	fmt.Fprintf(stdout, "publishing demo traffic for %d tenants to %s\n", len(tenants), url)
	err = demo.Run(ctx, demo.Options{URL: url, Tenants: tenants, NATS: natsbus.ClientTLS(cfg), Rate: *rate, Count: *count, Log: newLogger(cfg, stderr)})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// setupMetering creates the meters' views and stores the rate card in st.
func setupMetering(ctx context.Context, st *chstore.Store, cfg config.Config) error {
	var card *metering.RateCard
	if cfg.Metering.RateCard != "" {
		var err error
		if card, err = metering.LoadRateCard(cfg.Metering.RateCard, cfg); err != nil {
			return err
		}
	}
	return metering.Setup(ctx, st, cfg, card, zerolog.Nop())
}

// setGoMemory gives the Go runtime the configured soft memory limit and
// garbage collector percent, each unless GOMEMLIMIT or GOGC (which the
// runtime has applied already) is set.
func setGoMemory(cfg config.Config, getenv func(string) string) {
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.GoMemoryLimit())
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.Memory.GoGCPercentOrDefault())
	}
}
