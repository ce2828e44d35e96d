package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/collectortest"
)

// The suite's own audit subject is closed to tenants: a tenant's service
// user that publishes there (to pose as the suite) is refused by NATS, and
// nothing reaches the chain.
func TestTenantsCannotPublishOnTheSuitesAuditSubject(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tenant, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	m := nats.NewMsg("tenant.acme.tenantscope._audit")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = []byte(`{"actor":{"type":"system","id":"configuration"},"action":"api_key.revoked","outcome":"success"}`)
	_, err = tenant.PublishMsg(ctx, m)
	require.Error(t, err, "a tenant published on the suite's own audit subject")
	// A record the suite publishes there in the meantime is chained; the
	// tenant's never is.
	m = nats.NewMsg("tenant.acme.tenantscope._audit")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = []byte(`{"actor":{"type":"system","id":"purge-scheduler"},"action":"retention.purged","outcome":"success"}`)
	_, err = p.JS.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme'") >= 1
	}, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, p.Count(t, "SELECT count() FROM audit_records FINAL WHERE tenant_id = 'acme' AND action = 'api_key.revoked'"))
}
