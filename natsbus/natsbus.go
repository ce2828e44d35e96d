// Package natsbus runs the embedded NATS server (JetStream on disk, loopback
// listener, one user per tenant that may publish only to tenant.{id}.>) or
// connects to an existing cluster, and declares the suite's streams and
// consumers idempotently with explicit limits.
package natsbus

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/config"
)

// Stream and consumer names.
const (
	DeadLetterStream = "TENANTSCOPE_DEADLETTER"
	CollectorDurable = "collector"
	// DeadLetterPrefix prefixes dead-letter subjects: deadletter.{tenant}.{reason}.
	DeadLetterPrefix = "deadletter"
	// Account is the NATS account of the suite and the tenants' services.
	Account = "TENANTSCOPE"
)

// Server is the embedded NATS server.
type Server struct {
	ns *server.Server
	// internal credentials of the suite's own processes (random per start)
	user, password, passwordHash string
	// clientTLS are the options the suite's own connections need when the
	// listener speaks TLS.
	clientTLS []nats.Option
}

// Embedded starts a NATS server with JetStream under cfg.Data/nats,
// listening on cfg.NATS.Listen ("127.0.0.1:0" picks a port).
func Embedded(cfg config.Config, log zerolog.Logger) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.NATS.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats: listen %q: %w", cfg.NATS.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = -1 // nats-server's "random port"
	}
	s := &Server{user: cfg.NATS.User, password: cfg.NATS.Password}
	if s.user == "" || s.password == "" {
		s.user, s.password = "tenantscope", randomToken()
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(s.password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	s.passwordHash = string(hash)
	opts := &server.Options{}
	if err := opts.ProcessConfigString(s.serverConfig(cfg)); err != nil {
		return nil, fmt.Errorf("nats: server configuration: %w", err)
	}
	opts.Host, opts.Port = host, port
	opts.JetStream = true
	opts.StoreDir = filepath.Join(cfg.Data, "nats")
	if b := cfg.NATS.JetStreamBudget; b > 0 {
		// What 'config validate' checks the streams' reservations against.
		opts.JetStreamMaxStore = int64(b)
	}
	opts.MaxPayload = cfg.NATS.Stream.MaxMsgSize
	opts.ServerName = "tenantscope"
	opts.NoSigs = true
	if t := cfg.NATS; t.TLSCert != "" {
		// TLS on the listener; with tls_verify_clients, mutual TLS: every
		// client also shows a certificate signed by tls_ca.
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.TLSCert, KeyFile: t.TLSKey, CaFile: t.CAFile, Verify: t.TLSVerifyClients})
		if err != nil {
			return nil, fmt.Errorf("nats: tls: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, t.TLSVerifyClients, 5
		s.clientTLS = ClientTLS(cfg)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	ns.SetLoggerV2(&logAdapter{log: log.With().Str("component", "nats").Logger()}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats: embedded server not ready after 30s")
	}
	s.ns = ns
	return s, nil
}

// SuiteSubjects are the subjects under a tenant's token that only the suite
// publishes on (its own audit records for the tenant): closed to the
// tenant's users, so no record there can pose as the suite.
func SuiteSubjects(tenant string) string { return "tenant." + tenant + ".tenantscope.>" }

// TenantAccount names a tenant's own NATS account.
func TenantAccount(tenant string) string { return "TENANT_" + tenant }

// serverConfig writes the accounts. The suite's account holds the streams,
// the consumers and the suite's inboxes; its user may do anything there.
// Each tenant has an account of its own whose users may publish only under
// their tenant's token: the subjects reach the suite's account through a
// service import (so JetStream's publish acks come back as replies) and the
// users may subscribe only to their own account's inboxes. A tenant thus
// observes nothing of the suite's account or of another tenant's: no
// deliveries, no JetStream API, no advisories.
func (s *Server) serverConfig(cfg config.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "accounts {\n  %s {\n    jetstream: enabled\n    users: [\n", Account)
	fmt.Fprintf(&b, "      {user: %q, password: %q}\n", s.user, s.passwordHash)
	b.WriteString("    ]\n    exports: [\n")
	for _, t := range cfg.Tenants {
		fmt.Fprintf(&b, "      {service: %q, accounts: [%q]}\n", "tenant."+t.ID+".>", TenantAccount(t.ID))
	}
	b.WriteString("    ]\n  }\n")
	for _, t := range cfg.Tenants {
		perms := fmt.Sprintf("permissions: {publish: {allow: [%q], deny: [%q]}, subscribe: {allow: [\"_INBOX.>\"]}}",
			"tenant."+t.ID+".>", SuiteSubjects(t.ID))
		fmt.Fprintf(&b, "  %s {\n    users: [\n", TenantAccount(t.ID))
		fmt.Fprintf(&b, "      {user: %q, password: %q, %s}\n", t.NATS.User, t.NATS.PasswordHash, perms)
		if pub := t.NATS.Nkey; pub != "" {
			fmt.Fprintf(&b, "      {nkey: %q, %s}\n", pub, perms)
		}
		fmt.Fprintf(&b, "    ]\n    imports: [\n      {service: {account: %q, subject: %q}}\n    ]\n  }\n",
			Account, "tenant."+t.ID+".>")
	}
	b.WriteString("}\nno_auth_user: \"\"\n")
	return b.String()
}

// ClientURL is the address services connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens a connection with the suite's own credentials.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.UserInfo(s.user, s.password), nats.Name(name), nats.MaxReconnects(-1)}, s.clientTLS...)
	return nats.Connect(s.ClientURL(), opts...)
}

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// Ready reports whether the server accepts connections.
func (s *Server) Ready() bool { return s.ns.Running() && s.ns.ReadyForConnections(0) }

// ConnectExternal connects to a cluster given by cfg.NATS.URL.
func ConnectExternal(cfg config.Config, name string) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1)}, ClientTLS(cfg)...)
	switch {
	case cfg.NATS.CredsFile != "":
		creds, err := CredsOption(cfg.NATS.CredsFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, creds)
	case cfg.NATS.User != "":
		opts = append(opts, nats.UserInfo(cfg.NATS.User, cfg.NATS.Password))
	}
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", cfg.NATS.URL, err)
	}
	return nc, nil
}

// ClientTLS are the options of a client of cfg's NATS: the CA that signs
// the servers' certificates (nats.ca_file) and, for mutual TLS, the
// client's own certificate (nats.client_cert, nats.client_key).
func ClientTLS(cfg config.Config) []nats.Option {
	var opts []nats.Option
	if cfg.NATS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.NATS.CAFile))
	}
	if cfg.NATS.ClientCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATS.ClientCert, cfg.NATS.ClientKey))
	}
	return opts
}

func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

// logAdapter sends nats-server's log to zerolog.
type logAdapter struct{ log zerolog.Logger }

func (l *logAdapter) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l *logAdapter) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l *logAdapter) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l *logAdapter) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l *logAdapter) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l *logAdapter) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }

// NkeyOption signs in with an nkey seed (raw or decorated).
func NkeyOption(seed []byte) (nats.Option, error) {
	kp, err := nkeys.ParseDecoratedNKey(seed)
	if err != nil {
		return nil, fmt.Errorf("nats: nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("nats: nkey seed: %w", err)
	}
	return nats.Nkey(pub, kp.Sign), nil
}

// CredsOption signs in with a credentials file: a user JWT and its seed
// (NATS decentralized auth, written by 'tenantscope nats creds' for a
// cluster) or a bare nkey seed (the embedded server).
func CredsOption(path string) (nats.Option, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats: credentials: %w", err)
	}
	if bytes.Contains(raw, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	return NkeyOption(raw)
}
