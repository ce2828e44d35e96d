package auditlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// keys: one API key per role, the tenant roles for acme.
var roleKeys = map[string]config.APIKey{
	"compliance": {Name: "c", Role: config.RoleCompliance},
	"finance":    {Name: "f", Role: config.RoleFinance},
	"sre":        {Name: "s", Role: config.RoleSRE},
	"admin":      {Name: "a", Role: config.RoleTenantAdmin, Tenant: "acme"},
	"viewer":     {Name: "v", Role: config.RoleTenantViewer, Tenant: "acme"},
	"other":      {Name: "o", Role: config.RoleTenantAdmin, Tenant: "globex"},
}

func apiServer(t *testing.T, c *chain) string {
	cfg := config.Default()
	for secret, k := range roleKeys {
		k.KeyHash = config.HashAPIKey(secret)
		cfg.APIKeys = append(cfg.APIKeys, k)
	}
	// The publisher appends straight to the chain writer (the NATS hop is
	// the collector's, tested there).
	pub := func(ctx context.Context, tenant, _ string, body []byte) error {
		var r auditlog.Record
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		_, err := c.w.Append(ctx, tenant, []auditlog.Record{r})
		return err
	}
	api := auditlog.NewAPI(identity.NewKeys(cfg), func(tenant string) (*chstore.Store, error) {
		if tenant != "acme" && tenant != "globex" && tenant != config.PlatformTenant {
			return nil, fmt.Errorf("no tenant %s", tenant)
		}
		return c.st, nil
	}, pub, zerolog.Nop())
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, u, key string) (int, map[string]any, http.Header) {
	status, b, h := identitytest.Call(t, "GET", u, key, "")
	var body map[string]any
	require.NoError(t, json.Unmarshal(b, &body), string(b))
	return status, body, h
}

// Every role, its own tenant and a foreign one, on every audit route.
func TestAuditAPIRoleMatrix(t *testing.T) {
	c := newChain(t, 12, 100)
	base := apiServer(t, c)
	routes := []string{"/api/v1/tenants/%s/audit-events", "/api/v1/tenants/%s/audit-events/3/proof"}
	allowed := map[string]map[string]bool{ // key -> tenant -> allowed
		"compliance": {"acme": true, "globex": true},
		"admin":      {"acme": true},
		"viewer":     {"acme": true},
		"other":      {"globex": true},
	}
	for _, route := range routes {
		for _, key := range []string{"", "wrong", "compliance", "finance", "sre", "admin", "viewer", "other"} {
			for _, tenant := range []string{"acme", "globex"} {
				code, body, hdr := get(t, base+fmt.Sprintf(route, tenant), key)
				want := http.StatusForbidden
				switch {
				case key == "" || key == "wrong":
					want = http.StatusUnauthorized
				case allowed[key][tenant]:
					want = http.StatusOK
					if tenant == "globex" && route != routes[0] {
						want = http.StatusNotFound // globex has no records to prove
					}
				}
				require.Equal(t, want, code, "route %s key %q tenant %s: %v", route, key, tenant, body)
				if code != http.StatusOK {
					e := body["error"].(map[string]any)
					require.NotEmpty(t, e["code"])
					require.Equal(t, hdr.Get("X-Correlation-Id"), e["correlation_id"])
				}
				if code == http.StatusOK && route == routes[0] && tenant == "globex" {
					for _, d := range body["data"].([]any) {
						require.Equal(t, "api.access_denied", d.(map[string]any)["action"], "no acme record leaks into globex's trail")
					}
				}
			}
		}
	}
}

