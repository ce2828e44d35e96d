package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/metering"
	"github.com/tenantscope/tenantscope/placement"
)

// records decodes what the fixture's publisher received.
func records(t *testing.T, f *fixture) []auditlog.Record {
	var out []auditlog.Record
	for _, a := range f.audited {
		tenant, body, _ := strings.Cut(a, " ")
		var r auditlog.Record
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		require.Equal(t, tenant, r.TenantID)
		out = append(out, r)
	}
	return out
}

// A flood of failed sign-ins: 429 with Retry-After after a few, two records
// in the platform chain for the burst (not one per attempt, not in acme's
// chain), and the right password works once the wait is over.
func TestSignInFloodIsThrottledAndSummarized(t *testing.T) {
	f := start(t)
	clk := identitytest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	f.ui.Now = clk.Now

	codes := map[int]int{}
	for range 50 {
		_, code, _ := signIn(t, f, "alice", "wrong")
		codes[code]++
	}
	require.Equal(t, map[int]int{401: 5, 429: 45}, codes, "5 failures, then alice must wait")
	retry := lastRetryAfter(t, f, "alice", "pw-alice")
	secs, err := strconv.Atoi(retry)
	require.NoError(t, err, "Retry-After: %q", retry)
	require.Positive(t, secs)

	recs := records(t, f)
	require.Len(t, recs, 1, "only the first failure is recorded at once")
	require.Equal(t, config.PlatformTenant, recs[0].TenantID, "failures go to the platform chain, not acme's")
	require.Equal(t, "ui.sign_in", recs[0].Action)
	require.Equal(t, "failure", recs[0].Outcome)
	require.Equal(t, "alice", recs[0].Actor.ID)

	// After the wait, the right password works; the burst is summarized.
	clk.Add(time.Duration(secs) * time.Second)
	_, code, doc := signIn(t, f, "alice", "pw-alice")
	require.Equal(t, 200, code)
	require.Contains(t, doc.Find(`[data-testid="whoami"]`).Text(), "alice")
	recs = records(t, f)
	require.Len(t, recs, 3, "first failure, summary, success")
	sum := recs[1]
	require.Equal(t, config.PlatformTenant, sum.TenantID)
	require.Equal(t, "ui.sign_in_summary", sum.Action)
	require.Equal(t, "5", sum.Metadata["failures"])
	require.Equal(t, "46", sum.Metadata["refused"], "45 refused wrong passwords and the refused right one")
	require.Equal(t, "127.0.0.1", sum.Metadata["addresses"])
	require.Contains(t, sum.Reason, "5 failed sign-ins")
	require.Equal(t, "acme", recs[2].TenantID)
	require.Equal(t, "success", recs[2].Outcome)
}

// A burst still being counted is summarized by Flush (at shutdown), not
// lost: the summary of the failures since the first record reaches the
// platform chain, and a second Flush has nothing to add.
func TestSignInBurstIsSummarizedOnFlush(t *testing.T) {
	f := start(t)
	for range 3 {
		_, code, _ := signIn(t, f, "alice", "wrong")
		require.Equal(t, http.StatusUnauthorized, code)
	}
	require.Len(t, records(t, f), 1, "only the first failure is recorded at once")
	f.ui.Flush()
	recs := records(t, f)
	require.Len(t, recs, 2, "the first failure and the summary")
	sum := recs[1]
	require.Equal(t, config.PlatformTenant, sum.TenantID)
	require.Equal(t, "ui.sign_in_summary", sum.Action)
	require.Equal(t, "alice", sum.Target.ID)
	require.Equal(t, "3", sum.Metadata["failures"])
	require.Equal(t, "summary, ended", sum.Metadata["burst"])
	f.ui.Flush()
	require.Len(t, records(t, f), 2)
}

// lastRetryAfter tries user's password once more and returns the 429's
// Retry-After.
func lastRetryAfter(t *testing.T, f *fixture, user, password string) string {
	c := client()
	_, doc := page(t, c, "GET", f.url+"/ui/login", nil)
	csrf, _ := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	res, err := c.PostForm(f.url+"/ui/login", url.Values{"csrf": {csrf}, "username": {user}, "password": {password}})
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode, "while alice waits, even the right password is refused")
	return res.Header.Get("Retry-After")
}

// Many user names from one address: the address waits too.
func TestSignInSprayFromOneAddressIsThrottled(t *testing.T) {
	f := start(t)
	clk := identitytest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	f.ui.Now = clk.Now
	codes := map[int]int{}
	for i := range 40 {
		_, code, _ := signIn(t, f, fmt.Sprint("user-", i), "guess")
		codes[code]++
	}
	require.Equal(t, map[int]int{401: 20, 429: 20}, codes)
	require.Len(t, records(t, f), 20, "one record per name tried, none for the refused")
}

// A huge user name is refused with the body limit; a long one is clipped in
// the record and the log, never stored whole.
func TestSignInLongUserNames(t *testing.T) {
	f := start(t)
	huge := strings.Repeat("A", 500<<10)
	_, code, _ := signIn(t, f, huge, "x")
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	long := strings.Repeat("b", 3000) + "\x00\n"
	_, code, _ = signIn(t, f, long, "x")
	require.Equal(t, http.StatusUnauthorized, code)
	recs := records(t, f)
	require.Len(t, recs, 1)
	require.LessOrEqual(t, len(recs[0].Actor.ID), 256)
	require.True(t, strings.HasSuffix(recs[0].Actor.ID, "…"))
	for _, a := range f.audited {
		require.Less(t, len(a), 4096, "no record carries the whole name")
	}
}

// UI pages are billed as ui_requests to the signed-in user's tenant only:
// not to the path's tenant for anonymous visitors (sent to sign in) or for
// a compliance officer reading it.
func TestUIRequestsAreBilledToTheSignedInTenant(t *testing.T) {
	f := start(t)
	svc := metering.New(f.cfg, placement.New(), map[string]*chstore.Store{"default": f.st}, nil, zerolog.Nop())
	q := metering.NewRequests(svc)
	mux := http.NewServeMux()
	f.ui.Register(mux)
	srv := httptest.NewServer(q.Middleware(mux))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	for range 50 {
		res, err := http.Get(srv.URL + "/ui/tenants/acme/audit")
		require.NoError(t, err)
		res.Body.Close()
	}
	alice, _, _ := signIn(t, f, "alice", "pw-alice")
	carol, _, _ := signIn(t, f, "carol", "pw-carol")
	for range 2 {
		code, _ := page(t, alice, "GET", srv.URL+"/ui/tenants/acme/audit", nil)
		require.Equal(t, 200, code)
		code, _ = page(t, carol, "GET", srv.URL+"/ui/tenants/acme/audit", nil)
		require.Equal(t, 200, code)
	}
	code, _ := page(t, alice, "GET", srv.URL+"/ui/tenants/globex/audit", nil)
	require.Equal(t, 403, code)
	require.NoError(t, q.Flush(context.Background()))
	usage, err := svc.UsageByTenant(context.Background(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 2, usage["acme"]["ui_requests"].IntPart())
	require.EqualValues(t, 0, usage["globex"]["ui_requests"].IntPart())
}
