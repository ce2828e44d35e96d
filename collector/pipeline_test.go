package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func TestPIIIsRedactedBeforeStorage(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) {
		c.Tenants[0].Redact = []config.RedactRule{
			{Path: "customer.email", Action: "hash"},
			{Path: "customer.phone", Action: "drop"},
			{Pattern: `[\w.+-]+@[\w-]+\.[\w.]+`, Action: "mask"},
		}
	}, "acme", "globex")
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex"} {
		js, err := jetstream.New(p.TenantConn(t, tenant))
		require.NoError(t, err)
		for _, m := range []struct{ subject, body string }{
			{"tenant." + tenant + ".crm.contact_created", `{"actor":"u1","customer":{"email":"ann@example.com","phone":"+3612345","name":"Ann"}}`},
			{"tenant." + tenant + ".crm._log", `{"level":"info","message":"mail sent to bob@example.org"}`},
		} {
			msg := nats.NewMsg(m.subject)
			msg.Header.Set("Tenant-Id", tenant)
			msg.Data = []byte(m.body)
			_, err := js.PublishMsg(ctx, msg)
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM events") == 2 && p.Count(t, "SELECT count() FROM logs") == 2
	}, 30*time.Second, 50*time.Millisecond)
	// acme has rules: nothing personal reaches ClickHouse, in events or logs.
	require.Zero(t, p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND (payload LIKE '%ann@example.com%' OR payload LIKE '%+3612345%')"))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme' AND JSONExtractString(payload, 'customer', 'email') LIKE 'h:%' AND JSONExtractString(payload, 'customer', 'name') = 'Ann'"))
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM logs WHERE tenant_id = 'acme' AND body = 'mail sent to [REDACTED]'"))
	// globex has none: stored as sent.
	require.Equal(t, uint64(1), p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'globex' AND payload LIKE '%ann@example.com%'"))
}
