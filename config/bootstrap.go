package config

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/mod/sumdb/note"
)

// Bootstrap holds secrets generated at first start for entries of the
// configuration that have no hash. It lives in <data>/bootstrap.json, mode
// 0600. User passwords and API keys are kept only hashed; tenants' NATS
// service passwords are kept in clear too, so the demo can publish as them.
type Bootstrap struct {
	UserHashes map[string]string `json:"user_password_hashes"`
	KeyHashes  map[string]string `json:"api_key_hashes"`
	NATS       map[string]string `json:"nats_service_passwords"`
	// EnginePasswords are the embedded engine's users' passwords, by user.
	EnginePasswords map[string]string `json:"engine_passwords"`
	// NATSNkeySeeds are the tenants' service nkey seeds (by tenant), for
	// 'tenantscope nats creds' on the embedded server.
	NATSNkeySeeds map[string]string `json:"nats_service_nkey_seeds"`
	// PIISalts are the per-tenant salts of hashed PII (redact action hash).
	PIISalts map[string]string `json:"pii_salts"`
	// AuditSignerKey signs audit checkpoints (a golang.org/x/mod/sumdb/note
	// ed25519 key); AuditVerifierKey is its public half, for verify.
	AuditSignerKey   string `json:"audit_signer_key"`
	AuditVerifierKey string `json:"audit_verifier_key"`
	// SessionKey signs UI session cookies (hex).
	SessionKey string `json:"ui_session_key"`
	// ShredKEK is the key-encryption key of crypto-shredding (hex, 32
	// bytes) when retention.kek does not set one.
	ShredKEK string `json:"shred_kek"`
}

// Secret is one generated secret, shown once.
type Secret struct {
	Kind, Name, Role, Tenant, Value string
}

// BootstrapPath is where the bootstrap file lives.
func BootstrapPath(data string) string { return filepath.Join(data, "bootstrap.json") }

// LoadBootstrap reads <data>/bootstrap.json; a missing file is empty.
func LoadBootstrap(data string) (*Bootstrap, error) { return readSecrets(BootstrapPath(data)) }

