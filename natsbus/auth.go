package natsbus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/tenantscope/tenantscope/config"
)

// Decentralized auth for a NATS cluster (operator mode): an operator, a
// system account, the suite's account (JetStream, the streams, the
// consumers, the inboxes) and one account per tenant that imports only
// tenant.{tenant}.> from the suite's account as a service, so publish acks
// come back and nothing else crosses. Keys live in one directory (mode 0700,
// seeds 0600), which the operator keeps like any other secret; the servers
// get only public JWTs (resolver.conf).

// Auth is the key material of a deployment, read from or written to Dir.
type Auth struct {
	Dir      string
	operator nkeys.KeyPair
	system   nkeys.KeyPair
	suite    nkeys.KeyPair
	tenants  map[string]nkeys.KeyPair
}

// SetupAuth loads the deployment's keys from dir, creating what is missing
// (the operator, the system and suite accounts, an account per configured
// tenant), and writes the servers' resolver configuration and the suite's
// credentials. It is idempotent: existing keys are kept.
func SetupAuth(dir string, cfg config.Config) (*Auth, error) {
	if err := os.MkdirAll(filepath.Join(dir, "accounts"), 0o700); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	a := &Auth{Dir: dir, tenants: map[string]nkeys.KeyPair{}}
	var err error
	if a.operator, err = loadOrCreate(filepath.Join(dir, "operator.nk"), nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.system, err = loadOrCreate(a.accountPath("SYS"), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.suite, err = loadOrCreate(a.accountPath(Account), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	for _, t := range cfg.ChainTenants() {
		if t.ID == config.PlatformTenant {
			continue
		}
		kp, err := loadOrCreate(a.accountPath(TenantAccount(t.ID)), nkeys.CreateAccount)
		if err != nil {
			return nil, err
		}
		a.tenants[t.ID] = kp
	}
	resolver, err := a.resolverConfig()
	if err != nil {
		return nil, err
	}
	if err := config.WriteSecretFile(filepath.Join(dir, "resolver.conf"), []byte(resolver)); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	creds, err := a.userCreds(a.suite, "tenantscope", nil)
	if err != nil {
		return nil, err
	}
	if err := config.WriteSecretFile(filepath.Join(dir, "suite.creds"), creds); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	return a, nil
}

// LoadAuth reads a directory SetupAuth wrote.
func LoadAuth(dir string) (*Auth, error) {
	if _, err := os.Stat(filepath.Join(dir, "operator.nk")); err != nil {
		return nil, fmt.Errorf("nats auth: %s has no operator key (run 'tenantscope nats setup --dir %s' first): %w", dir, dir, err)
	}
	a := &Auth{Dir: dir, tenants: map[string]nkeys.KeyPair{}}
	var err error
	for path, into := range map[string]*nkeys.KeyPair{
		filepath.Join(dir, "operator.nk"): &a.operator,
		a.accountPath("SYS"):              &a.system,
		a.accountPath(Account):            &a.suite,
	} {
		if *into, err = loadSeed(path); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *Auth) accountPath(name string) string {
	return filepath.Join(a.Dir, "accounts", name+".nk")
}

// TenantCreds signs a new service user of tenant's account: it may publish
// under tenant.{tenant}.> (not on the suite's own subjects there) and
// receive replies on its own account's inboxes. It returns a .creds file.
func (a *Auth) TenantCreds(tenant, name string) ([]byte, error) {
	kp, ok := a.tenants[tenant]
	if !ok {
		var err error
		if kp, err = loadSeed(a.accountPath(TenantAccount(tenant))); err != nil {
			return nil, fmt.Errorf("nats auth: tenant %q has no account (add it to the configuration and run 'tenantscope nats setup' again): %w", tenant, err)
		}
	}
	perms := &jwt.Permissions{}
	perms.Pub.Allow.Add("tenant." + tenant + ".>")
	perms.Pub.Deny.Add(SuiteSubjects(tenant))
	perms.Sub.Allow.Add("_INBOX.>")
	return a.userCreds(kp, name, perms)
}

func (a *Auth) userCreds(account nkeys.KeyPair, name string, perms *jwt.Permissions) ([]byte, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if perms != nil {
		uc.Permissions = *perms
	}
	token, err := uc.Encode(account)
	if err != nil {
		return nil, fmt.Errorf("nats auth: sign user %s: %w", name, err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

// resolverConfig is the part of nats-server.conf that trusts the operator
// and preloads every account's JWT (the MEMORY resolver).
func (a *Auth) resolverConfig() (string, error) {
	opub, err := a.operator.PublicKey()
	if err != nil {
		return "", err
	}
	spub, err := a.system.PublicKey()
	if err != nil {
		return "", err
	}
	suitePub, err := a.suite.PublicKey()
	if err != nil {
		return "", err
	}
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "tenantscope"
	oc.SystemAccount = spub
	ojwt, err := oc.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("nats auth: operator: %w", err)
	}
	accounts := map[string]string{}
	sys := jwt.NewAccountClaims(spub)
	sys.Name = "SYS"
	if accounts[spub], err = sys.Encode(a.operator); err != nil {
		return "", err
	}
	suite := jwt.NewAccountClaims(suitePub)
	suite.Name = Account
	suite.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	ids := make([]string, 0, len(a.tenants))
	for id := range a.tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		suite.Exports.Add(&jwt.Export{Name: "ingest " + id, Subject: jwt.Subject("tenant." + id + ".>"), Type: jwt.Service})
		tpub, err := a.tenants[id].PublicKey()
		if err != nil {
			return "", err
		}
		tc := jwt.NewAccountClaims(tpub)
		tc.Name = TenantAccount(id)
		tc.Imports.Add(&jwt.Import{Name: "ingest", Subject: jwt.Subject("tenant." + id + ".>"), Account: suitePub, Type: jwt.Service})
		if accounts[tpub], err = tc.Encode(a.operator); err != nil {
			return "", fmt.Errorf("nats auth: account of %s: %w", id, err)
		}
	}
	if accounts[suitePub], err = suite.Encode(a.operator); err != nil {
		return "", fmt.Errorf("nats auth: suite account: %w", err)
	}
	var b strings.Builder
	b.WriteString("# Written by 'tenantscope nats setup'. Public JWTs only: include it in nats-server.conf.\n")
	fmt.Fprintf(&b, "operator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n", ojwt, spub)
	pubs := make([]string, 0, len(accounts))
	for p := range accounts {
		pubs = append(pubs, p)
	}
	sort.Strings(pubs)
	for _, p := range pubs {
		fmt.Fprintf(&b, "  %s: %s\n", p, accounts[p])
	}
	b.WriteString("}\n")
	return b.String(), nil
}

func loadOrCreate(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	kp, err := loadSeed(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return kp, err
	}
	if kp, err = create(); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := config.WriteSecretFile(path, seed); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	return kp, nil
}

func loadSeed(path string) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("nats auth: %s: %w", path, err)
	}
	return kp, nil
}
