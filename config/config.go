// Package config is tenantscope's one typed configuration.
//
// Precedence: flags > environment (TENANTSCOPE_…) > YAML file > defaults.
// Validate names every wrong field by its YAML path. Secrets (user passwords,
// API keys, tenants' NATS service passwords) are stored hashed; the String
// and MarshalYAML forms never include them.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Roles, as DESIGN.md defines them.
const (
	RoleCompliance   = "compliance"
	RoleFinance      = "finance"
	RoleSRE          = "sre"
	RoleTenantAdmin  = "tenant-admin"
	RoleTenantViewer = "tenant-viewer"
)

// Roles lists every role.
var Roles = []string{RoleCompliance, RoleFinance, RoleSRE, RoleTenantAdmin, RoleTenantViewer}

// TenantScoped reports whether a role is bound to one tenant.
func TenantScoped(role string) bool { return role == RoleTenantAdmin || role == RoleTenantViewer }

// Config is the whole configuration.
type Config struct {
	// Data is the data directory: engine store, JetStream store, bootstrap secrets.
	Data string `yaml:"data"`
	// SecretsFile is the deployment's secrets (signing keys, the session
	// key, the KEK, PII salts, generated password hashes), shared by all its
	// processes; empty: <data>/bootstrap.json. Only 'serve' on the embedded
	// engine and NATS generates secrets, at first start; 'tenantscope
	// secrets init' writes a file for a distributed deployment.
	SecretsFile string     `yaml:"secrets_file"`
	HTTP        HTTP       `yaml:"http"`
	NATS        NATS       `yaml:"nats"`
	ClickHouse  ClickHouse `yaml:"clickhouse"`
	Regions     []Region   `yaml:"regions"`
	Tenants     []Tenant   `yaml:"tenants"`
	Users       []User     `yaml:"users"`
	APIKeys     []APIKey   `yaml:"api_keys"`
	Log         Log        `yaml:"log"`
	Shutdown    Duration   `yaml:"shutdown_timeout"`
	// Quotas are the default per-tenant ingest quotas; a tenant may override them.
	Quotas Quota `yaml:"quotas"`
	// Metering holds meters, the rate card, SLOs and SLA credits.
	Metering Metering `yaml:"metering"`
	// Retention holds retention defaults and bounds, where data subjects
	// are named, and the erasure deadline.
	Retention Retention `yaml:"retention"`
	// Sessions sets the UI sessions' timeouts and cookies.
	Sessions Sessions `yaml:"sessions"`
	// OIDC is single sign-on with an OpenID Connect provider.
	OIDC OIDC `yaml:"oidc"`
	// Memory bounds what a process holds (serve, collector, ui).
	Memory Memory `yaml:"memory"`
}

// The default Go memory limit (Memory.GoLimit) is a base for what serve's
// Go side holds whatever the tenants (a collector batch being decoded and
// two being stored, the store's encoding buffers, NATS, the HTTP edge:
// about 85 MB of live heap in a profile of serve at its peak under OTLP
// load, bench otlp --heapprofile) and an allowance for each tenant: a busy
// tenant's stream keeps the JetStream blocks it is writing and being read
// from (8 MiB each) and more it just wrote, and the collector holds up to a
// batch's bytes pulled from it. At the peak of a burst of SDK batches from
// 4 tenants, serve held 128 MiB of block buffers and 26 MiB of pulled
// messages (bench sdk --heapprofile). The heap's size is set by the GC
// percent (Memory.GoGCPercent, 75: the heap grows to 1.75 times what is
// live); the limit is the backstop, and the Go runtime hands memory back
// to the system as the heap nears it, so it bounds serve's RSS too. A limit
// below the live heap makes the garbage collector run back to back: 192
// MiB + 4 MiB a tenant did during that burst, costing a third of serve's
// throughput.
const (
	DefaultGoMemoryBase      = 160 << 20
	DefaultGoMemoryPerTenant = 40 << 20
	DefaultGoGCPercent       = 75
)

// DefaultEngineAllocator is Memory.EngineAllocator's default: the embedded
// engine's allocator hands freed pages back after 250 ms instead of 5 s.
const DefaultEngineAllocator = "dirty_decay_ms:250"

// Memory bounds a process's memory.
type Memory struct {
	// GoLimit is the Go runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit): above it the garbage collector runs
	// sooner. 0: DefaultGoMemoryBase plus DefaultGoMemoryPerTenant for each
	// configured tenant. GOMEMLIMIT in the environment
	// (e.g. GOMEMLIMIT=off) wins. Raise it with batch sizes or for many
	// busy tenants: a limit below the live heap makes the collector spend
	// up to half the CPU on garbage collection.
	GoLimit ByteSize `yaml:"go_limit"`
	// GoGCPercent is the Go garbage collector's percent
	// (runtime/debug.SetGCPercent): the heap grows to (100+percent)/100
	// times what is live before a collection. 0: DefaultGoGCPercent. GOGC
	// in the environment wins.
	GoGCPercent int `yaml:"go_gc_percent"`
	// EngineAllocator is the embedded engine's allocator options (its
	// jemalloc's, as JE_MALLOC_CONF takes them), set when the engine's
	// library is loaded. Empty: DefaultEngineAllocator; "-": the library's
	// own. JE_MALLOC_CONF in the environment wins.
	EngineAllocator string `yaml:"engine_allocator"`
}

// EngineAllocatorOptions is EngineAllocator or its default ("" for the
// library's own).
func (m Memory) EngineAllocatorOptions() string {
	switch m.EngineAllocator {
	case "":
		return DefaultEngineAllocator
	case "-":
		return ""
	}
	return m.EngineAllocator
}

