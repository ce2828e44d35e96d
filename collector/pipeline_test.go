package collector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/natsbus"
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

// With several collector processes, only the audit writer chains audit
// records; the others leave them to it, and every record is chained once.
func TestAuditRecordsGoToTheOneWriter(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	reg := prometheus.NewRegistry()
	other, err := collector.New(collector.Config{BatchAge: 20 * time.Millisecond}, p.JS, p.Config, p.Placement, map[string]*chstore.Store{"default": p.Store}, zerolog.Nop(), reg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- other.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	const n = 200
	for i := range n {
		m := nats.NewMsg("tenant.acme.billing._audit")
		m.Header.Set("Tenant-Id", "acme")
		m.Data = []byte(fmt.Sprintf(`{"actor":{"type":"user","id":"u%d"},"action":"invoice.paid","outcome":"success"}`, i))
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'") == n
	}, 60*time.Second, 100*time.Millisecond)
	require.Equal(t, uint64(n), p.Count(t, "SELECT max(seq) FROM audit_records WHERE tenant_id = 'acme'"))
	rep, err := auditlog.Verify(context.Background(), p.Store, "acme", 1, p.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
}

// Residency and retention at ingest: a message that names another region is
// dead-lettered and never stored; a stored row carries its tenant's policy.
func TestWrongRegionIsRefusedAndPoliciesAreWritten(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx := context.Background()
	require.NoError(t, p.Store.Exec(ctx, "INSERT INTO retention_policies (tenant_id, signal, days, version, updated_by) VALUES ('acme', 'events', 7, 1, 'test')"))
	require.NoError(t, p.Retention.Load(ctx))
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	for _, region := range []string{"us", "default", ""} {
		msg := nats.NewMsg("tenant.acme.crm.contact_created")
		msg.Header.Set("Tenant-Id", "acme")
		if region != "" {
			msg.Header.Set(collector.RegionHeader, region)
		}
		msg.Data = []byte(`{"actor":"u1","region":"` + region + `"}`)
		_, err := js.PublishMsg(ctx, msg)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") == 2 }, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, p.Count(t, "SELECT count() FROM events WHERE JSONExtractString(payload, 'region') = 'us'"), "the us message is not stored")
	require.EqualValues(t, 2, p.Count(t, "SELECT count() FROM events WHERE retention_days = 7"), "rows carry the tenant's policy")
	stream, err := p.JS.Stream(ctx, natsbus.DeadLetterStream)
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(ctx, "deadletter.acme.wrong_region")
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"region":"us"`)
}