func readSecrets(path string) (*Bootstrap, error) {
	b := &Bootstrap{UserHashes: map[string]string{}, KeyHashes: map[string]string{}, NATS: map[string]string{}, PIISalts: map[string]string{}, NATSNkeySeeds: map[string]string{}, EnginePasswords: map[string]string{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bootstrap secrets: %w", err)
	}
	if err := json.Unmarshal(raw, b); err != nil {
		return nil, fmt.Errorf("bootstrap secrets %s: %w", path, err)
	}
	if b.PIISalts == nil {
		b.PIISalts = map[string]string{}
	}
	if b.NATSNkeySeeds == nil {
		b.NATSNkeySeeds = map[string]string{}
	}
	if b.EnginePasswords == nil {
		b.EnginePasswords = map[string]string{}
	}
	return b, nil
}

// SecretsPath is where the deployment's secrets live: secrets_file, else
// <data>/bootstrap.json.
func SecretsPath(cfg Config) string {
	if cfg.SecretsFile != "" {
		return cfg.SecretsFile
	}
	return BootstrapPath(cfg.Data)
}

// LoadSecrets reads the deployment's secrets file (SecretsPath); a missing
// file is empty. It never writes.
func LoadSecrets(cfg Config) (*Bootstrap, error) { return readSecrets(SecretsPath(cfg)) }

// ErrMissingSecrets is returned when a process that may not generate
// secrets does not find them.
var ErrMissingSecrets = errors.New("secrets missing")

// Generates reports whether this process generates the secrets that are
// missing: only one that owns the embedded engine and NATS server of its
// data directory ('serve' in embedded mode). Every other process of a
// deployment reads them (SecretsPath), so all of them share one set.
func Generates(cfg Config) bool { return cfg.Embedded() && cfg.EmbeddedNATS() }

// EnsureSecrets fills every missing hash in cfg, generating secrets the first
// time and reusing them afterwards. It returns the secrets generated now.
// Call it only where Generates is true; elsewhere use ApplySecrets.
func EnsureSecrets(cfg *Config) ([]Secret, error) { return fillSecrets(cfg, true) }

// ApplySecrets fills cfg from the deployment's secrets file without
// generating or writing anything, and names every secret it lacks.
func ApplySecrets(cfg *Config) error {
	_, err := fillSecrets(cfg, false)
	return err
}

func fillSecrets(cfg *Config, generate bool) ([]Secret, error) {
	b, err := LoadSecrets(*cfg)
	if err != nil {
		return nil, err
	}
	var fresh []Secret
	var missing []string
	// need returns whether to generate; without generating it records what
	// is missing.
	need := func(what string) bool {
		if !generate {
			missing = append(missing, what)
		}
		return generate
	}
	for i := range cfg.Users {
		u := &cfg.Users[i]
		if u.PasswordHash != "" {
			continue
		}
		if h, ok := b.UserHashes[u.Name]; ok {
			u.PasswordHash = h
			continue
		}
		if !need("password of user " + u.Name) {
			continue
		}
		pw := randomSecret(15)
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
		if err != nil {
			return nil, err
		}
		u.PasswordHash, b.UserHashes[u.Name] = string(h), string(h)
		fresh = append(fresh, Secret{"user", u.Name, u.Role, u.Tenant, pw})
	}
	for i := range cfg.APIKeys {
		k := &cfg.APIKeys[i]
		if k.KeyHash != "" {
			continue
		}
		if h, ok := b.KeyHashes[k.Name]; ok {
			k.KeyHash = h
			continue
		}
		if !need("API key " + k.Name) {
			continue
		}
		key := "tsk_" + randomSecret(24)
		k.KeyHash = HashAPIKey(key)
		b.KeyHashes[k.Name] = k.KeyHash
		fresh = append(fresh, Secret{"api-key", k.Name, k.Role, k.Tenant, key})
	}
	changed := false
	// Tenants' NATS service users exist only on the embedded server; a
	// cluster's come from 'tenantscope nats setup/creds'.
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if !cfg.EmbeddedNATS() {
			break
		}
		if t.NATS.PasswordHash == "" {
			pw, ok := b.NATS[t.NATS.User]
			if !ok {
				if !need("NATS password of " + t.NATS.User) {
					continue
				}
				pw = randomSecret(15)
				b.NATS[t.NATS.User] = pw
				fresh = append(fresh, Secret{"nats", t.NATS.User, "service", t.ID, pw})
			}
			h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			if err != nil {
				return nil, err
			}
			t.NATS.PasswordHash = string(h)
		}
		if t.NATS.Nkey != "" {
			continue
		}
		seed, ok := b.NATSNkeySeeds[t.ID]
		if !ok {
			if !need("NATS nkey of tenant " + t.ID) {
				continue
			}
			kp, err := nkeys.CreateUser()
			if err != nil {
				return nil, fmt.Errorf("nats nkey: %w", err)
			}
			s, err := kp.Seed()
			if err != nil {
				return nil, fmt.Errorf("nats nkey: %w", err)
			}
			seed = string(s)
			b.NATSNkeySeeds[t.ID] = seed
			changed = true
		}
		kp, err := nkeys.FromSeed([]byte(seed))
		if err != nil {
			return nil, fmt.Errorf("nats nkey of tenant %s: %w", t.ID, err)
		}
		if t.NATS.Nkey, err = kp.PublicKey(); err != nil {
			return nil, fmt.Errorf("nats nkey of tenant %s: %w", t.ID, err)
		}
	}
	for _, t := range cfg.Tenants {
		if _, ok := b.PIISalts[t.ID]; !ok && t.PIISalt == "" && need("PII salt of tenant "+t.ID) {
			b.PIISalts[t.ID] = randomSecret(24)
			changed = true
		}
	}
	for _, key := range []struct {
		v    *string
		what string
	}{{&b.SessionKey, "UI session key"}, {&b.ShredKEK, "crypto-shredding KEK"}} {
		if *key.v == "" && (key.what != "crypto-shredding KEK" || cfg.Retention.KEK == "") && need(key.what) {
			k := make([]byte, 32)
			_, _ = rand.Read(k) //nolint:errcheck // crypto/rand.Read never fails on Linux
			*key.v = hex.EncodeToString(k)
			changed = true
		}
	}
	if b.AuditSignerKey == "" && need("audit signer key") {
		skey, vkey, err := note.GenerateKey(rand.Reader, "tenantscope-audit")
		if err != nil {
			return nil, err
		}
		b.AuditSignerKey, b.AuditVerifierKey = skey, vkey
		changed = true
	}
	// The embedded engine's users: the suite's read-write one and a
	// read-only one for people, Grafana and curl.
	if cfg.Embedded() {
		ch := &cfg.ClickHouse
		for _, u := range []struct {
			name, password *string
			def, desc      string
		}{
			{&ch.User, &ch.Password, EngineUser, "suite (read-write)"},
			{&ch.ReaderUser, &ch.ReaderPassword, EngineReader, "read-only"},
		} {
			if *u.name == "" {
				*u.name = u.def
			}
			if *u.password != "" {
				continue
			}
			pw, ok := b.EnginePasswords[*u.name]
			if !ok {
				if !need("password of the engine's user " + *u.name) {
					continue
				}
				pw = randomSecret(18)
				b.EnginePasswords[*u.name] = pw
				fresh = append(fresh, Secret{"clickhouse", *u.name, u.desc, "", pw})
			}
			*u.password = pw
		}
	}
	// The suite's own NATS user on the embedded server: persistent, so that
	// admin commands (deadletter, demo) can reach a running serve.
	if c := &cfg.NATS; cfg.EmbeddedNATS() && c.Password == "" {
		if c.User == "" {
			c.User = "tenantscope"
		}
		pw, ok := b.NATS[c.User]
		if !ok && need("NATS password of the suite's user "+c.User) {
			pw = randomSecret(18)
			b.NATS[c.User] = pw
			fresh = append(fresh, Secret{"nats", c.User, "suite (admin)", "", pw})
		}
		c.Password = pw
	}
	if !generate {
		if len(missing) > 0 {
			return nil, fmt.Errorf("%w in %s: %s (only 'tenantscope serve' on the embedded engine generates secrets; a distributed deployment shares one file written by 'tenantscope secrets init', named by secrets_file)",
				ErrMissingSecrets, SecretsPath(*cfg), strings.Join(missing, ", "))
		}
		return nil, nil
	}
	if len(fresh) == 0 && !changed {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(SecretsPath(*cfg)), 0o750); err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := WriteSecretFile(SecretsPath(*cfg), raw); err != nil {
		return nil, fmt.Errorf("bootstrap secrets: %w", err)
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Kind+fresh[i].Name < fresh[j].Kind+fresh[j].Name })
	return fresh, nil
}