// GoMemoryLimit is memory.go_limit, or its default for the tenants
// configured.
func (c Config) GoMemoryLimit() int64 {
	if c.Memory.GoLimit > 0 {
		return int64(c.Memory.GoLimit)
	}
	return DefaultGoMemoryBase + int64(len(c.Tenants))*DefaultGoMemoryPerTenant
}

// GoGCPercentOrDefault is memory.go_gc_percent, or its default.
func (m Memory) GoGCPercentOrDefault() int {
	if m.GoGCPercent > 0 {
		return m.GoGCPercent
	}
	return DefaultGoGCPercent
}

// Retention configures the retention engine.
type Retention struct {
	// Defaults are the days each signal is kept when a tenant has no policy.
	Defaults map[string]int `yaml:"defaults"`
	// Minimum and Maximum bound policies per signal (a legal minimum for
	// audit records, say).
	Minimum map[string]int `yaml:"minimum"`
	Maximum map[string]int `yaml:"maximum"`
	// Identifiers say where a data subject's identifier appears, per signal:
	// a column (events: actor, entity; audit_records: actor_id, target_id),
	// payload.<dot.path> (events), or attributes.<key> (logs, spans).
	Identifiers map[string][]string `yaml:"identifiers"`
	// ErasureDeadline is how long an erasure request may stay open (the SLA
	// of the right to be forgotten); requests due within a fifth of it are
	// reminded.
	ErasureDeadline Duration `yaml:"erasure_deadline"`
	// PurgeEvery is how often the purge run enforces policies and holds.
	PurgeEvery Duration `yaml:"purge_every"`
	// KEK is the crypto-shredding key-encryption key (hex, 32 bytes); empty
	// uses one generated at first start (<data>/bootstrap.json).
	KEK string `yaml:"kek"`
	// KEKFile reads KEK from a file.
	KEKFile string `yaml:"kek_file"`
}

// Shred names a tenant's personal event fields (dot paths in the payload)
// and where the data subject they belong to is named (a payload path, or
// "actor"). Each subject's fields are encrypted with the subject's own key;
// destroying the key erases every copy, exports and backups included.
type Shred struct {
	Subject string   `yaml:"subject"`
	Fields  []string `yaml:"fields"`
}

// Signals are the kinds of tenant data with a retention policy.
var Signals = []string{"events", "logs", "spans", "audit_records"}

// Metering configures usage meters, cost and SLAs.
type Metering struct {
	// Meters are user-defined meters over domain events (as OpenMeter's).
	Meters []Meter `yaml:"meters"`
	// RateCard is the path of the rate card YAML, relative to the
	// configuration file; empty: usage without prices.
	RateCard string `yaml:"rate_card"`
	// SLO is every tenant's default objective; a tenant may override it.
	SLO SLO `yaml:"slo"`
	// Credits is the SLA credit schedule: the share of a tenant's bill owed
	// when the period's availability falls below a threshold (the lowest
	// threshold that applies wins).
	Credits []Credit `yaml:"sla_credits"`
	// ComputeCostPerSecond prices a second of server span time per service
	// ("*" for the rest), for the margin report.
	ComputeCostPerSecond map[string]float64 `yaml:"compute_cost_per_second"`
	// MaxServicesPerTenant bounds the service label of per-tenant metrics;
	// the rest are summed as service="other".
	MaxServicesPerTenant int `yaml:"max_services_per_tenant"`
}

// Meter aggregates domain events whose action matches Action (a * matches
// any run of characters): count, sum, unique_count, max or latest of the
// number (string for unique_count) at the dot-separated JSON path Value of
// the payload, grouped by the values at the GroupBy paths.
type Meter struct {
	Name        string   `yaml:"name"`
	Action      string   `yaml:"action"`
	Aggregation string   `yaml:"aggregation"`
	Value       string   `yaml:"value"`
	GroupBy     []string `yaml:"group_by"`
}

// SLO is a service level objective: the share of good server requests
// (not an error status, not an HTTP 5xx) and a latency bound.
type SLO struct {
	// Availability is a percentage, e.g. 99.9.
	Availability float64 `yaml:"availability"`
	// LatencyP99 is the bound of the 99th percentile of server span duration.
	LatencyP99 Duration `yaml:"latency_p99"`
}

// Credit is one step of the SLA credit schedule.
type Credit struct {
	Below         float64 `yaml:"below"`
	CreditPercent float64 `yaml:"credit_percent"`
}

// HTTP is the UI, API, OTLP and health listener, and the metrics listener.
type HTTP struct {
	Listen string `yaml:"listen"`
	// MetricsListen serves every series, per-tenant ones included (loopback
	// by default; put Prometheus next to it or give it a token). The main
	// listener's /metrics keeps only series without a tenant label.
	MetricsListen string `yaml:"metrics_listen"`
	// MetricsToken, when set, is the bearer token the metrics listener
	// requires; MetricsTokenFile reads it from a file.
	MetricsToken     string `yaml:"metrics_token"`
	MetricsTokenFile string `yaml:"metrics_token_file"`
	// MetricsPprof serves Go's profiles (heap, allocs, goroutine, CPU
	// profile, execution trace) under /debug/pprof/ on the metrics
	// listener, behind its token; off by default. The command line is not
	// served: a flag may carry a secret.
	MetricsPprof bool `yaml:"metrics_pprof"`
	// TLSCert and TLSKey serve both listeners over TLS (PEM files, read
	// again when they change).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TrustedProxies are the load balancers (IPs or CIDRs) whose
	// X-Forwarded-Proto is believed (HSTS and Secure cookies behind them).
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Proxies parses TrustedProxies (validated by Validate).
func (h HTTP) Proxies() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range h.TrustedProxies {
		if pf, err := parseProxy(p); err == nil {
			out = append(out, pf)
		}
	}
	return out
}

