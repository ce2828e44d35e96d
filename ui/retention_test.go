package ui_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

func TestRetentionPageForCompliance(t *testing.T) {
	f := start(t)
	skey, _, err := auditlog.GenerateKey()
	require.NoError(t, err)
	f.ui.Retention = retention.New(f.cfg, placement.New(), map[string]*chstore.Store{"default": f.st}, func(context.Context, string, string, []byte) error { return nil }, nil, skey, zerolog.Nop())
	require.NoError(t, f.st.Exec(context.Background(), `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
		SELECT 'acme', 'crm', 'updated', now64(3) - toIntervalDay(1), generateUUIDv4(number), 'zoe', 'e', 1, '', 90 FROM numbers(4)`))

	c, _, home := signIn(t, f, "carol", "pw-carol")
	csrf := csrfOf(t, home)
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 4, doc.Find(`[data-testid="policy-row"]`).Length())
	require.Equal(t, 1, doc.Find(`[data-testid="hold-form"]`).Length())
	require.Contains(t, doc.Find(`[data-testid="residency-summary"]`).Text(), "every row of this tenant is in its region")

	post := func(path string, form url.Values) (int, string) {
		form.Set("csrf", csrf)
		code, doc := page(t, c, "POST", f.url+"/ui/tenants/acme/retention/"+path, form)
		return code, doc.Find(`[data-testid="retention-message"]`).Text()
	}
	code, msg := post("policy", url.Values{"signal": {"audit_records"}, "days": {"30"}, "reason": {"x"}})
	require.Equal(t, 400, code)
	require.Contains(t, msg, "legal minimum")
	code, msg = post("policy", url.Values{"signal": {"events"}, "days": {"60"}, "reason": {"minimisation"}})
	require.Equal(t, 200, code, msg)
	require.Contains(t, msg, "now 60 days")
	code, msg = post("holds", url.Values{"kind": {"subject"}, "subject": {"zoe"}, "reason": {""}})
	require.Equal(t, 400, code, msg)
	code, msg = post("holds", url.Values{"kind": {"subject"}, "subject": {"zoe"}, "reason": {"litigation"}})
	require.Equal(t, 201, code, msg)
	code, msg = post("erasures", url.Values{"subject": {"zoe"}})
	require.Equal(t, 409, code, "a held subject: the conflict is shown: %s", msg)
	require.Contains(t, msg, "blocked")
	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 200, code)
	require.Equal(t, "60", doc.Find(`[data-testid="policy-days"]`).Eq(0).Text())
	require.Equal(t, 1, doc.Find(`[data-testid="hold-row"]`).Length())
	require.Contains(t, doc.Find(`[data-testid="erasure-status"]`).Text(), "blocked_by_hold")
	require.GreaterOrEqual(t, doc.Find(`[data-testid="purge-row"]`).Length(), 2, "each change ran a purge with a receipt")

	// No CSRF, no change.
	code, _ = page(t, c, "POST", f.url+"/ui/tenants/acme/retention/purge", url.Values{})
	require.Equal(t, 403, code)

	// A tenant admin reads its own page without the compliance forms; others are refused.
	ca, _, ahome := signIn(t, f, "alice", "pw-alice")
	code, doc = page(t, ca, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 200, code)
	require.Zero(t, doc.Find(`[data-testid="hold-form"]`).Length())
	code, _ = page(t, ca, "POST", f.url+"/ui/tenants/acme/retention/purge", url.Values{"csrf": {csrfOf(t, ahome)}})
	require.Equal(t, 403, code)
	for _, u := range []string{"victor", "gina", "frank", "sam"} {
		cu, _, _ := signIn(t, f, u, "pw-"+u)
		code, _ := page(t, cu, "GET", f.url+"/ui/tenants/acme/retention", nil)
		require.Equal(t, 403, code, u)
	}
}

