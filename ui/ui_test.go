package ui_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/apikeys"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/chstore/chstoretest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/identity/sessions"
	"github.com/tenantscope/tenantscope/identity/sessions/sessionstest"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/ui"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

var users = []config.User{
	{Name: "carol", Role: config.RoleCompliance}, {Name: "frank", Role: config.RoleFinance}, {Name: "sam", Role: config.RoleSRE},
	{Name: "alice", Role: config.RoleTenantAdmin, Tenant: "acme"}, {Name: "victor", Role: config.RoleTenantViewer, Tenant: "acme"},
	{Name: "gina", Role: config.RoleTenantAdmin, Tenant: "globex"},
}

type fixture struct {
	url      string
	w        *auditlog.Writer
	st       *chstore.Store
	stores   map[string]*chstore.Store // by region
	audited  []string
	keys     *apikeys.Store
	verifier string
	ui       *ui.UI
	cfg      config.Config
	sessions *sessions.Store
	js       jetstream.JetStream // the embedded NATS server of the sessions
	mux      *http.ServeMux
}

func start(t *testing.T) *fixture { return startRegions(t) }

// startRegions starts the UI with the tenants in region "default" and, for
// each name in more, another region on a fresh database.
func startRegions(t *testing.T, more ...string) *fixture {
	ctx := context.Background()
	st := chstoretest.Migrated(t)
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return st, nil }, skey, 100)
	require.NoError(t, err)
	for _, tenant := range []string{"acme", "globex"} {
		var recs []auditlog.Record
		for i := range 30 {
			recs = append(recs, auditlog.Record{TenantID: tenant, Actor: auditlog.Actor{Type: "user", ID: fmt.Sprintf("%s-user-%d", tenant, i)},
				Action: tenant + ".thing_done", Target: auditlog.Target{Type: "thing", ID: fmt.Sprint(i)}, Outcome: "success"})
		}
		_, err := w.Append(ctx, tenant, recs)
		require.NoError(t, err)
	}
	_, err = w.Append(ctx, "acme", []auditlog.Record{{TenantID: "acme", Actor: auditlog.Actor{Type: "user", ID: "ann"}, Action: "role.changed",
		Target: auditlog.Target{Type: "user", ID: "bob"}, Outcome: "success",
		Changes: []byte(`{"before":{"role":"viewer","team":"a"},"after":{"role":"admin","team":"a"}}`)}})
	require.NoError(t, err)
	require.NoError(t, w.Checkpoint(ctx, "acme"))
	cfg := config.Default()
	cfg.Tenants = []config.Tenant{{ID: "acme", Region: "default"}, {ID: "globex", Region: "default"}}
	cfg.Regions = []config.Region{{Name: "default", Database: st.Database()}}
	stores := map[string]*chstore.Store{"default": st}
	for _, name := range more {
		other := chstoretest.Migrated(t)
		cfg.Regions = append(cfg.Regions, config.Region{Name: name, Database: other.Database()})
		stores[name] = other
	}
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte("pw-"+u.Name), bcrypt.MinCost)
		require.NoError(t, err)
		u.PasswordHash = string(h)
		cfg.Users = append(cfg.Users, u)
	}
	f := &fixture{w: w, st: st, stores: stores, verifier: vkey}
	f.js = sessionstest.JetStream(t)
	f.sessions = sessionstest.Store(t, f.js, sessions.Config{})
	u := ui.New(cfg, f.sessions, func(string) (*chstore.Store, error) { return st, nil },
		func(_ context.Context, tenant, _ string, body []byte) error {
			f.audited = append(f.audited, tenant+" "+string(body))
			return nil
		}, zerolog.Nop())
	u.VerifierKey, u.SignerKey = vkey, skey
	u.Keys = apikeys.New(cfg, placement.New(), func(string) (*chstore.Store, error) { return st, nil }, func() []*chstore.Store { return []*chstore.Store{st} },
		func(_ context.Context, tenant, _ string, body []byte) error {
			f.audited = append(f.audited, tenant+" "+string(body))
			return nil
		}, zerolog.Nop())
	f.keys, f.ui, f.cfg = u.Keys, u, cfg
	u.Health = auditlog.NewHealthBoard()
	for _, tenant := range []string{"acme", "globex", config.PlatformTenant} {
		rep, err := auditlog.Verify(ctx, st, tenant, 1, vkey)
		require.NoError(t, err)
		u.Health.Set(rep, time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	}
	mux := http.NewServeMux()
	u.Register(mux)
	f.mux = mux
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar}
}

