package ui_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// chromiumPath finds Debian's chromium (scripts/apt-install.sh chromium, run by
// `make test`, installs it when it is missing).
func chromiumPath(t *testing.T) string {
	for _, name := range []string{os.Getenv("TENANTSCOPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("TENANTSCOPE_REQUIRE_BROWSER") != "" {
		t.Fatal("no chromium: run scripts/apt-install.sh chromium (make test does)")
	}
	t.Skip("no chromium on this machine: run scripts/apt-install.sh chromium (make test does, and then requires it)")
	return ""
}

// TestBrowserSignInFilterPageDetailDownload drives the UI in headless
// Chromium and saves a screenshot of every page in the test's artifact
// directory (make test keeps them under test-output/).
func TestBrowserSignInFilterPageDetailDownload(t *testing.T) {
	exe := chromiumPath(t)
	f := start(t)
	shots := t.ArtifactDir()
	downloads := t.TempDir()

	ctx, shot, do, text, taken := openBrowser(t, exe, shots, 30*time.Second)
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		require.NoError(t, err)
		return v
	}

	// follow does a step that loads a page and waits until the browser shows
	// a loaded page whose address contains want.
	follow := func(step chromedp.Action[chromedp.Void], want string) {
		t.Helper()
		do(step)
		for ctx.Err() == nil {
			v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + document.readyState`))
			if err == nil && strings.Contains(v, want) && strings.HasSuffix(v, " complete") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no page with %q was loaded", want)
	}

	// Sign in; the first Tab reaches the skip link (keyboard users).
	do(chromedp.Navigate(f.url+"/ui/login"), chromedp.WaitVisible(`input[name="username"]`))
	shot("sign-in")
	do(chromedp.KeyEvent("\t"))
	require.Equal(t, "Skip to content", eval(`document.activeElement.textContent`))
	do(chromedp.SendKeys(`input[name="username"]`, "carol"), chromedp.SendKeys(`input[name="password"]`, "pw-carol"))
	follow(chromedp.Click(`[data-testid="login-form"] button`), "/ui/")
	do(chromedp.WaitVisible(`[data-testid="tenants"]`))
	shot("home")

	// Open acme's trail, filter it to one action, 25 rows a page, and page.
	follow(chromedp.Click(`a[data-testid="tenant-link"][href="/ui/tenants/acme/audit"]`), "/ui/tenants/acme/audit")
	shot("audit-trail")
	do(chromedp.SetValue(`input[name="action"]`, "acme.thing_done"), chromedp.SetValue(`select[name="limit"]`, "25"))
	follow(chromedp.Click(`[data-testid="filters"] button`), "action=acme.thing_done")
	rows := eval(`[...document.querySelectorAll('[data-testid="action"]')].map(e => e.textContent).join(",")`)
	require.Equal(t, strings.TrimSuffix(strings.Repeat("acme.thing_done,", 25), ","), rows, "25 rows, all of the filtered action")
	require.Equal(t, "30", text(`[data-testid="audit-row"] [data-testid="seq"]`), "the newest matching record first")
	shot("audit-filtered")
	// chromedp's node tree can lag behind a page loaded by a form; the link
	// is followed by the page's own click().
	follow(chromedp.Evaluate[chromedp.Void](`document.querySelector('[data-testid="next-page"]').click()`), "cursor=")
	require.Equal(t, "0", eval(`String(document.querySelectorAll('[data-testid="next-page"]').length)`), "the last page has no next link")
	require.Equal(t, "5", text(`[data-testid="audit-row"] [data-testid="seq"]`), "the second page continues after the first")
	require.Equal(t, "acme.thing_done", eval(`document.querySelector('input[name="action"]').value`), "the filter stays")
	shot("audit-page-2")

	// Open a record's detail.
	do(chromedp.Navigate(f.url + "/ui/tenants/acme/audit?action=role.changed"))
	follow(chromedp.Click(`[data-testid="seq"] a`), "/ui/tenants/acme/audit/31")
	require.Contains(t, text(`[data-testid="changed-keys"]`), "role")
	require.Contains(t, text(`[data-testid="proof-status"]`), "inclusion proof verifies")
	shot("record-detail")

	// Download the filtered trail as CSV.
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true)})
	require.NoError(t, err)
	do(chromedp.Navigate(f.url+"/ui/tenants/acme/audit?action=acme.thing_done"), chromedp.WaitVisible(`[data-testid="download-csv"]`))
	shot("before-download")
	do(chromedp.Click(`[data-testid="download-csv"]`))
	var guid string
	for ev, err := range progress {
		require.NoError(t, err, "the CSV download did not complete")
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
	}
	csv, err := os.ReadFile(filepath.Join(downloads, guid))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	require.Len(t, lines, 31, "a header and the 30 filtered records")
	require.True(t, strings.HasPrefix(lines[0], "seq,record_id,time,"), lines[0])
	for _, l := range lines[1:] {
		require.Contains(t, l, "acme.thing_done")
	}

	// The exports page, and the trail at a phone's width.
	do(chromedp.Navigate(f.url+"/ui/tenants/acme/exports"), chromedp.WaitVisible(`[data-testid="trail-export-form"]`))
	shot("exports")
	do(chromedp.EmulateViewport(390, 844), chromedp.Navigate(f.url+"/ui/tenants/acme/audit"), chromedp.WaitVisible(`[data-testid="audit-table"]`))
	require.Equal(t, "390", eval(`String(document.documentElement.clientWidth)`))
	require.Equal(t, "true", eval(`String(document.documentElement.scrollWidth <= 390)`), "no sideways scrolling of the page on a phone")
	shot("audit-trail-phone")
	entries, err := os.ReadDir(shots)
	require.NoError(t, err)
	require.Len(t, entries, taken())
	t.Logf("%d screenshots in %s", taken(), shots)
}

// openBrowser starts headless Chromium for a test: its context (ended with
// the test, or after timeout), and helpers that take a numbered screenshot
// into dir, run actions, and read an element's text, failing the test on
// any error; taken counts the screenshots.
func openBrowser(t *testing.T, exe, dir string, timeout time.Duration) (ctx context.Context, shot func(string),
	do func(...chromedp.Action[chromedp.Void]), text func(string) string, taken func() int) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelT)
	n := 0
	shot = func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		n++
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-%s.png", n, name)), png, 0o644))
	}
	do = func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx, steps...))
	}
	text = func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		require.NoError(t, err)
		return v
	}
	return ctx, shot, do, text, func() int { return n }
}
