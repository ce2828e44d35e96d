package export_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/identity"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// rewrite copies a bundle, changing one file with edit.
func rewrite(t *testing.T, bundle []byte, name string, edit func([]byte) []byte) []byte {
	gz, err := gzip.NewReader(bytes.NewReader(bundle))
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		if h.Name == name {
			data = edit(data)
		}
		h.Size = int64(len(data))
		require.NoError(t, tw.WriteHeader(h))
		_, err = tw.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gw.Close())
	return out.Bytes()
}

func TestExportBundleVerifiesOfflineAndHoldsOnlyTheTenant(t *testing.T) {
	p := collectortest.Start(t, nil, "acme", "globex")
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex"} {
		js, err := jetstream.New(p.TenantConn(t, tenant))
		require.NoError(t, err)
		for i := range 20 {
			for _, m := range []struct{ action, body string }{
				{"order_created", fmt.Sprintf(`{"actor":"u%d","entity":"o-%d"}`, i, i)},
				{"_log", fmt.Sprintf(`{"level":"info","message":"%s %d"}`, tenant, i)},
				{"_audit", fmt.Sprintf(`{"actor":{"type":"user","id":"u%d"},"action":"order.approved","outcome":"success"}`, i)},
			} {
				msg := nats.NewMsg("tenant." + tenant + ".shop." + m.action)
				msg.Header.Set("Tenant-Id", tenant)
				msg.Data = []byte(m.body)
				_, err := js.PublishMsg(ctx, msg)
				require.NoError(t, err)
			}
		}
	}
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM audit_records FINAL") == 40 && p.Count(t, "SELECT count() FROM events FINAL") == 40 &&
			p.Count(t, "SELECT count() FROM logs FINAL") == 40
	}, 30*time.Second, 100*time.Millisecond)
	b, err := config.LoadBootstrap(p.Config.Data)
	require.NoError(t, err)
	var buf, progress bytes.Buffer
	m, err := export.Write(ctx, p.Store, "acme", b.AuditSignerKey, b.AuditVerifierKey, &buf, &progress)
	require.NoError(t, err)
	require.Contains(t, progress.String(), "events 20 rows")
	rows := map[string]int{}
	for _, f := range m.Files {
		rows[f.Name] = f.Rows
	}
	require.Equal(t, 20, rows["events.ndjson"])
	require.Equal(t, 20, rows["logs.ndjson"])
	require.Equal(t, 20, rows["audit.ndjson"])
	bundle := buf.Bytes()
	require.NotContains(t, string(gunzipAll(t, bundle)), "globex", "nothing of another tenant")

	sum, err := export.VerifyBundle(bytes.NewReader(bundle), b.AuditVerifierKey)
	require.NoError(t, err)
	require.Equal(t, "acme", sum.Manifest.Tenant)
	require.Equal(t, uint64(20), sum.Audit.Records)

	// Any change is caught offline.
	_, err = export.VerifyBundle(bytes.NewReader(rewrite(t, bundle, "events.ndjson", func(d []byte) []byte {
		return bytes.Replace(d, []byte("o-7"), []byte("o-8"), 1)
	})), b.AuditVerifierKey)
	require.ErrorContains(t, err, "events.ndjson was modified")
	_, err = export.VerifyBundle(bytes.NewReader(rewrite(t, bundle, "manifest.json", func(d []byte) []byte {
		return bytes.Replace(d, []byte(`"rows": 20`), []byte(`"rows": 21`), 1)
	})), b.AuditVerifierKey)
	require.ErrorContains(t, err, "not over this manifest")
	_, other, err := auditlog.GenerateKey()
	require.NoError(t, err)
	_, err = export.VerifyBundle(bytes.NewReader(bundle), other)
	require.ErrorContains(t, err, "manifest signature")
	_, err = export.VerifyBundle(strings.NewReader("not a bundle"), b.AuditVerifierKey)
	require.ErrorIs(t, err, export.ErrBundle)
}

func gunzipAll(t *testing.T, b []byte) []byte {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	out, err := io.ReadAll(gz)
	require.NoError(t, err)
	return out
}

func TestExportRouteRolesAndAudit(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) {
		for secret, k := range map[string]config.APIKey{
			"admin": {Name: "acme-admin", Role: config.RoleTenantAdmin, Tenant: "acme"}, "viewer": {Name: "v", Role: config.RoleTenantViewer, Tenant: "acme"},
			"compliance": {Name: "c", Role: config.RoleCompliance}, "finance": {Name: "f", Role: config.RoleFinance},
			"globex": {Name: "g", Role: config.RoleTenantAdmin, Tenant: "globex"},
		} {
			k.KeyHash = config.HashAPIKey(secret)
			c.APIKeys = append(c.APIKeys, k)
		}
	}, "acme", "globex")
	b, err := config.LoadBootstrap(p.Config.Data)
	require.NoError(t, err)
	var audited []string
	h := &export.Handler{Keys: identity.NewKeys(p.Config), Stores: func(string) (*chstore.Store, error) { return p.Store, nil },
		SignerKey: b.AuditSignerKey, VerifierKey: b.AuditVerifierKey,
		Audit: func(_ context.Context, tenant, _ string, body []byte) error {
			audited = append(audited, tenant+" "+string(body))
			return nil
		}}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		key, tenant string
		status      int
	}{{"", "acme", 401}, {"admin", "acme", 200}, {"admin", "globex", 403}, {"viewer", "acme", 403}, {"finance", "acme", 403},
		{"compliance", "acme", 200}, {"compliance", "globex", 200}, {"globex", "acme", 403}, {"globex", "globex", 200}} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/tenants/"+c.tenant+"/export", nil)
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, c.status, res.StatusCode, "%s on %s: %s", c.key, c.tenant, body)
		if c.status == 200 {
			sum, err := export.VerifyBundle(bytes.NewReader(body), b.AuditVerifierKey)
			require.NoError(t, err)
			require.Equal(t, c.tenant, sum.Manifest.Tenant)
		}
	}
	downloads, denials := 0, 0
	for _, a := range audited {
		downloads += strings.Count(a, `"action":"export.downloaded"`)
		denials += strings.Count(a, `"action":"api.access_denied"`)
	}
	require.Equal(t, 4, downloads, "every download audited in the exported tenant's chain")
	require.Equal(t, 4, denials, "every refused known credential audited in the tenant's chain")
	require.True(t, strings.HasPrefix(audited[0], "acme "))
	require.Contains(t, audited[0], `"action":"export.downloaded"`)
}