func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// NATS is the bus: an embedded server (Listen) or an existing cluster (URL).
type NATS struct {
	Listen string `yaml:"listen"`
	URL    string `yaml:"url"`
	// Credentials the suite's own processes use against an external cluster.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// PasswordFile reads Password from a file.
	PasswordFile string `yaml:"password_file"`
	// CredsFile signs the suite in with a NATS credentials file (a user JWT
	// and its nkey seed, from 'tenantscope nats setup') instead of a password.
	CredsFile string `yaml:"creds_file"`
	// TLSCert and TLSKey serve the embedded NATS listener over TLS; with
	// TLSVerifyClients every client must also show a certificate signed by
	// CAFile (mutual TLS).
	TLSCert          string `yaml:"tls_cert"`
	TLSKey           string `yaml:"tls_key"`
	TLSVerifyClients bool   `yaml:"tls_verify_clients"`
	// CAFile is the CA that signs the NATS servers' (and, for mutual TLS,
	// the clients') certificates; ClientCert and ClientKey are this
	// process's own for mutual TLS.
	CAFile     string `yaml:"ca_file"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	Stream     Stream `yaml:"stream"`

	// JetStreamBudget is the JetStream file storage each NATS node may
	// reserve for the suite's streams (its max_file_store; 0: not stated).
	// The embedded server uses it as its max_file_store; 'config validate'
	// checks the streams' reservations against it.
	JetStreamBudget ByteSize `yaml:"jetstream_budget"`
}

// Stream holds the explicit limits of the ingest stream.
type Stream struct {
	MaxAge   Duration `yaml:"max_age"`
	MaxBytes int64    `yaml:"max_bytes"`
	// MaxMsgSize is the largest message the server accepts.
	MaxMsgSize int32    `yaml:"max_msg_size"`
	Duplicates Duration `yaml:"duplicate_window"`
	Replicas   int      `yaml:"replicas"`

	// DeadLetterMaxBytes limits the dead-letter stream (0: max_bytes).
	DeadLetterMaxBytes int64 `yaml:"dead_letter_max_bytes"`
	// MaxBacklogAge is how old the oldest message waiting for the
	// collectors may get before a collector process reports itself not
	// ready (/readyz 503); 0 turns the check off.
	MaxBacklogAge Duration `yaml:"max_backlog_age"`
}

// ClickHouse is the store: the embedded engine (DSN empty) or a server.
type ClickHouse struct {
	DSN          string `yaml:"dsn"`
	EngineListen string `yaml:"engine_listen"`
	// User and Password are the suite's read-write user of the embedded
	// engine; ReaderUser and ReaderPassword its read-only user for people,
	// Grafana and curl. Empty passwords are generated at the first start of
	// 'serve' and kept in the bootstrap file. *_file fields read them from
	// a file (for production secrets).
	User               string `yaml:"user"`
	Password           string `yaml:"password"`
	PasswordFile       string `yaml:"password_file"`
	ReaderUser         string `yaml:"reader_user"`
	ReaderPassword     string `yaml:"reader_password"`
	ReaderPasswordFile string `yaml:"reader_password_file"`
	// EngineAllowOrigins are browser origins the engine's HTTP interface
	// accepts (none by default: a request with an Origin header is refused).
	EngineAllowOrigins []string `yaml:"engine_allow_origins"`
	// EngineHosts are extra names (Host header values) of the engine's
	// listener besides its address, e.g. the name Grafana reaches it by.
	EngineHosts []string `yaml:"engine_hosts"`
	// EngineTLSCert and EngineTLSKey serve the embedded engine over https.
	EngineTLSCert string `yaml:"engine_tls_cert"`
	EngineTLSKey  string `yaml:"engine_tls_key"`
	// CAFile verifies https:// ClickHouse servers (and the embedded
	// engine's TLS) against this CA instead of the system's roots.
	CAFile   string `yaml:"ca_file"`
	ChdbLib  string `yaml:"chdb_lib"`
	PoolSize int    `yaml:"pool_size"`
	// Cluster, when set, adds ON CLUSTER and Replicated engines to migrations.
	Cluster string `yaml:"cluster"`
}

// Region is a separate store; each tenant is pinned to one.
type Region struct {
	Name string `yaml:"name"`
	// Database is the region's database (in the embedded engine, or on DSN's server).
	Database string `yaml:"database"`
	// DSN points the region at its own ClickHouse; empty uses clickhouse.dsn or the embedded engine.
	DSN string `yaml:"dsn"`
	// HTTPURL is the region's ClickHouse HTTP interface as other regions'
	// servers reach it (http://user:password@host:8123), for moving a
	// tenant to a region on another server; empty uses DSN when it is HTTP.
	HTTPURL string `yaml:"http_url"`
}

// Tenant is a customer of the platform.
type Tenant struct {
	ID     string      `yaml:"id"`
	Name   string      `yaml:"name"`
	Region string      `yaml:"region"`
	NATS   Credentials `yaml:"nats"`
	// Quota overrides the default quotas field by field (zero keeps the default).
	Quota Quota `yaml:"quota"`
	// Redact lists PII rules applied to every message body before anything is stored.
	Redact []RedactRule `yaml:"redact"`
	// SLO overrides metering.slo for this tenant, field by field.
	SLO SLO `yaml:"slo"`
	// Shred encrypts personal fields of this tenant's events at ingest with
	// a key per data subject (crypto-shredding).
	Shred Shred `yaml:"shred"`
	// PIISalt keys hashed PII; empty uses a salt generated at first start
	// (<data>/bootstrap.json). Set it when collectors do not share a data directory.
	PIISalt string `yaml:"pii_salt"`
}

// RedactRule masks, hashes (SHA-256 with the tenant's salt) or drops personal
// data: either the value at a dot-separated field Path ("customer.email",
// "*" matches any key, arrays are walked), or every match of Pattern in any
// string value (log messages included).
type RedactRule struct {
	Path    string `yaml:"path"`
	Pattern string `yaml:"pattern"`
	Action  string `yaml:"action"` // mask, hash or drop
}

// Quota limits one tenant's ingest. The collector takes at most
// EventsPerSecond messages and BytesPerSecond bytes per second from the
// tenant's stream (a flood is slowed, not dropped); the stream keeps at most
// BacklogBytes waiting, beyond which the tenant's publishers get an error.
type Quota struct {
	EventsPerSecond float64 `yaml:"events_per_second"`
	BytesPerSecond  float64 `yaml:"bytes_per_second"`
	BacklogBytes    int64   `yaml:"backlog_bytes"`
}

// SLOOf is a tenant's effective objective.
func (c Config) SLOOf(t Tenant) SLO {
	s := c.Metering.SLO
	if t.SLO.Availability > 0 {
		s.Availability = t.SLO.Availability
	}
	if t.SLO.LatencyP99 > 0 {
		s.LatencyP99 = t.SLO.LatencyP99
	}
	return s
}

// QuotaOf is a tenant's effective quota.
func (c Config) QuotaOf(t Tenant) Quota {
	q := c.Quotas
	if t.Quota.EventsPerSecond > 0 {
		q.EventsPerSecond = t.Quota.EventsPerSecond
	}
	if t.Quota.BytesPerSecond > 0 {
		q.BytesPerSecond = t.Quota.BytesPerSecond
	}
	if t.Quota.BacklogBytes > 0 {
		q.BacklogBytes = t.Quota.BacklogBytes
	}
	if q.BacklogBytes == 0 {
		q.BacklogBytes = c.NATS.Stream.MaxBytes
	}
	return q
}

// Credentials is a user name with a bcrypt password hash. An empty hash
// means "generate one at first start and print it once".
type Credentials struct {
	User         string `yaml:"user"`
	PasswordHash string `yaml:"password_hash"`
	// Nkey is the public nkey (U...) a service may sign in with instead of
	// the password, with the seed from 'tenantscope nats creds'. Empty: the
	// embedded server's key from the bootstrap file.
	Nkey string `yaml:"nkey"`
}

// User is a person signing in to the UI.
type User struct {
	Name         string `yaml:"name"`
	Role         string `yaml:"role"`
	Tenant       string `yaml:"tenant"`
	PasswordHash string `yaml:"password_hash"`
}

// APIKey is a machine credential; KeyHash is the hex SHA-256 of the key.
type APIKey struct {
	Name    string `yaml:"name"`
	Role    string `yaml:"role"`
	Tenant  string `yaml:"tenant"`
	KeyHash string `yaml:"key_hash"`
}

// Log configures logging.
type Log struct {
	Level string `yaml:"level"`
}

// Duration is a time.Duration written as "72h".
type Duration time.Duration

// UnmarshalYAML parses "90s", "72h".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 72h", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default is the configuration of an embedded single-machine run.
func Default() Config {
	return Config{
		Data: "./data",
		HTTP: HTTP{Listen: "127.0.0.1:8080", MetricsListen: "127.0.0.1:9464"},
		NATS: NATS{Listen: "127.0.0.1:4222", Stream: Stream{
			MaxAge: Duration(72 * time.Hour), MaxBytes: 1 << 30, MaxMsgSize: 1 << 20,
			Duplicates: Duration(2 * time.Minute), Replicas: 1, MaxBacklogAge: Duration(5 * time.Minute),
		}},
		ClickHouse: ClickHouse{EngineListen: "127.0.0.1:8123"},
		Regions:    []Region{{Name: "default", Database: "tenantscope"}},
		Log:        Log{Level: "info"},
		Shutdown:   Duration(20 * time.Second),
		Quotas:     Quota{EventsPerSecond: 20000, BytesPerSecond: 32 << 20},
		Sessions:   DefaultSessions(),
		OIDC:       OIDC{LocalUsers: true},
		Retention: Retention{
			Defaults: map[string]int{"events": 90, "logs": 30, "spans": 14, "audit_records": 2555},
			Minimum:  map[string]int{"events": 1, "logs": 1, "spans": 1, "audit_records": 2555},
			Maximum:  map[string]int{"events": 3650, "logs": 3650, "spans": 3650, "audit_records": 3650},
			Identifiers: map[string][]string{
				"events": {"actor", "entity"}, "logs": {"attributes.user_id"}, "spans": {"attributes.user_id"},
				"audit_records": {"actor_id", "target_id"},
			},
			ErasureDeadline: Duration(30 * 24 * time.Hour),
			PurgeEvery:      Duration(time.Hour),
		},
		Metering: Metering{
			SLO:                  SLO{Availability: 99.9, LatencyP99: Duration(time.Second)},
			Credits:              []Credit{{Below: 99.9, CreditPercent: 10}, {Below: 99.0, CreditPercent: 25}, {Below: 95.0, CreditPercent: 50}},
			MaxServicesPerTenant: 20,
		},
	}
}

// Load reads a YAML file over the defaults; unknown fields are errors.
func Load(path string) (Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg, err = Parse(b)
	// Files the configuration names are relative to it.
	if rc := cfg.Metering.RateCard; rc != "" && !filepath.IsAbs(rc) {
		cfg.Metering.RateCard = filepath.Join(filepath.Dir(path), rc)
	}
	return cfg, err
}

// Parse decodes YAML over the defaults.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	// A file that lists regions replaces the default region.
	cfg.Regions = nil
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if cfg.Regions == nil {
		cfg.Regions = Default().Regions
	}
	return cfg, nil
}

// Env lists the environment variables and the fields they set.
var Env = []struct {
	Name  string
	Field string
	set   func(*Config, string)
}{
	{"TENANTSCOPE_DATA", "data", func(c *Config, v string) { c.Data = v }},
	{"TENANTSCOPE_SECRETS_FILE", "secrets_file", func(c *Config, v string) { c.SecretsFile = v }},
	{"TENANTSCOPE_HTTP", "http.listen", func(c *Config, v string) { c.HTTP.Listen = v }},
	{"TENANTSCOPE_METRICS_LISTEN", "http.metrics_listen", func(c *Config, v string) { c.HTTP.MetricsListen = v }},
	{"TENANTSCOPE_METRICS_TOKEN", "http.metrics_token", func(c *Config, v string) { c.HTTP.MetricsToken = v }},
	{"TENANTSCOPE_NATS_LISTEN", "nats.listen", func(c *Config, v string) { c.NATS.Listen = v }},
	{"TENANTSCOPE_NATS_URL", "nats.url", func(c *Config, v string) { c.NATS.URL = v }},
	{"TENANTSCOPE_NATS_USER", "nats.user", func(c *Config, v string) { c.NATS.User = v }},
	{"TENANTSCOPE_NATS_PASSWORD", "nats.password", func(c *Config, v string) { c.NATS.Password = v }},
	{"TENANTSCOPE_CLICKHOUSE_DSN", "clickhouse.dsn", func(c *Config, v string) { c.ClickHouse.DSN = v }},
	{"TENANTSCOPE_CLICKHOUSE_PASSWORD", "clickhouse.password", func(c *Config, v string) { c.ClickHouse.Password = v }},
	{"TENANTSCOPE_CLICKHOUSE_READER_PASSWORD", "clickhouse.reader_password", func(c *Config, v string) { c.ClickHouse.ReaderPassword = v }},
	{"TENANTSCOPE_RETENTION_KEK", "retention.kek", func(c *Config, v string) { c.Retention.KEK = v }},
	{"TENANTSCOPE_OIDC_CLIENT_SECRET", "oidc.client_secret", func(c *Config, v string) { c.OIDC.ClientSecret = v }},
	{"TENANTSCOPE_ENGINE_LISTEN", "clickhouse.engine_listen", func(c *Config, v string) { c.ClickHouse.EngineListen = v }},
	{"TENANTSCOPE_CHDB_LIB", "clickhouse.chdb_lib", func(c *Config, v string) { c.ClickHouse.ChdbLib = v }},
	{"TENANTSCOPE_LOG_LEVEL", "log.level", func(c *Config, v string) { c.Log.Level = v }},
}

// ApplyEnv overrides fields from the environment.
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, e := range Env {
		if v := getenv(e.Name); v != "" {
			e.set(c, v)
		}
	}
}

// ReadSecretFiles fills each secret that names a file (…_file) from it; the
// file's content, without a trailing newline, is the secret.
func (c *Config) ReadSecretFiles() error {
	for _, f := range []struct {
		field, path string
		into        *string
	}{
		{"nats.password_file", c.NATS.PasswordFile, &c.NATS.Password},
		{"clickhouse.password_file", c.ClickHouse.PasswordFile, &c.ClickHouse.Password},
		{"clickhouse.reader_password_file", c.ClickHouse.ReaderPasswordFile, &c.ClickHouse.ReaderPassword},
		{"retention.kek_file", c.Retention.KEKFile, &c.Retention.KEK},
		{"http.metrics_token_file", c.HTTP.MetricsTokenFile, &c.HTTP.MetricsToken},
		{"oidc.client_secret_file", c.OIDC.ClientSecretFile, &c.OIDC.ClientSecret},
	} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return fmt.Errorf("config: %s: %w", f.field, err)
		}
		*f.into = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}

// EngineUser and EngineReader are the default names of the embedded
// engine's users.
const (
	EngineUser   = "tenantscope"
	EngineReader = "reader"
)

var (
	idRe     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	dbRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Embedded reports whether the suite runs the embedded ClickHouse engine.
func (c Config) Embedded() bool { return c.ClickHouse.DSN == "" }

// EmbeddedNATS reports whether the suite runs its own NATS server.
func (c Config) EmbeddedNATS() bool { return c.NATS.URL == "" }

// Validate checks the whole configuration and names each wrong field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.Data == "" {
		bad("data", "is required")
	}
	checkAddr := func(field, v string, required bool) {
		if v == "" {
			if required {
				bad(field, "is required")
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(field, "%q is not host:port", v)
		}
	}
	checkAddr("http.listen", c.HTTP.Listen, true)
	if c.HTTP.MetricsListen != "" {
		checkAddr("http.metrics_listen", c.HTTP.MetricsListen, true)
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		bad("http.tls_cert", "tls_cert and tls_key go together")
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		bad("nats.tls_cert", "tls_cert and tls_key go together")
	}
	if c.NATS.TLSVerifyClients && c.NATS.CAFile == "" {
		bad("nats.tls_verify_clients", "needs nats.ca_file, the CA of the clients' certificates")
	}
	if (c.ClickHouse.EngineTLSCert == "") != (c.ClickHouse.EngineTLSKey == "") {
		bad("clickhouse.engine_tls_cert", "engine_tls_cert and engine_tls_key go together")
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			bad(fmt.Sprintf("http.trusted_proxies[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}
	if c.EmbeddedNATS() {
		checkAddr("nats.listen", c.NATS.Listen, true)
	} else if !strings.HasPrefix(c.NATS.URL, "nats://") && !strings.HasPrefix(c.NATS.URL, "tls://") {
		bad("nats.url", "%q must start with nats:// or tls://", c.NATS.URL)
	}
	if c.NATS.Stream.MaxAge <= 0 {
		bad("nats.stream.max_age", "must be positive")
	}
	if c.NATS.Stream.MaxBytes <= 0 {
		bad("nats.stream.max_bytes", "must be positive")
	}
	if c.NATS.Stream.MaxBacklogAge < 0 {
		bad("nats.stream.max_backlog_age", "must not be negative (0 turns the readiness check off)")
	}
	if c.NATS.Stream.MaxMsgSize <= 0 {
		bad("nats.stream.max_msg_size", "must be positive")
	}
	if c.NATS.Stream.Replicas < 1 || c.NATS.Stream.Replicas > 5 {
		bad("nats.stream.replicas", "must be 1 to 5, got %d", c.NATS.Stream.Replicas)
	}
	c.validateStreams(bad)
	if c.Embedded() {
		checkAddr("clickhouse.engine_listen", c.ClickHouse.EngineListen, true)
	} else if !strings.HasPrefix(c.ClickHouse.DSN, "clickhouse://") && !strings.HasPrefix(c.ClickHouse.DSN, "http://") && !strings.HasPrefix(c.ClickHouse.DSN, "https://") {
		bad("clickhouse.dsn", "%q must start with clickhouse://, http:// or https://", c.ClickHouse.DSN)
	}
	if c.ClickHouse.PoolSize < 0 {
		bad("clickhouse.pool_size", "must be >= 0")
	}
	if len(c.Regions) == 0 {
		bad("regions", "at least one region is required")
	}
	regions := map[string]bool{}
	dbs := map[string]string{}
	for i, r := range c.Regions {
		f := fmt.Sprintf("regions[%d]", i)
		if !idRe.MatchString(r.Name) {
			bad(f+".name", "%q must be lower-case letters, digits, - or _", r.Name)
		}
		if regions[r.Name] {
			bad(f+".name", "duplicate region %q", r.Name)
		}
		regions[r.Name] = true
		if !dbRe.MatchString(r.Database) {
			bad(f+".database", "%q is not a valid database name", r.Database)
		}
		key := r.DSN + "/" + r.Database
		if other, ok := dbs[key]; ok {
			bad(f+".database", "region %q uses the same store as region %q; each region needs its own", r.Name, other)
		}
		dbs[key] = r.Name
		if r.HTTPURL != "" {
			if u, err := url.Parse(r.HTTPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(f+".http_url", "%q must be the region's ClickHouse HTTP interface, like http://host:8123", redactDSN(r.HTTPURL))
			}
		}
		if r.DSN != "" && c.Embedded() {
			bad(f+".dsn", "set only with clickhouse.dsn (distributed mode); the embedded engine holds every region as a database")
		}
	}
	tenants := map[string]bool{}
	natsUsers := map[string]bool{}
	for i, t := range c.Tenants {
		f := fmt.Sprintf("tenants[%d]", i)
		if !idRe.MatchString(t.ID) {
			bad(f+".id", "%q must be lower-case letters, digits, - or _ (it is a NATS subject token)", t.ID)
		}
		if tenants[t.ID] {
			bad(f+".id", "duplicate tenant %q", t.ID)
		}
		tenants[t.ID] = true
		if !regions[t.Region] {
			bad(f+".region", "unknown region %q", t.Region)
		}
		if t.NATS.User == "" {
			bad(f+".nats.user", "is required (the tenant's service credentials)")
		} else if natsUsers[t.NATS.User] {
			bad(f+".nats.user", "duplicate NATS user %q", t.NATS.User)
		}
		natsUsers[t.NATS.User] = true
		if t.NATS.PasswordHash != "" && !isBcrypt(t.NATS.PasswordHash) {
			bad(f+".nats.password_hash", "must be a bcrypt hash ($2a$/$2b$…); generate one with 'tenantscope config hash'")
		}
	}
	checkRole := func(f, role, tenant string) {
		if !contains(Roles, role) {
			bad(f+".role", "%q is not one of %s", role, strings.Join(Roles, ", "))
			return
		}
		if TenantScoped(role) && !tenants[tenant] {
			bad(f+".tenant", "role %s needs a configured tenant, got %q", role, tenant)
		}
		if !TenantScoped(role) && tenant != "" {
			bad(f+".tenant", "role %s spans all tenants; leave tenant empty", role)
		}
	}
	users := map[string]bool{}
	for i, u := range c.Users {
		f := fmt.Sprintf("users[%d]", i)
		if u.Name == "" {
			bad(f+".name", "is required")
		}
		if users[u.Name] {
			bad(f+".name", "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		checkRole(f, u.Role, u.Tenant)
		if u.PasswordHash != "" && !isBcrypt(u.PasswordHash) {
			bad(f+".password_hash", "must be a bcrypt hash; generate one with 'tenantscope config hash'")
		}
	}
	keys := map[string]bool{}
	for i, k := range c.APIKeys {
		f := fmt.Sprintf("api_keys[%d]", i)
		if k.Name == "" {
			bad(f+".name", "is required")
		}
		if keys[k.Name] {
			bad(f+".name", "duplicate API key %q", k.Name)
		}
		keys[k.Name] = true
		checkRole(f, k.Role, k.Tenant)
		if k.KeyHash != "" && !sha256Re.MatchString(k.KeyHash) {
			bad(f+".key_hash", "must be the hex SHA-256 of the key (64 lower-case hex digits)")
		}
	}
	checkQuota := func(f string, q Quota) {
		if q.EventsPerSecond < 0 {
			bad(f+".events_per_second", "must not be negative")
		}
		if q.BytesPerSecond < 0 {
			bad(f+".bytes_per_second", "must not be negative")
		}
		if q.BacklogBytes < 0 {
			bad(f+".backlog_bytes", "must not be negative")
		}
	}
	checkQuota("quotas", c.Quotas)
	if c.Quotas.EventsPerSecond == 0 {
		bad("quotas.events_per_second", "must be positive")
	}
	if c.Quotas.BytesPerSecond == 0 {
		bad("quotas.bytes_per_second", "must be positive")
	}
	for i, t := range c.Tenants {
		checkQuota(fmt.Sprintf("tenants[%d].quota", i), t.Quota)
		for j, r := range t.Redact {
			f := fmt.Sprintf("tenants[%d].redact[%d]", i, j)
			if (r.Path == "") == (r.Pattern == "") {
				bad(f, "set exactly one of path and pattern")
			}
			if r.Pattern != "" {
				if _, err := regexp.Compile(r.Pattern); err != nil {
					bad(f+".pattern", "%v", err)
				}
			}
			if r.Action != "mask" && r.Action != "hash" && r.Action != "drop" {
				bad(f+".action", "%q is not mask, hash or drop", r.Action)
			}
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Shutdown <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	if g := c.Memory.GoGCPercent; g < 0 || g > 10000 {
		bad("memory.go_gc_percent", "must be between 1 and 10000 (0: the default, %d), got %d", DefaultGoGCPercent, g)
	}
	c.validateMetering(bad)
	c.validateRetention(bad)
	c.validateOIDC(bad)
	if err := c.Sessions.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func isBcrypt(s string) bool {
	return len(s) == 60 && (strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$"))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// RegionDSN is where a region's store is: its own DSN, else clickhouse.dsn,
// else the embedded engine's HTTP interface at engineAddr.
func (c Config) RegionDSN(r Region, engineAddr string) string {
	switch {
	case r.DSN != "":
		return r.DSN
	case c.Embedded():
		scheme := "http://"
		if c.ClickHouse.EngineTLSCert != "" {
			scheme = "https://"
		}
		if c.ClickHouse.User != "" {
			return scheme + url.UserPassword(c.ClickHouse.User, c.ClickHouse.Password).String() + "@" + engineAddr
		}
		return scheme + engineAddr
	}
	return c.ClickHouse.DSN
}

// RegionOf returns a tenant's configured region (the platform chain's is
// the first region). Where a tenant lives after region moves is runtime
// state: ask the process's placement (placement.Placement.RegionOf).
func (c Config) RegionOf(tenant string) (Region, bool) {
	region := ""
	if tenant == PlatformTenant {
		region = c.Regions[0].Name
	}
	for i := range c.Tenants {
		if c.Tenants[i].ID == tenant {
			region = c.Tenants[i].Region
			break
		}
	}
	return c.Region(region)
}

// Region returns the configured region of that name.
func (c Config) Region(name string) (Region, bool) {
	for _, r := range c.Regions {
		if name != "" && r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// PlatformTenant names the platform audit chain: the suite's own actions
// that belong to no tenant (sign-ins of platform users, changes of users,
// roles and API keys). It never clashes with a tenant, whose id begins with
// a letter or digit.
const PlatformTenant = "_platform"

// Platform is the pseudo-tenant that holds the platform chain, stored in the
// first region.
func (c Config) Platform() Tenant {
	return Tenant{ID: PlatformTenant, Name: "Platform (tenantscope itself)", Region: c.Regions[0].Name}
}

// ChainTenants is every owner of an audit chain: the tenants, then the
// platform.
func (c Config) ChainTenants() []Tenant {
	return append(append([]Tenant(nil), c.Tenants...), c.Platform())
}

// Redacted is the configuration with every secret removed, for printing.
func (c Config) Redacted() Config {
	r := c
	r.NATS.Password = redact(c.NATS.Password)
	r.ClickHouse.DSN = redactDSN(c.ClickHouse.DSN)
	r.ClickHouse.Password = redact(c.ClickHouse.Password)
	r.HTTP.MetricsToken = redact(c.HTTP.MetricsToken)
	r.ClickHouse.ReaderPassword = redact(c.ClickHouse.ReaderPassword)
	r.Retention.KEK = redact(c.Retention.KEK)
	r.OIDC.ClientSecret = redact(c.OIDC.ClientSecret)
	r.Tenants = append([]Tenant(nil), c.Tenants...)
	for i := range r.Tenants {
		r.Tenants[i].NATS.PasswordHash = redact(r.Tenants[i].NATS.PasswordHash)
		r.Tenants[i].PIISalt = redact(r.Tenants[i].PIISalt)
	}
	r.Users = append([]User(nil), c.Users...)
	for i := range r.Users {
		r.Users[i].PasswordHash = redact(r.Users[i].PasswordHash)
	}
	r.APIKeys = append([]APIKey(nil), c.APIKeys...)
	for i := range r.APIKeys {
		r.APIKeys[i].KeyHash = redact(r.APIKeys[i].KeyHash)
	}
	r.Regions = append([]Region(nil), c.Regions...)
	for i := range r.Regions {
		r.Regions[i].DSN = redactDSN(r.Regions[i].DSN)
		r.Regions[i].HTTPURL = redactDSN(r.Regions[i].HTTPURL)
	}
	return r
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

var dsnPassRe = regexp.MustCompile(`://([^:/@]*):[^@]*@`)

func redactDSN(s string) string { return dsnPassRe.ReplaceAllString(s, "://$1:REDACTED@") }

var (
	meterNameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	jsonPathRe  = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,7}$`)
	actionRe    = regexp.MustCompile(`^[A-Za-z0-9_.*-]{1,128}$`)
)

// Aggregations a meter may use.
var Aggregations = []string{"count", "sum", "unique_count", "max", "latest"}

func (c Config) validateMetering(bad func(field, format string, a ...any)) {
	m := c.Metering
	seen := map[string]bool{}
	for i, mt := range m.Meters {
		f := fmt.Sprintf("metering.meters[%d]", i)
		if !meterNameRe.MatchString(mt.Name) {
			bad(f+".name", "%q is not a meter name (lower case letters, digits, _; starting with a letter)", mt.Name)
		} else if seen[mt.Name] || slices.Contains(BuiltinMeters, mt.Name) {
			bad(f+".name", "%q is defined twice or is a built-in meter", mt.Name)
		}
		seen[mt.Name] = true
		if !actionRe.MatchString(mt.Action) {
			bad(f+".action", "%q is not an action pattern (letters, digits, . _ - and *)", mt.Action)
		}
		if !slices.Contains(Aggregations, mt.Aggregation) {
			bad(f+".aggregation", "%q is not one of %s", mt.Aggregation, strings.Join(Aggregations, ", "))
		}
		if mt.Aggregation == "count" && mt.Value != "" {
			bad(f+".value", "a count meter takes no value")
		}
		if mt.Aggregation != "count" && !jsonPathRe.MatchString(mt.Value) {
			bad(f+".value", "%q is not a dot-separated JSON path", mt.Value)
		}
		if len(mt.GroupBy) > 4 {
			bad(f+".group_by", "at most 4 keys")
		}
		for j, g := range mt.GroupBy {
			if !jsonPathRe.MatchString(g) {
				bad(fmt.Sprintf("%s.group_by[%d]", f, j), "%q is not a dot-separated JSON path", g)
			}
		}
	}
	checkSLO := func(f string, s SLO) {
		if s.Availability != 0 && (s.Availability <= 0 || s.Availability >= 100) {
			bad(f+".availability", "%v is not a percentage between 0 and 100 (exclusive)", s.Availability)
		}
		if s.LatencyP99 < 0 {
			bad(f+".latency_p99", "is negative")
		}
	}
	checkSLO("metering.slo", m.SLO)
	for i, t := range c.Tenants {
		checkSLO(fmt.Sprintf("tenants[%d].slo", i), t.SLO)
	}
	for i, cr := range m.Credits {
		f := fmt.Sprintf("metering.sla_credits[%d]", i)
		if cr.Below <= 0 || cr.Below > 100 {
			bad(f+".below", "%v is not a percentage", cr.Below)
		}
		if cr.CreditPercent < 0 || cr.CreditPercent > 100 {
			bad(f+".credit_percent", "%v is not a percentage", cr.CreditPercent)
		}
	}
	for svc, rate := range m.ComputeCostPerSecond {
		if rate < 0 {
			bad("metering.compute_cost_per_second."+svc, "is negative")
		}
	}
	if m.MaxServicesPerTenant < 0 {
		bad("metering.max_services_per_tenant", "is negative")
	}
}

// BuiltinMeters are the usage meters every tenant has (per period):
// counts and bytes of each signal, stored bytes, requests and exports.
var BuiltinMeters = []string{
	"events", "event_bytes", "logs", "log_bytes", "spans", "span_bytes", "audit_records",
	"stored_bytes", "api_requests", "ui_requests", "exports", "compute_seconds",
}

var identifierRe = regexp.MustCompile(`^(actor|entity|actor_id|target_id|payload(\.[A-Za-z0-9_]{1,64}){1,8}|attributes\.[A-Za-z0-9_.-]{1,64})$`)

func (c Config) validateRetention(bad func(field, format string, a ...any)) {
	r := c.Retention
	for _, sig := range Signals {
		lo, hi, d := r.Minimum[sig], r.Maximum[sig], r.Defaults[sig]
		if lo < 1 || hi > 65534 || lo > hi {
			bad("retention.minimum."+sig, "bounds %d..%d are not within 1..65534", lo, hi)
		}
		if d < lo || d > hi {
			bad("retention.defaults."+sig, "%d days is outside the bounds %d..%d", d, lo, hi)
		}
	}
	for sig, ids := range r.Identifiers {
		if !slices.Contains(Signals, sig) {
			bad("retention.identifiers."+sig, "is not one of %s", strings.Join(Signals, ", "))
		}
		for i, id := range ids {
			if !identifierRe.MatchString(id) {
				bad(fmt.Sprintf("retention.identifiers.%s[%d]", sig, i), "%q is not a column (actor, entity, actor_id, target_id), payload.<path> or attributes.<key>", id)
			}
		}
	}
	for i, t := range c.Tenants {
		if len(t.Shred.Fields) == 0 {
			continue
		}
		f := fmt.Sprintf("tenants[%d].shred", i)
		if t.Shred.Subject != "actor" && !jsonPathRe.MatchString(t.Shred.Subject) {
			bad(f+".subject", "%q is not actor or a payload dot path", t.Shred.Subject)
		}
		for j, p := range t.Shred.Fields {
			if !jsonPathRe.MatchString(p) {
				bad(fmt.Sprintf("%s.fields[%d]", f, j), "%q is not a payload dot path", p)
			}
		}
	}
	if k := r.KEK; k != "" {
		if b, err := hex.DecodeString(k); err != nil || len(b) != 32 {
			bad("retention.kek", "is not 32 bytes in hex")
		}
	}
	if r.ErasureDeadline <= 0 {
		bad("retention.erasure_deadline", "must be positive")
	}
	if r.PurgeEvery <= 0 {
		bad("retention.purge_every", "must be positive")
	}
}