func page(t *testing.T, c *http.Client, method, u string, form url.Values) (int, *goquery.Document) {
	var res *http.Response
	var err error
	if method == "POST" {
		res, err = c.PostForm(u, form)
	} else {
		res, err = c.Get(u)
	}
	require.NoError(t, err)
	defer res.Body.Close()
	doc, err := goquery.NewDocumentFromReader(res.Body)
	require.NoError(t, err)
	return res.StatusCode, doc
}

func signIn(t *testing.T, f *fixture, user, password string) (*http.Client, int, *goquery.Document) {
	c := client()
	code, doc := page(t, c, "GET", f.url+"/ui/login", nil)
	require.Equal(t, 200, code)
	csrf, ok := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	require.True(t, ok)
	code, doc = page(t, c, "POST", f.url+"/ui/login", url.Values{"csrf": {csrf}, "username": {user}, "password": {password}})
	return c, code, doc
}

func TestSignInCSRFAndSignOut(t *testing.T) {
	f := start(t)
	// Without a session every page sends you to sign in.
	code, doc := page(t, client(), "GET", f.url+"/ui/tenants/acme/audit", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="login-form"]`).Length())

	_, code, doc = signIn(t, f, "alice", "wrong")
	require.Equal(t, 401, code)
	require.Contains(t, doc.Find(`[data-testid="login-error"]`).Text(), "Wrong user or password")
	_, code, _ = signIn(t, f, "nobody", "pw-nobody")
	require.Equal(t, 401, code)

	// A sign-in without the form's CSRF token is refused.
	code, _ = page(t, client(), "POST", f.url+"/ui/login", url.Values{"username": {"alice"}, "password": {"pw-alice"}})
	require.Equal(t, 403, code)

	c, code, doc := signIn(t, f, "alice", "pw-alice")
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="whoami"]`).Text(), "alice (tenant-admin of acme)")
	require.Equal(t, []string{"acme"}, doc.Find(`[data-testid="tenant-link"]`).Map(func(_ int, s *goquery.Selection) string { return s.Text() }))
	require.Len(t, f.audited, 3, "the failed sign-ins and the successful one are audited")
	require.True(t, strings.HasPrefix(f.audited[0], config.PlatformTenant+" "), "failures go to the platform chain, even a tenant user's: %s", f.audited[0])
	require.Contains(t, f.audited[0], `"outcome":"failure"`)
	require.True(t, strings.HasPrefix(f.audited[1], config.PlatformTenant+" "), "an unknown user's attempt goes to the platform chain: %s", f.audited[1])
	require.True(t, strings.HasPrefix(f.audited[2], "acme "), f.audited[2])
	require.Contains(t, f.audited[2], `"outcome":"success"`)
	_, code, _ = signIn(t, f, "carol", "pw-carol")
	require.Equal(t, 200, code)
	require.True(t, strings.HasPrefix(f.audited[3], config.PlatformTenant+" "), "a platform user's sign-in goes to the platform chain")

	// Sign-out needs the session's CSRF token.
	code, _ = page(t, c, "POST", f.url+"/ui/logout", url.Values{"csrf": {"forged"}})
	require.Equal(t, 403, code)
	csrf, _ := doc.Find(`form[action="/ui/logout"] input[name="csrf"]`).Attr("value")
	code, doc = page(t, c, "POST", f.url+"/ui/logout", url.Values{"csrf": {csrf}})
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="login-form"]`).Length(), "signed out")
	code, doc = page(t, c, "GET", f.url+"/ui/", nil)
	require.Equal(t, 1, doc.Find(`[data-testid="login-form"]`).Length())
}

// Every UI route as every user, for their own tenant and another.
func TestUIRoleMatrix(t *testing.T) {
	f := start(t)
	withMetering(t, f) // finance and sre land on cost and SLA
	readable := map[string]map[string]bool{"carol": {"acme": true, "globex": true, config.PlatformTenant: true}, "alice": {"acme": true}, "victor": {"acme": true}, "gina": {"globex": true}}
	for _, u := range users {
		c, code, doc := signIn(t, f, u.Name, "pw-"+u.Name)
		require.Equal(t, 200, code, u.Name)
		var links []string
		doc.Find(`[data-testid="tenant-link"]`).Each(func(_ int, s *goquery.Selection) { links = append(links, s.Text()) })
		for _, tenant := range []string{"acme", "globex", config.PlatformTenant} {
			require.Equal(t, readable[u.Name][tenant], strings.Contains(strings.Join(links, ","), tenant), "%s home lists %s", u.Name, tenant)
			code, doc := page(t, c, "GET", f.url+"/ui/tenants/"+tenant+"/audit", nil)
			if !readable[u.Name][tenant] {
				require.Equal(t, 403, code, "%s on %s", u.Name, tenant)
				require.Zero(t, doc.Find(`[data-testid="audit-row"]`).Length())
				code, doc = page(t, c, "GET", f.url+"/ui/tenants/"+tenant+"/audit/3", nil)
				require.Equal(t, 403, code, "%s detail on %s", u.Name, tenant)
				require.Zero(t, doc.Find(`[data-testid="detail"]`).Length())
				continue
			}
			require.Equal(t, 200, code, "%s on %s", u.Name, tenant)
			rows := doc.Find(`[data-testid="audit-row"]`)
			require.Equal(t, map[string]int{"acme": 31, "globex": 30}[tenant], rows.Length())
			if tenant == config.PlatformTenant {
				continue // empty in this fixture
			}
			rows.Find(`[data-testid="action"]`).Each(func(_ int, s *goquery.Selection) {
				require.Contains(t, []string{tenant + ".thing_done", "role.changed"}, s.Text(), "only the tenant's own records")
			})
			code, _ = page(t, c, "GET", f.url+"/ui/tenants/"+tenant+"/audit/3", nil)
			require.Equal(t, 200, code, "%s detail on %s", u.Name, tenant)
		}
	}
}

func TestAuditPageFiltersAndPages(t *testing.T) {
	f := start(t)
	c, _, _ := signIn(t, f, "carol", "pw-carol")
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/audit?limit=10", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 10, doc.Find(`[data-testid="audit-row"]`).Length())
	require.Equal(t, "31", doc.Find(`[data-testid="seq"]`).First().Text())
	next, ok := doc.Find(`[data-testid="next-page"]`).Attr("href")
	require.True(t, ok)
	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/audit"+next, nil)
	require.Equal(t, 200, code)
	require.Equal(t, "21", doc.Find(`[data-testid="seq"]`).First().Text(), "the next page continues where the first ended")

	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/audit?"+url.Values{"actor": {"acme-user-7"}}.Encode(), nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="audit-row"]`).Length())
	// Hostile input is shown escaped and matches nothing.
	hostile := `<script>alert(1)</script>' OR 1=1 --`
	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/audit?"+url.Values{"q": {hostile}}.Encode(), nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="empty"]`).Length())
	require.Zero(t, doc.Find("script").Length())
	v, _ := doc.Find(`input[name="q"]`).Attr("value")
	require.Equal(t, hostile, v)
	code, _ = page(t, c, "GET", f.url+"/ui/tenants/acme/audit?limit=0", nil)
	require.Equal(t, 400, code)
}

