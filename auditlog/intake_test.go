package auditlog_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// auditRecord is a minimal valid record posted through the API, with extra
// JSON fields spliced in.
func auditRecord(extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return `{"actor":{"type":"user","id":"ann"},"action":"role.granted","target":{"type":"user","id":"bob"},"outcome":"success"` + extra + `}`
}

func errorMessage(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

// A time the column cannot keep (2299 overflows clickhouse-go's UnixNano and
// came back as 1715), or outside the intake window, is refused with 400 and
// the chain keeps verifying.
func TestIntakeRefusesTimesOutsideTheWindow(t *testing.T) {
	c := newChain(t, 2, 100)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events"
	now := time.Now().UTC()
	for i, tm := range []string{"2299-12-31T00:00:00Z", "2262-04-12T00:00:00Z", now.Add(10 * time.Minute).Format(time.RFC3339Nano),
		"1999-12-31T23:59:59Z", "1850-01-01T00:00:00Z"} {
		code, out := post(t, base, "admin", fmt.Sprint("time-", i), auditRecord(fmt.Sprintf(`"time":%q`, tm)))
		if assert.Equal(t, http.StatusBadRequest, code, "time %s: %v", tm, out) {
			assert.Contains(t, errorMessage(out), "time", tm)
		}
	}
	// Inside the window: a minute ahead (clock skew), a year ago, 2000.
	for i, tm := range []string{now.Add(time.Minute).Format(time.RFC3339Nano), now.AddDate(-1, 0, 0).Format(time.RFC3339Nano), "2000-01-01T00:00:00Z"} {
		code, out := post(t, base, "admin", fmt.Sprint("ok-", i), auditRecord(fmt.Sprintf(`"time":%q`, tm)))
		assert.Equal(t, http.StatusAccepted, code, "time %s: %v", tm, out)
	}
	rep := c.check(t)
	require.True(t, rep.OK(), "the chain verifies after the hostile records: %v", rep.Problem)
	require.Equal(t, uint64(5), rep.Records)
}

// Records from outside cannot pose as the suite: its actor types and its
// source_service are refused, as is a submitted_by the caller sets.
func TestIntakeRefusesTheSuitesIdentity(t *testing.T) {
	c := newChain(t, 2, 100)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events"
	for i, body := range []string{
		`{"actor":{"type":"system","id":"purge-scheduler"},"action":"api_key.revoked","outcome":"success"}`,
		`{"actor":{"type":" System ","id":"x"},"action":"api_key.revoked","outcome":"success"}`,
		`{"actor":{"type":"operator","id":"tenantscope-cli"},"action":"export.created","outcome":"success"}`,
		auditRecord(`"source_service":"tenantscope"`),
		auditRecord(`"source_service":"TenantScope-retention"`),
		auditRecord(`"metadata":{"submitted_by":"tenantscope"}`),
	} {
		code, out := post(t, base, "admin", fmt.Sprint("forge-", i), body)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %v", body, out)
	}
	rep := c.check(t)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.Equal(t, uint64(2), rep.Records, "nothing forged was chained")
}

// Ids and names are at most 256 bytes; changes and metadata are capped.
func TestIntakeLimitsFieldLengths(t *testing.T) {
	c := newChain(t, 2, 100)
	base := apiServer(t, c) + "/api/v1/tenants/acme/audit-events"
	long := strings.Repeat("x", 257)
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprint("k", i)] = "v"
	}
	manyJSON, _ := json.Marshal(many)
	big, _ := json.Marshal(map[string]string{"k": strings.Repeat("v", 65<<10)})
	bigChanges, _ := json.Marshal(map[string]any{"after": map[string]string{"note": strings.Repeat("n", 65<<10)}})
	for name, body := range map[string]string{
		"actor id":       `{"actor":{"type":"user","id":"` + long + `"},"action":"a","outcome":"success"}`,
		"actor name":     `{"actor":{"type":"user","id":"a","name":"` + long + `"},"action":"a","outcome":"success"}`,
		"action":         `{"actor":{"type":"user","id":"a"},"action":"` + long + `","outcome":"success"}`,
		"target id":      auditRecord(`"target":{"type":"user","id":"` + long + `"}`),
		"target type":    auditRecord(`"target":{"type":"` + long + `","id":"b"}`),
		"source_service": auditRecord(`"source_service":"` + long + `"`),
		"correlation_id": auditRecord(`"correlation_id":"` + long + `"`),
		"metadata count": auditRecord(`"metadata":` + string(manyJSON)),
		"metadata size":  auditRecord(`"metadata":` + string(big)),
		"changes size":   auditRecord(`"changes":` + string(bigChanges)),
	} {
		code, out := post(t, base, "admin", "len-"+name, body)
		if assert.Equal(t, http.StatusBadRequest, code, "%s: %v", name, out) {
			assert.Regexp(t, `at most|more than`, errorMessage(out), name)
		}
	}
	// At the limits: accepted.
	at := strings.Repeat("y", 256)
	code, out := post(t, base, "admin", "len-ok", `{"actor":{"type":"user","id":"`+at+`","name":"`+at+`"},"action":"`+at+`","target":{"type":"`+at+`","id":"`+at+`"},"outcome":"success"}`)
	require.Equal(t, http.StatusAccepted, code, out)
	rep := c.check(t)
	require.True(t, rep.OK(), "%v", rep.Problem)
	require.Equal(t, uint64(3), rep.Records)
}

// Who submitted a record is chained with it (so verify covers it), shown in
// the trail and in its exports.
func TestSubmittedByIsChainedListedAndExported(t *testing.T) {
	c := newChain(t, 2, 100)
	srv := apiServer(t, c)
	base := srv + "/api/v1/tenants/acme/audit-events"
	code, out := post(t, base, "admin", "who-1", auditRecord(`"metadata":{"ticket":"T-1"}`))
	require.Equal(t, http.StatusAccepted, code, out)

	_, list, _ := get(t, base+"?action=role.granted&fields=seq,submitted_by,metadata", "compliance")
	require.Len(t, list["data"], 1)
	row := list["data"].([]any)[0].(map[string]any)
	require.Equal(t, "api_key:a", row["submitted_by"])
	require.Equal(t, "api_key:a", row["metadata"].(map[string]any)["submitted_by"], "kept in the hashed metadata")

	rec, err := auditlog.Inspect(context.Background(), c.st, "acme", uint64(row["seq"].(float64)), c.verify)
	require.NoError(t, err)
	require.True(t, rec.HashOK)

	status, b, _ := identitytest.Call(t, "GET", base+"/export?format=csv&action=role.granted", "compliance", "")
	require.Equal(t, 200, status, string(b))
	rows, err := csv.NewReader(strings.NewReader(string(b))).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	col := -1
	for i, h := range rows[0] {
		if h == "submitted_by" {
			col = i
		}
	}
	require.NotEqual(t, -1, col, "the CSV has a submitted_by column: %v", rows[0])
	require.Equal(t, "api_key:a", rows[1][col])

	status, b, _ = identitytest.Call(t, "GET", base+"/export?format=jsonl&action=role.granted", "compliance", "")
	require.Equal(t, 200, status)
	var jl map[string]any
	require.NoError(t, json.Unmarshal(b, &jl))
	require.Equal(t, "api_key:a", jl["submitted_by"])
}
