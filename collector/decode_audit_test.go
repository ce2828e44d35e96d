package collector

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A tenant's audit record cannot poison its chain or pose as the suite: a
// time the chain could not keep or outside the window, the suite's actor
// types or source_service, a submitted_by of its own, oversized fields are
// dead-lettered with a reason; who submitted it is recorded.
func TestDecodeAuditRefusesHostileRecords(t *testing.T) {
	m := meta()
	m.Action = "_audit"
	m.Published = time.Now().UTC()
	rec := func(extra string) []byte {
		return []byte(`{"actor":{"type":"user","id":"ann"},"action":"invoice.paid","outcome":"success"` + extra + `}`)
	}
	for body, want := range map[string]Reason{
		`,"time":"2299-12-31T00:00:00Z"`:                                            ReasonInvalidField,
		`,"time":"2262-04-12T00:00:00Z"`:                                            ReasonInvalidField,
		`,"time":"` + m.Published.Add(6*time.Minute).Format(time.RFC3339Nano) + `"`: ReasonInvalidField,
		`,"time":"1999-12-31T23:59:59Z"`:                                            ReasonInvalidField,
		`,"actor":{"type":"system","id":"purge-scheduler"}`:                         "reserved_identity",
		`,"actor":{"type":"Operator","id":"tenantscope-cli"}`:                       "reserved_identity",
		`,"source_service":"tenantscope"`:                                           "reserved_identity",
		`,"source_service":"tenantscope-retention"`:                                 "reserved_identity",
		`,"metadata":{"submitted_by":"api_key:c"}`:                                  "reserved_identity",
		`,"target":{"type":"x","id":"` + strings.Repeat("t", 257) + `"}`:            ReasonInvalidField,
		`,"changes":{"after":{"n":12345678901234567890}}`:                           ReasonInvalidField,
	} {
		_, err := DecodeAudit(m, rec(body))
		require.Error(t, err, body)
		require.Equal(t, want, reason(t, err), body)
	}
	r, err := DecodeAudit(m, rec(`,"time":"`+m.Published.Add(-time.Hour).Format(time.RFC3339Nano)+`"`))
	require.NoError(t, err)
	require.Equal(t, "orders", r.SourceService)
	require.Equal(t, "nats:acme", r.Metadata["submitted_by"])
	// The service token names the subject, not the suite: a tenant's
	// service called tenantscope is not on the suite's own subject...
	m.Service = "tenantscope-billing"
	_, err = DecodeAudit(m, rec(""))
	require.Equal(t, Reason("reserved_identity"), reason(t, err), "source_service defaults to the subject's service")
}

// The suite's own records, on tenant.{t}.tenantscope._audit (which tenants
// cannot publish), keep its identity and the submitted_by it gave them.
func TestDecodeAuditKeepsTheSuitesOwnRecords(t *testing.T) {
	m := meta()
	m.Service, m.Action = "tenantscope", "_audit"
	r, err := DecodeAudit(m, []byte(`{"actor":{"type":"system","id":"purge-scheduler"},"action":"retention.purged","outcome":"success","source_service":"tenantscope-retention"}`))
	require.NoError(t, err)
	require.Equal(t, "system", r.Actor.Type)
	require.Equal(t, "tenantscope", r.Metadata["submitted_by"])
	r, err = DecodeAudit(m, []byte(`{"actor":{"type":"user","id":"ann"},"action":"x","outcome":"success","metadata":{"submitted_by":"api_key:a"}}`))
	require.NoError(t, err)
	require.Equal(t, "api_key:a", r.Metadata["submitted_by"])
	// Still only what the chain can keep.
	_, err = DecodeAudit(m, []byte(fmt.Sprintf(`{"actor":{"type":"system","id":"s"},"action":"x","outcome":"success","time":%q}`, "2299-12-31T00:00:00Z")))
	require.Equal(t, ReasonInvalidField, reason(t, err))
}