func TestRecordDetailDiffChainStatusAndProof(t *testing.T) {
	f := start(t)
	c, _, _ := signIn(t, f, "victor", "pw-victor")
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/audit/31", nil)
	require.Equal(t, 200, code)
	require.Equal(t, "Changed: role", strings.TrimSpace(doc.Find(`[data-testid="changed-keys"]`).Text()))
	require.Contains(t, doc.Find(`[data-testid="before"]`).Text(), `"role": "viewer"`)
	require.Contains(t, doc.Find(`[data-testid="after"]`).Text(), `"role": "admin"`)
	require.Contains(t, doc.Find(`[data-testid="hash-status"]`).Text(), "match the record's hash")
	require.Contains(t, doc.Find(`[data-testid="link-status"]`).Text(), "Linked to record 30")
	require.Contains(t, doc.Find(`[data-testid="proof-status"]`).Text(), "the inclusion proof verifies")

	// Tampered in ClickHouse: the page says so.
	require.NoError(t, f.st.Exec(context.Background(), "ALTER TABLE audit_records UPDATE target_id = 'mallory' WHERE tenant_id = 'acme' AND seq = 31 SETTINGS mutations_sync = 2"))
	_, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/audit/31", nil)
	require.Contains(t, doc.Find(`[data-testid="hash-status"]`).Text(), "modified")

	code, _ = page(t, c, "GET", f.url+"/ui/tenants/acme/audit/999", nil)
	require.Equal(t, 404, code)
	code, _ = page(t, c, "GET", f.url+"/ui/tenants/acme/audit/zero", nil)
	require.Equal(t, 400, code)
}