// A compliance officer moves a tenant to another region from the retention
// page and follows it there; the signed transfer record is shown and
// verifies. Tenant roles see the history but not the form.
func TestRegionMoveFromTheRetentionPage(t *testing.T) {
	f := startRegions(t, "us")
	ctx := context.Background()
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	f.ui.Retention = retention.New(f.cfg, placement.New(), f.stores, func(context.Context, string, string, []byte) error { return nil }, nil, skey, zerolog.Nop())
	require.NoError(t, f.st.Exec(ctx, `INSERT INTO events (tenant_id, service, action, time, event_id, actor, entity, schema_version, payload, retention_days)
		SELECT 'acme', 'crm', 'updated', now64(3) - toIntervalDay(1), generateUUIDv4(number), 'zoe', 'e', 1, '', 90 FROM numbers(4)`))

	c, _, home := signIn(t, f, "carol", "pw-carol")
	csrf := csrfOf(t, home)
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 200, code)
	require.Equal(t, []string{"us"}, doc.Find(`[data-testid="move-form"] option`).Map(func(_ int, s *goquery.Selection) string { return s.Text() }))
	post := func(form url.Values) (int, string) {
		form.Set("csrf", csrf)
		code, doc := page(t, c, "POST", f.url+"/ui/tenants/acme/retention/move", form)
		return code, doc.Find(`[data-testid="retention-message"]`).Text()
	}
	code, msg := post(url.Values{"region": {"mars"}, "reason": {"x"}})
	require.Equal(t, 400, code)
	require.Contains(t, msg, `unknown region "mars"`)
	code, msg = post(url.Values{"region": {"us"}, "reason": {""}})
	require.Equal(t, 400, code)
	require.Contains(t, msg, "needs a reason")
	code, msg = post(url.Values{"region": {"us"}, "reason": {"customer request"}})
	require.Equal(t, 202, code, msg)
	require.Contains(t, msg, "started")

	var state string
	require.Eventually(t, func() bool {
		_, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/retention", nil)
		state = doc.Find(`[data-testid="move-state"]`).First().Text()
		return strings.HasPrefix(state, "completed") || strings.HasPrefix(state, "failed")
	}, 30*time.Second, 100*time.Millisecond)
	require.True(t, strings.HasPrefix(state, "completed"), state)
	tr, err := retention.VerifyTransfer(doc.Find(`[data-testid="transfer"]`).Text(), vkey)
	require.NoError(t, err)
	require.Equal(t, "us", tr.To)
	require.Contains(t, doc.Find(`[data-testid="residency-summary"]`).Text(), "Pinned to us")
	require.Equal(t, "default", doc.Find(`[data-testid="move-form"] option`).Text(), "it may move back")
	require.Zero(t, doc.Find(`meta[data-testid="refresh"]`).Length(), "nothing runs: no reloading")

	// While a move runs the page reloads itself to follow it.
	m, err := f.ui.Retention.BeginMove(ctx, "globex", "us", auditlog.Actor{Type: "user", ID: "carol"}, "follow me")
	require.NoError(t, err)
	_, doc = page(t, c, "GET", f.url+"/ui/tenants/globex/retention", nil)
	require.True(t, strings.HasPrefix(doc.Find(`[data-testid="move-state"]`).First().Text(), "copying"))
	require.Equal(t, 1, doc.Find(`meta[data-testid="refresh"]`).Length())
	_, err = f.ui.Retention.RunMove(ctx, m, nil)
	require.NoError(t, err)
	_, doc = page(t, c, "GET", f.url+"/ui/tenants/globex/retention", nil)
	require.Zero(t, doc.Find(`meta[data-testid="refresh"]`).Length())
	var n uint64
	require.NoError(t, f.stores["us"].QueryRow(ctx, []any{&n}, "SELECT count() FROM events WHERE tenant_id = 'acme'"))
	require.EqualValues(t, 4, n)

	// The tenant's admin sees the history, not the form, and may not move.
	ca, _, ahome := signIn(t, f, "alice", "pw-alice")
	code, doc = page(t, ca, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="move-row"]`).Length())
	require.Zero(t, doc.Find(`[data-testid="move-form"]`).Length())
	code, _ = page(t, ca, "POST", f.url+"/ui/tenants/acme/retention/move", url.Values{"csrf": {csrfOf(t, ahome)}, "region": {"default"}, "reason": {"x"}})
	require.Equal(t, 403, code)
	// Another tenant's admin may not even read it.
	cg, _, _ := signIn(t, f, "gina", "pw-gina")
	code, _ = page(t, cg, "GET", f.url+"/ui/tenants/acme/retention", nil)
	require.Equal(t, 403, code)
}

// The platform chain is no tenant: its retention page says what applies to
// it (before: 500, "unknown tenant _platform"), and changes are refused.
func TestPlatformRetentionPage(t *testing.T) {
	f := start(t)
	skey, _, err := auditlog.GenerateKey()
	require.NoError(t, err)
	f.ui.Retention = retention.New(f.cfg, placement.New(), map[string]*chstore.Store{"default": f.st}, func(context.Context, string, string, []byte) error { return nil }, nil, skey, zerolog.Nop())
	c, _, home := signIn(t, f, "carol", "pw-carol")
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/_platform/retention", nil)
	require.Equal(t, 200, code)
	require.Equal(t, "2555", doc.Find(`[data-testid="platform-audit-days"]`).Text())
	require.Contains(t, doc.Find(`[data-testid="platform-region"]`).Text(), "default")
	require.Zero(t, doc.Find(`[data-testid="policy-row"]`).Length())
	code, doc = page(t, c, "POST", f.url+"/ui/tenants/_platform/retention/purge", url.Values{"csrf": {csrfOf(t, home)}})
	require.Equal(t, 404, code)
	require.Contains(t, doc.Find(`[data-testid="error-message"]`).Text(), "no retention policy")
}
