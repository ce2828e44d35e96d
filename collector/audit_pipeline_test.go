package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/natsbus"
)

// Hostile audit records from a tenant's service are dead-lettered with their
// reason and never reach the chain; a good one records who submitted it; the
// suite's own records (its credentials, its subject) keep their identity;
// the chain verifies.
func TestHostileAuditRecordsAreDeadLetteredAndTheChainVerifies(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx := context.Background()
	tenant, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	publish := func(js jetstream.JetStream, subject, body string) {
		m := nats.NewMsg(subject)
		m.Header.Set("Tenant-Id", "acme")
		m.Data = []byte(body)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	publish(tenant, "tenant.acme.billing._audit", `{"time":"2299-12-31T00:00:00Z","actor":{"type":"user","id":"u"},"action":"invoice.paid","outcome":"success"}`)
	publish(tenant, "tenant.acme.billing._audit", `{"time":"2020-01-01T00:00:00Z","actor":{"type":"system","id":"configuration"},"action":"api_key.revoked","outcome":"success","source_service":"tenantscope"}`)
	publish(tenant, "tenant.acme.billing._audit", `{"actor":{"type":"user","id":"u"},"action":"invoice.paid","outcome":"success"}`)
	publish(p.JS, "tenant.acme.tenantscope._audit", `{"actor":{"type":"system","id":"purge-scheduler"},"action":"retention.purged","outcome":"success","source_service":"tenantscope-retention"}`)

	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'") == 2
	}, 30*time.Second, 50*time.Millisecond)
	stream, err := p.JS.Stream(ctx, natsbus.DeadLetterStream)
	require.NoError(t, err)
	for _, subject := range []string{"deadletter.acme.invalid_field", "deadletter.acme.reserved_identity"} {
		require.Eventually(t, func() bool {
			_, err := stream.GetLastMsgForSubject(ctx, subject)
			return err == nil
		}, 10*time.Second, 50*time.Millisecond, subject)
	}
	recs, _, err := auditlog.Load(ctx, p.Store, "acme")
	require.NoError(t, err)
	who := map[string]string{}
	for _, r := range recs {
		who[r.Action] = r.Metadata["submitted_by"]
	}
	require.Equal(t, map[string]string{"invoice.paid": "nats:acme-svc", "retention.purged": "tenantscope"}, who)
	rep, err := auditlog.Verify(ctx, p.Store, "acme", 1, p.AuditVerifierKey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problem)
}