func TestComplianceSeesEachTenantsChainHealth(t *testing.T) {
	f := start(t)
	c, code, doc := signIn(t, f, "carol", "pw-carol")
	require.Equal(t, 200, code)
	rows := doc.Find(`[data-testid="tenant-row"]`)
	require.Equal(t, 3, rows.Length(), "both tenants and the platform chain")
	require.Equal(t, config.PlatformTenant, rows.Last().Find(`[data-testid="tenant-link"]`).Text())
	rows.Find(`[data-testid="chain-health"]`).Each(func(_ int, s *goquery.Selection) { require.Equal(t, "verified", s.Text()) })
	_ = c
	// A tenant user sees only their own tenant's row.
	_, _, doc = signIn(t, f, "victor", "pw-victor")
	require.Equal(t, 1, doc.Find(`[data-testid="tenant-row"]`).Length())
	// Someone without audit access lands on their own home, not on an
	// empty list of trails (TestEachRoleLandsOnItsOwnHome).
	_, _, doc = signIn(t, f, "frank", "pw-frank")
	require.Zero(t, doc.Find(`[data-testid="tenant-row"]`).Length())
}

func csrfOf(t *testing.T, doc *goquery.Document) string {
	v, ok := doc.Find(`form[action="/ui/logout"] input[name="csrf"]`).Attr("value")
	require.True(t, ok)
	return v
}

func TestTenantAdminManagesAPIKeys(t *testing.T) {
	f := start(t)
	c, _, doc := signIn(t, f, "alice", "pw-alice")
	csrf := csrfOf(t, doc)
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/api-keys", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="no-keys"]`).Length())
	require.Equal(t, 1, doc.Find(`label:contains("Name") input[name="name"]`).Length(), "inputs are labelled")

	// No CSRF token, no key.
	code, _ = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys", url.Values{"name": {"ci"}, "role": {"tenant-viewer"}})
	require.Equal(t, 403, code)
	code, doc = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys", url.Values{"csrf": {csrf}, "name": {""}, "role": {"tenant-viewer"}})
	require.Equal(t, 400, code)
	require.Contains(t, doc.Find(`[data-testid="keys-message"]`).Text(), "name")

	code, doc = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys", url.Values{"csrf": {csrf}, "name": {"ci <b>bot</b>"}, "role": {"tenant-viewer"}})
	require.Equal(t, 201, code)
	secret := doc.Find(`[data-testid="new-key-secret"]`).Text()
	require.True(t, strings.HasPrefix(secret, "tsk_"), secret)
	require.Equal(t, "ci <b>bot</b>", doc.Find(`[data-testid="key-row"] td`).First().Text(), "the name is text, not markup")
	p, ok := f.keys.Lookup(config.HashAPIKey(secret))
	require.True(t, ok)
	require.Equal(t, "acme", p.Tenant)

	// Shown once: the list never shows it again.
	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/api-keys", nil)
	require.Equal(t, 200, code)
	html, _ := doc.Html()
	require.NotContains(t, html, secret)
	require.Contains(t, doc.Find(`[data-testid="last-used"]`).Text(), "UTC", "the lookup above is its last use")
	id, _ := doc.Find(`[data-testid="key-row"]`).Attr("data-key-id")

	// Another tenant's admin can neither see nor revoke it.
	cg, _, gdoc := signIn(t, f, "gina", "pw-gina")
	code, _ = page(t, cg, "GET", f.url+"/ui/tenants/acme/api-keys", nil)
	require.Equal(t, 403, code)
	code, _ = page(t, cg, "POST", f.url+"/ui/tenants/acme/api-keys/"+id+"/revoke", url.Values{"csrf": {csrfOf(t, gdoc)}})
	require.Equal(t, 403, code)
	code, _ = page(t, cg, "POST", f.url+"/ui/tenants/globex/api-keys/"+id+"/revoke", url.Values{"csrf": {csrfOf(t, gdoc)}})
	require.Equal(t, 404, code, "a key id of another tenant is not found in one's own")
	_, ok = f.keys.Lookup(config.HashAPIKey(secret))
	require.True(t, ok)

	code, _ = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys/"+id+"/revoke", url.Values{"csrf": {"forged"}})
	require.Equal(t, 403, code)
	code, doc = page(t, c, "POST", f.url+"/ui/tenants/acme/api-keys/"+id+"/revoke", url.Values{"csrf": {csrf}})
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="key-status"]`).Text(), "revoked")
	_, ok = f.keys.Lookup(config.HashAPIKey(secret))
	require.False(t, ok)

	var actions []string
	for _, a := range f.audited {
		if strings.HasPrefix(a, "acme ") && strings.Contains(a, `"api_key.`) {
			actions = append(actions, a)
		}
	}
	require.Len(t, actions, 2, "created and revoked, in acme's chain")
	require.Contains(t, actions[0], `"api_key.created"`)
	require.Contains(t, actions[1], `"api_key.revoked"`)
	require.Contains(t, actions[1], `"id":"alice"`)
}

