package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/migrations"
	"github.com/tenantscope/tenantscope/ui"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

var users = []config.User{
	{Name: "carol", Role: config.RoleCompliance}, {Name: "frank", Role: config.RoleFinance}, {Name: "sam", Role: config.RoleSRE},
	{Name: "alice", Role: config.RoleTenantAdmin, Tenant: "acme"}, {Name: "victor", Role: config.RoleTenantViewer, Tenant: "acme"},
	{Name: "gina", Role: config.RoleTenantAdmin, Tenant: "globex"},
}

type fixture struct {
	url     string
	w       *auditlog.Writer
	st      *chstore.Store
	audited []string
}

func start(t *testing.T) *fixture {
	db := enginetest.New(t)
	ctx := context.Background()
	st, err := chstore.Open(ctx, chstore.Options{DSN: db.URL(), Database: db.Name, Name: "t"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = migrations.Up(ctx, st, migrations.Params{Database: db.Name}, nil)
	require.NoError(t, err)
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
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte("pw-"+u.Name), bcrypt.MinCost)
		require.NoError(t, err)
		u.PasswordHash = string(h)
		cfg.Users = append(cfg.Users, u)
	}
	f := &fixture{w: w, st: st}
	u := ui.New(cfg, []byte("0123456789abcdef0123456789abcdef"), func(string) (*chstore.Store, error) { return st, nil },
		func(_ context.Context, tenant, _ string, body []byte) error {
			f.audited = append(f.audited, tenant+" "+string(body))
			return nil
		}, zerolog.Nop())
	u.VerifierKey = vkey
	u.Health = auditlog.NewHealthBoard()
	for _, tenant := range []string{"acme", "globex", config.PlatformTenant} {
		rep, err := auditlog.Verify(ctx, st, tenant, 1, vkey)
		require.NoError(t, err)
		u.Health.Set(rep, time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	}
	mux := http.NewServeMux()
	u.Register(mux)
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
	require.True(t, strings.HasPrefix(f.audited[0], "acme "), f.audited[0])
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
	// Someone without audit access sees none.
	_, _, doc = signIn(t, f, "frank", "pw-frank")
	require.Equal(t, 1, doc.Find(`[data-testid="no-tenants"]`).Length())
}
