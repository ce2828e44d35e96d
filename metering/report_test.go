package metering_test

import (
	"bytes"
	"encoding/csv"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/metering"
)

// A cost CSV opens in a spreadsheet as text: an adjustment reason (any
// finance user's free text) that is a formula gets a leading apostrophe;
// negative amounts stay numbers.
func TestCostCSVNeutralizesFormulas(t *testing.T) {
	const link = `=HYPERLINK("http://evil.example/x","open")`
	rep := metering.CostReport{Period: "2026-10", Currency: "EUR", RateCard: "v1", Tenants: []metering.TenantCost{{
		Tenant: "acme",
		Lines: []metering.LineItem{
			{Kind: "adjustment", Detail: link, Amount: decimal.RequireFromString("-2.5")},
			{Kind: "adjustment", Detail: "@SUM(A1:A9)", Amount: decimal.RequireFromString("1")},
		},
		Total: decimal.RequireFromString("-1.5"),
	}}}
	var b bytes.Buffer
	require.NoError(t, metering.WriteCost(&b, rep, "csv"))
	rows, err := csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 4)
	require.Equal(t, "'"+link, rows[1][6])
	require.Equal(t, "-2.5000", rows[1][7], "a negative amount is a number, not a formula")
	require.Equal(t, "'@SUM(A1:A9)", rows[2][6])
	require.Equal(t, "-1.5000", rows[3][7])
}