func TestExportsPageAndDownloads(t *testing.T) {
	f := start(t)
	c, _, _ := signIn(t, f, "victor", "pw-victor")
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/exports", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="trail-export-form"]`).Length())
	require.Equal(t, 1, doc.Find(`[data-testid="bundle-denied"]`).Length(), "a viewer may not export everything")
	require.Zero(t, doc.Find(`a[href="/ui/tenants/acme/api-keys"]`).Length(), "a viewer has no key page link")

	get := func(c *http.Client, u string) (int, string, http.Header) {
		res, err := c.Get(u)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header
	}
	code, body, h := get(c, f.url+"/ui/tenants/acme/audit/export?format=csv&action=acme.thing_done&from=2000-01-01")
	require.Equal(t, 200, code, body)
	require.Contains(t, h.Get("Content-Disposition"), "attachment")
	require.Len(t, strings.Split(strings.TrimSpace(body), "\n"), 31, "header and 30 records")
	code, body, _ = get(c, f.url+"/ui/tenants/acme/audit/export?format=parquet")
	require.Equal(t, 200, code)
	require.True(t, strings.HasPrefix(body, "PAR1"))
	code, _, _ = get(c, f.url+"/ui/tenants/acme/audit/export?format=xml")
	require.Equal(t, 400, code)
	code, _, _ = get(c, f.url+"/ui/tenants/acme/audit/export?format=csv&from=yesterday")
	require.Equal(t, 400, code)
	code, body, _ = get(c, f.url+"/ui/tenants/globex/audit/export?format=csv")
	require.Equal(t, 403, code)
	require.NotContains(t, body, "globex-user")
	code, _, _ = get(c, f.url+"/ui/tenants/acme/export")
	require.Equal(t, 403, code)

	ca, _, _ := signIn(t, f, "alice", "pw-alice")
	code, doc = page(t, ca, "GET", f.url+"/ui/tenants/acme/exports", nil)
	require.Equal(t, 200, code)
	href, ok := doc.Find(`[data-testid="bundle-link"]`).Attr("href")
	require.True(t, ok)
	code, body, h = get(ca, f.url+href)
	require.Equal(t, 200, code)
	require.Equal(t, "application/gzip", h.Get("Content-Type"))
	sum, err := export.VerifyBundle(strings.NewReader(body), f.verifier)
	require.NoError(t, err)
	require.Equal(t, "acme", sum.Manifest.Tenant)
	require.EqualValues(t, 31, sum.Audit.Records)

	exported := 0
	for _, a := range f.audited {
		if strings.Contains(a, `"audit.exported"`) || strings.Contains(a, `"export.downloaded"`) {
			exported++
		}
	}
	require.Equal(t, 3, exported, "two trail downloads and one archive are audited (refused ones write nothing)")
}

// Every route added for exports and keys, as every user, for each tenant.
func TestUIRoleMatrixExportsAndKeys(t *testing.T) {
	f := start(t)
	may := map[string]func(user, tenant string) bool{
		"/exports": func(u, tn string) bool {
			return u == "carol" || tn == "acme" && (u == "alice" || u == "victor") || tn == "globex" && u == "gina"
		},
		"/audit/export?format=csv": func(u, tn string) bool {
			return u == "carol" || tn == "acme" && (u == "alice" || u == "victor") || tn == "globex" && u == "gina"
		},
		"/export": func(u, tn string) bool {
			return u == "carol" || tn == "acme" && u == "alice" || tn == "globex" && u == "gina"
		},
		"/api-keys": func(u, tn string) bool { return tn == "acme" && u == "alice" || tn == "globex" && u == "gina" },
	}
	for _, usr := range users {
		c, _, doc := signIn(t, f, usr.Name, "pw-"+usr.Name)
		csrf := csrfOf(t, doc)
		for _, tenant := range []string{"acme", "globex"} {
			for route, ok := range may {
				res, err := c.Get(f.url + "/ui/tenants/" + tenant + route)
				require.NoError(t, err)
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				want := map[bool]int{true: 200, false: 403}[ok(usr.Name, tenant)]
				require.Equal(t, want, res.StatusCode, "%s GET %s of %s", usr.Name, route, tenant)
				if want == 403 {
					require.NotContains(t, string(b), tenant+"-user-", "nothing of the tenant leaks")
				}
			}
			code, _ := page(t, c, "POST", f.url+"/ui/tenants/"+tenant+"/api-keys", url.Values{"csrf": {csrf}, "name": {"k"}, "role": {"tenant-viewer"}})
			require.Equal(t, map[bool]int{true: 201, false: 403}[may["/api-keys"](usr.Name, tenant)], code, "%s creates a key in %s", usr.Name, tenant)
		}
	}
}