func TestAuditAPIFiltersFieldsAndStablePagination(t *testing.T) {
	c := newChain(t, 30, 10)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events"
	// Pages of 7, newest first, while new records keep arriving.
	var seqs []float64
	next := ""
	for page := 0; ; page++ {
		u := base + "?limit=7&fields=seq,action"
		if next != "" {
			u += "&cursor=" + next
		}
		code, body, _ := get(t, u, "viewer")
		require.Equal(t, 200, code, body)
		for _, d := range body["data"].([]any) {
			m := d.(map[string]any)
			require.Len(t, m, 2, "field selection")
			seqs = append(seqs, m["seq"].(float64))
		}
		if page == 1 {
			_, err := c.w.Append(t.Context(), "acme", []auditlog.Record{sample(99)})
			require.NoError(t, err)
		}
		next, _ = body["next_cursor"].(string)
		if next == "" {
			break
		}
	}
	require.Len(t, seqs, 30, "no record skipped or repeated although one arrived meanwhile")
	for i := range seqs {
		require.Equal(t, float64(30-i), seqs[i])
	}
	q := url.Values{"actor": {"u-5"}, "outcome": {"success"}, "q": {"INV-5"}}
	code, body, _ := get(t, base+"?"+q.Encode(), "compliance")
	require.Equal(t, 200, code)
	require.Len(t, body["data"], 1)
	rec := body["data"].([]any)[0].(map[string]any)
	require.Equal(t, "inv-5", rec["target_id"])
	require.Equal(t, float64(6), rec["changes"].(map[string]any)["after"].(map[string]any)["amount"])

	for _, hostile := range []string{"' OR 1=1 --", "\x00", "%", "u-5'); DROP TABLE audit_records; --"} {
		code, body, _ := get(t, base+"?"+url.Values{"actor": {hostile}, "q": {hostile}}.Encode(), "compliance")
		require.Equal(t, 200, code, body)
		require.Empty(t, body["data"])
	}
	for _, bad := range []string{"limit=0", "limit=x", "sort=name", "fields=password", "cursor=not-a-cursor!", "from=yesterday", "outcome=maybe"} {
		code, body, _ := get(t, base+"?"+bad, "compliance")
		require.Equal(t, 400, code, bad)
		require.Equal(t, "bad_request", body["error"].(map[string]any)["code"])
	}
	code, body, _ = get(t, base+"?sort=seq&limit=3", "admin")
	require.Equal(t, 200, code)
	require.Equal(t, float64(1), body["data"].([]any)[0].(map[string]any)["seq"])

	// An inclusion proof from the API verifies offline.
	require.NoError(t, c.w.Checkpoint(t.Context(), "acme"))
	req, _ := http.NewRequest("GET", apiServer(t, c)+"/api/v1/tenants/acme/audit-events/17/proof", nil)
	req.Header.Set("Authorization", "Bearer viewer")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var p auditlog.Inclusion
	require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	res.Body.Close()
	require.NoError(t, auditlog.VerifyInclusion(p, c.verify))
}

func post(t *testing.T, u, key, idem, body string) (int, map[string]any) {
	req, err := http.NewRequest("POST", u, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&out))
	return res.StatusCode, out
}