// LoadEngineCredentials fills the embedded engine's user names and the
// passwords kept in the bootstrap file, for clients of a running suite (the
// CLI). It never writes the file.
func LoadEngineCredentials(cfg *Config) error {
	ch := &cfg.ClickHouse
	if ch.User == "" {
		ch.User = EngineUser
	}
	if ch.ReaderUser == "" {
		ch.ReaderUser = EngineReader
	}
	if !cfg.Embedded() || (ch.Password != "" && ch.ReaderPassword != "") {
		return nil
	}
	b, err := LoadSecrets(*cfg)
	if err != nil {
		return err
	}
	if ch.Password == "" {
		ch.Password = b.EnginePasswords[ch.User]
	}
	if ch.ReaderPassword == "" {
		ch.ReaderPassword = b.EnginePasswords[ch.ReaderUser]
	}
	return nil
}

// HashAPIKey is how API keys are stored: hex SHA-256 (keys are random, so a
// fast hash is enough and lookups stay cheap).
func HashAPIKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// WriteSecretFile writes a file only its owner may read (0600, also when it
// existed with another mode), through a temporary file and a rename.
func WriteSecretFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if err := tmp.Chmod(0o600); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if _, err := tmp.Write(data); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// RandomSecret is n random bytes in URL-safe base64.
func RandomSecret(n int) string { return randomSecret(n) }

func randomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}
