package suite_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/identitytest"
)

// Failed sign-ins and wrong API keys are recorded as the first failure of a
// burst and later summaries; a summary is written at a later attempt or
// after an hour's quiet. A burst still being counted when the suite stops
// is summarized at shutdown and reaches the platform chain (chained after
// the restart). Before: both summaries were lost, the chain kept only the
// first failures.
func TestFailureSummariesSurviveShutdown(t *testing.T) {
	e := newEnv(t)
	cmd := e.start(t)
	web := "http://" + e.httpAddr

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	res, err := c.Get(web + "/ui/login")
	require.NoError(t, err)
	doc, err := goquery.NewDocumentFromReader(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	csrf, _ := doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	for range 3 {
		res, err := c.PostForm(web+"/ui/login", url.Values{"csrf": {csrf}, "username": {"mallory"}, "password": {"guess"}})
		require.NoError(t, err)
		require.Equal(t, http.StatusUnauthorized, res.StatusCode)
		doc, err := goquery.NewDocumentFromReader(res.Body) // the form again, with a fresh CSRF token
		res.Body.Close()
		require.NoError(t, err)
		csrf, _ = doc.Find(`[data-testid="login-form"] input[name="csrf"]`).Attr("value")
	}
	for range 4 {
		status, _, _ := identitytest.Call(t, "GET", web+"/api/v1/tenants/acme/audit-events", "not-a-key", "")
		require.Equal(t, http.StatusUnauthorized, status)
	}
	platform := func(action string, where ...string) uint64 {
		q := "SELECT count() FROM audit_records FINAL WHERE tenant_id = '_platform' AND action = '" + action + "'"
		for _, w := range where {
			q += " AND " + w
		}
		return e.count(t, "ts_eu", q)
	}
	require.Eventually(t, func() bool {
		return platform("ui.sign_in") == 1 && platform("api.key_rejected") == 1
	}, 30*time.Second, 200*time.Millisecond, "the first failure of each burst is recorded at once")
	require.Zero(t, platform("ui.sign_in_summary"))
	require.Zero(t, platform("api.key_rejected_summary"))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "serve exits cleanly on SIGTERM")
	e.start(t)
	require.Eventually(t, func() bool {
		return platform("ui.sign_in_summary") == 1 && platform("api.key_rejected_summary") == 1
	}, 60*time.Second, 250*time.Millisecond, "each burst's summary reached the platform chain")
	require.EqualValues(t, 1, platform("ui.sign_in_summary", "target_id = 'mallory'", "metadata['failures'] = '3'", "metadata['burst'] = 'summary, ended'"))
	require.EqualValues(t, 1, platform("api.key_rejected_summary", "metadata['failures'] = '4'", "metadata['burst'] = 'summary, ended'"))
}
