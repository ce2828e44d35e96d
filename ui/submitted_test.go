package ui_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
)

// The trail and a record's page show who submitted each record.
func TestAuditPagesShowWhoSubmitted(t *testing.T) {
	f := start(t)
	r := auditlog.Record{TenantID: "acme", Actor: auditlog.Actor{Type: "user", ID: "ann"}, Action: "invoice.paid",
		Target: auditlog.Target{Type: "invoice", ID: "i-1"}, Outcome: "success"}
	r.SetSubmittedBy("api_key:billing-bot")
	out, err := f.w.Append(context.Background(), "acme", []auditlog.Record{r})
	require.NoError(t, err)
	c, _, _ := signIn(t, f, "carol", "pw-carol")
	code, doc := page(t, c, "GET", f.url+"/ui/tenants/acme/audit?action=invoice.paid", nil)
	require.Equal(t, 200, code)
	require.Equal(t, 1, doc.Find(`[data-testid="audit-row"]`).Length())
	require.Equal(t, "api_key:billing-bot", strings.TrimSpace(doc.Find(`[data-testid="submitted-by"]`).Text()))
	code, doc = page(t, c, "GET", f.url+"/ui/tenants/acme/audit/"+strings.TrimSpace(doc.Find(`[data-testid="seq"]`).Text()), nil)
	require.Equal(t, 200, code)
	require.Equal(t, "api_key:billing-bot", strings.TrimSpace(doc.Find(`[data-testid="detail-submitted-by"]`).Text()))
	require.Contains(t, doc.Find(`[data-testid="hash-status"]`).Text(), "match the record's hash")
	require.NotZero(t, out[0].Seq)
}
