package auditlog_test

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// Every CSV cell that a spreadsheet would run as a formula is neutralized
// with a leading apostrophe (OWASP): fields posted through the API and a
// refused caller's User-Agent alike.
func TestTrailCSVNeutralizesFormulas(t *testing.T) {
	c := newChain(t, 0, 100)
	srv := apiServer(t, c)
	base := srv + "/api/v1/tenants/acme/audit-events"
	const link = `=HYPERLINK("http://evil.example/x","open")`
	body, err := json.Marshal(map[string]any{
		"actor":   map[string]string{"type": "user", "id": "@SUM(1+1)", "name": "+cmd|' /C calc'!A0", "user_agent": link},
		"action":  "-2+3+cmd|' /C calc'!A0",
		"target":  map[string]string{"type": "\t=1+1", "id": "\r=1+1"},
		"outcome": "success", "reason": link,
	})
	require.NoError(t, err)
	code, out := post(t, base, "admin", "csv-1", string(body))
	require.Equal(t, http.StatusAccepted, code, out)
	// A refused call (acme's viewer may not write) with a formula as its User-Agent.
	req, err := http.NewRequest("POST", base, strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer viewer")
	req.Header.Set("User-Agent", link)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode)

	status, b, _ := identitytest.Call(t, "GET", base+"/export?format=csv&sort=seq", "compliance", "")
	require.Equal(t, 200, status, string(b))
	rows, err := csv.NewReader(strings.NewReader(string(b))).ReadAll()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(rows), 2)
	header := rows[0]
	agents := 0
	for _, r := range rows[1:] {
		for i, cell := range r {
			if cell != "" {
				require.NotContains(t, "=+-@\t\r", cell[:1], "column %s: %q is a live formula", header[i], cell)
			}
			if header[i] == "user_agent" && cell == "'"+link {
				agents++
			}
		}
	}
	require.Equal(t, 2, agents, "the posted record's and the refused caller's user agents, neutralized")
}