func TestAuditAPIPostIsIdempotentAndDenialsAreAudited(t *testing.T) {
	c := newChain(t, 2, 100)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events"
	rec := `{"actor":{"type":"user","id":"ann"},"action":"role.granted","target":{"type":"user","id":"bob"},"outcome":"success","changes":{"before":{"role":"viewer"},"after":{"role":"admin"}}}`
	code, out := post(t, base, "admin", "req-1", rec)
	require.Equal(t, http.StatusAccepted, code, out)
	id := out["record_id"]
	code, out = post(t, base, "admin", "req-1", rec)
	require.Equal(t, http.StatusAccepted, code)
	require.Equal(t, id, out["record_id"], "same Idempotency-Key, same record")
	code, _ = post(t, base, "admin", "req-2", rec)
	require.Equal(t, http.StatusAccepted, code)
	_, list, _ := get(t, base+"?action=role.granted", "compliance")
	require.Len(t, list["data"], 2, "req-1 chained once, req-2 once")
	code, out = post(t, base, "admin", "req-1", strings.Replace(rec, "bob", "eve", 1))
	require.Equal(t, http.StatusConflict, code, "an Idempotency-Key reused with a different body")
	require.Equal(t, "idempotency_key_reused", out["error"].(map[string]any)["code"])
	_, list, _ = get(t, base+"?action=role.granted", "compliance")
	require.Len(t, list["data"], 2, "nothing written")

	for _, c := range []struct {
		key, idem, body string
		status          int
	}{
		{"admin", "", rec, 400},
		{"admin", "k", `{"actor":{"type":"user","id":"a"},"action":"x","outcome":"success","surprise":1}`, 400},
		{"admin", "k", `{"actor":{"type":"user","id":"a"},"action":"x","outcome":"maybe"}`, 400},
		{"admin", "k", `{"actor":{"type":"user","id":"a"},"action":"x","outcome":"success","seq":7}`, 400},
		{"viewer", "k", rec, 403},
		{"compliance", "k", rec, 403},
		{"other", "k", rec, 403},
	} {
		code, out := post(t, base, c.key, c.idem, c.body)
		require.Equal(t, c.status, code, "%s %s: %v", c.key, c.body, out)
	}
	// Each refusal is in the caller's own chain, with who tried: acme's
	// viewer in acme's, compliance (a cross-tenant role) in the platform's,
	// globex's admin in globex's.
	for chain, key := range map[string]string{"acme": "v", config.PlatformTenant: "c", "globex": "o"} {
		u := strings.Replace(base, "/acme/", "/"+chain+"/", 1) + "?action=api.access_denied"
		_, denied, _ := get(t, u, "compliance")
		require.Len(t, denied["data"], 1, chain)
		first := denied["data"].([]any)[0].(map[string]any)
		require.Equal(t, "denied", first["outcome"])
		require.Equal(t, key, first["actor_id"])
		require.Equal(t, "POST /api/v1/tenants/acme/audit-events", first["target_id"])
		require.Equal(t, "acme", first["target_name"])
	}
	for _, chain := range []string{"acme", "globex", config.PlatformTenant} {
		rep, err := auditlog.Verify(context.Background(), c.st, chain, 1, c.verify)
		require.NoError(t, err)
		require.True(t, rep.OK(), "%s: %v", chain, rep.Problem)
	}
}

func TestAuditTrailExportStreamsCSVJSONLAndParquet(t *testing.T) {
	c := newChain(t, 2300, 1000)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events/export"
	fetch := func(q, key string) (int, string) {
		req, _ := http.NewRequest("GET", base+"?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, body := fetch("format=csv&action=invoice.updated", "viewer")
	require.Equal(t, 200, code, body)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	require.Len(t, lines, 2301, "header and every record, across several internal pages")
	require.True(t, strings.HasPrefix(lines[0], "seq,record_id,time,"))
	require.True(t, strings.HasPrefix(lines[1], "2300,"), lines[1])

	code, body = fetch("format=jsonl&action=invoice.updated&fields=seq,actor_id&sort=seq", "compliance")
	require.Equal(t, 200, code)
	jl := strings.Split(strings.TrimSpace(body), "\n")
	require.Len(t, jl, 2300)
	require.JSONEq(t, `{"seq":1,"actor_id":"u-1"}`, jl[0])

	code, body = fetch("format=csv&actor=u-7", "admin")
	require.Equal(t, 200, code)
	require.Len(t, strings.Split(strings.TrimSpace(body), "\n"), 2)

	code, body = fetch("format=parquet&action=invoice.updated&fields=seq,actor_id,changes&sort=seq", "admin")
	require.Equal(t, 200, code, body)
	type pqRow struct {
		Seq     int64   `parquet:"seq"`
		ActorID *string `parquet:"actor_id,optional"`
		Changes *string `parquet:"changes,optional"`
	}
	pq, err := parquet.Read[pqRow](strings.NewReader(body), int64(len(body)))
	require.NoError(t, err)
	require.Len(t, pq, 2300)
	require.Equal(t, int64(1), pq[0].Seq)
	require.Equal(t, "u-1", *pq[0].ActorID)
	require.Equal(t, int64(2300), pq[2299].Seq)
	require.NotNil(t, pq[0].Changes)
	require.True(t, json.Valid([]byte(*pq[0].Changes)), *pq[0].Changes)

	code, _ = fetch("format=xml", "admin")
	require.Equal(t, 400, code)
	code, _ = fetch("format=csv", "finance")
	require.Equal(t, 403, code)
	// Each export is itself in the trail.
	_, list, _ := get(t, apiServer(t, c)+"/api/v1/tenants/acme/audit-events?action=audit.exported", "compliance")
	require.Len(t, list["data"], 4)
}
