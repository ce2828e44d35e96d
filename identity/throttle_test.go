package identity_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/identitytest"
)

type bursts struct {
	mu  sync.Mutex
	got []identity.Burst
}

func (b *bursts) add(x identity.Burst) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, x)
}

func (b *bursts) all() []identity.Burst {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]identity.Burst(nil), b.got...)
}

// A flood of wrong API keys from one address: 429 with Retry-After after a
// few, two records for the burst (the first and a summary), and the right
// key works once the wait is over.
func TestWrongAPIKeysAreThrottledAndSummarized(t *testing.T) {
	cfg := config.Default()
	cfg.APIKeys = []config.APIKey{{Name: "acme-admin", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("right-key")}}
	keys := identity.NewKeys(cfg)
	clk := identitytest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	var rep bursts
	keys.Now, keys.OnFailures = clk.Now, rep.add
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/tenants/{tenantId}/things", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := keys.Require(w, r, identity.ReadAudit, nil); ok {
			w.WriteHeader(http.StatusOK)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	url := srv.URL + "/api/v1/tenants/acme/things"

	// A call without any key is 401 and not counted.
	for range 20 {
		status, _, _ := identitytest.Call(t, "GET", url, "", "")
		require.Equal(t, 401, status)
	}
	codes := map[int]int{}
	var retry string
	long := strings.Repeat("k", 500<<10) // a 500 KB key is only hashed, never kept
	for i := range 50 {
		key := fmt.Sprintf("wrong-%d", i)
		if i == 7 {
			key = long
		}
		status, body, h := identitytest.Call(t, "GET", url, key, "")
		codes[status]++
		if status == 429 {
			retry = h.Get("Retry-After")
			require.Contains(t, string(body), "too_many_attempts")
		}
	}
	require.Equal(t, 10, codes[401], "the first 10 wrong keys are answered 401: %v", codes)
	require.Equal(t, 40, codes[429], "then the address waits: %v", codes)
	secs, err := strconv.Atoi(retry)
	require.NoError(t, err)
	require.Positive(t, secs)
	status, _, _ := identitytest.Call(t, "GET", url, "right-key", "")
	require.Equal(t, 429, status, "while the address waits, even the right key is refused")

	got := rep.all()
	require.Len(t, got, 1, "only the first failure is recorded at once")
	require.True(t, got[0].First)
	require.Equal(t, "127.0.0.1", got[0].Key)

	clk.Add(time.Duration(secs) * time.Second)
	status, _, _ = identitytest.Call(t, "GET", url, "right-key", "")
	require.Equal(t, 200, status, "the right key works after the wait")

	// After an hour's quiet the burst is summarized (on the next call).
	clk.Add(time.Hour + time.Second)
	status, _, _ = identitytest.Call(t, "GET", url, "right-key", "")
	require.Equal(t, 200, status)
	got = rep.all()
	require.Len(t, got, 2, "the first failure and one summary for 50 attempts: %+v", got)
	s := got[1]
	require.False(t, s.First)
	require.True(t, s.Ended)
	require.Equal(t, 10, s.Failures)
	require.Equal(t, 41, s.Refused)
	require.Equal(t, []string{"127.0.0.1"}, s.Addresses)
	for _, b := range got {
		rec := auditlog.FailureRecord(b, auditlog.KeyFailures)
		require.NoError(t, rec.Validate())
		require.Equal(t, config.PlatformTenant, rec.TenantID, "recorded in the platform chain")
		for k, v := range b.Metadata() {
			require.NotContains(t, v, "wrong-", k)
			require.Less(t, len(v), 1024, k)
		}
	}
}

func TestThrottle(t *testing.T) {
	start := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	at := identity.Attempt{Addr: "192.0.2.1", UserAgent: "=HYPERLINK(\"x\")\x00"}
	t.Run("backoff doubles up to the maximum", func(t *testing.T) {
		clk := identitytest.NewClock(start)
		th := identity.NewThrottle(identity.ThrottleConfig{Free: 3, Base: time.Second, Max: 10 * time.Second, Now: clk.Now})
		var waits []time.Duration
		for range 8 {
			for {
				w := th.Begin("alice", at)
				if w == 0 {
					break
				}
				waits = append(waits, w)
				clk.Add(w)
			}
			th.Fail("alice", at)
		}
		require.Equal(t, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second}, waits)
	})
	t.Run("a success forgets the user and summarizes", func(t *testing.T) {
		clk := identitytest.NewClock(start)
		var rep bursts
		th := identity.NewThrottle(identity.ThrottleConfig{Free: 3, Now: clk.Now, Report: rep.add})
		for range 3 {
			require.Zero(t, th.Begin("alice", at))
			th.Fail("alice", at)
		}
		require.NotZero(t, th.Begin("alice", at))
		clk.Add(time.Minute)
		require.Zero(t, th.Begin("alice", at))
		th.Forget("alice")
		require.Zero(t, th.Len())
		got := rep.all()
		require.Len(t, got, 2)
		require.Equal(t, "=HYPERLINK(\"x\")\uFFFD", got[0].UserAgent, "unprintable runes are replaced")
		require.Equal(t, 3, got[1].Failures)
		require.Equal(t, 1, got[1].Refused)
	})
	t.Run("a burst that goes on is summarized once per window", func(t *testing.T) {
		clk := identitytest.NewClock(start)
		var rep bursts
		th := identity.NewThrottle(identity.ThrottleConfig{Free: 10_000, Window: time.Hour, Now: clk.Now, Report: rep.add})
		for range 3 * 60 * 6 { // every 10 s for 3 hours
			require.Zero(t, th.Begin("alice", at))
			th.Fail("alice", at)
			clk.Add(10 * time.Second)
		}
		got := rep.all()
		require.Len(t, got, 3, "the first, then one summary per hour")
		require.Equal(t, 361, got[1].Failures)
		require.Equal(t, 721, got[2].Failures, "summaries are cumulative")
	})
	t.Run("memory is bounded", func(t *testing.T) {
		clk := identitytest.NewClock(start)
		var rep bursts
		th := identity.NewThrottle(identity.ThrottleConfig{MaxKeys: 100, Now: clk.Now, Report: rep.add})
		for i := range 10_000 {
			key := fmt.Sprint("user-", i)
			require.Zero(t, th.Begin(key, at))
			th.Fail(key, at)
			th.Fail(key, at)
		}
		require.Equal(t, 100, th.Len())
		require.Len(t, rep.all(), 10_000+9_900, "each forgotten key was summarized")
		th.Flush()
		require.Zero(t, th.Len())
		require.Len(t, rep.all(), 20_000)
	})
	t.Run("names and addresses are clipped", func(t *testing.T) {
		long := strings.Repeat("é", 300<<10)
		require.False(t, identity.ValidName(long))
		require.LessOrEqual(t, len(identity.Clip(long)), identity.MaxName)
		require.True(t, strings.HasSuffix(identity.Clip(long), "…"))
		require.Equal(t, "alice", identity.Clip("alice"))
		require.Equal(t, "a\uFFFDb", identity.Clip("a\x00b"))
		require.False(t, identity.ValidName("a\nb"))
		require.False(t, identity.ValidName(""))
		require.True(t, identity.ValidName("Zoë Smith"))
		for addr, want := range map[string]string{"192.0.2.1:5555": "192.0.2.1", "[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64"} {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = addr
			require.Equal(t, want, identity.ClientAddr(r))
		}
	})
}

// Keys.Flush (at shutdown) summarizes a burst of wrong keys still being
// counted, which would otherwise be written only at a later attempt.
func TestKeysFlushSummarizesABurstInProgress(t *testing.T) {
	keys := identity.NewKeys(config.Default())
	var rep bursts
	keys.OnFailures = rep.add
	for range 4 {
		r := httptest.NewRequest("GET", "/api/v1/tenants/acme/things", nil)
		r.Header.Set("Authorization", "Bearer wrong")
		_, err := keys.Authenticate(r)
		require.ErrorIs(t, err, identity.ErrUnauthenticated)
	}
	require.Len(t, rep.all(), 1, "only the first failure is reported at once")
	keys.Flush()
	got := rep.all()
	require.Len(t, got, 2)
	require.True(t, got[1].Ended)
	require.Equal(t, 4, got[1].Failures)
	keys.Flush()
	require.Len(t, rep.all(), 2, "nothing is left to summarize")
	(&identity.Keys{}).Flush() // no throttle: nothing to do
}

// After a burst of wrong keys from an address has waited out its backoff,
// the right key works — and keeps working: a success does not arm a new
// wait (it did, so a guard plus a handler checking the same key locked the
// address out for good).
func TestARightKeyAfterTheBackoffKeepsWorking(t *testing.T) {
	cfg := config.Default()
	cfg.APIKeys = []config.APIKey{{Name: "acme-admin", Role: config.RoleTenantAdmin, Tenant: "acme", KeyHash: config.HashAPIKey("right-key")}}
	keys := identity.NewKeys(cfg)
	clk := identitytest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	keys.Now = clk.Now
	req := func(key string) *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/tenants/acme/things", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		return r
	}
	for i := range 12 {
		_, _ = keys.Authenticate(req(fmt.Sprintf("wrong-%d", i))) //nolint:errcheck // failures wanted
	}
	_, err := keys.Authenticate(req("right-key"))
	require.ErrorIs(t, err, identity.ErrTooManyAttempts, "the address waits")
	clk.Add(time.Minute)
	for i := range 5 {
		_, err := keys.Authenticate(req("right-key"))
		require.NoError(t, err, "right key, call %d after the backoff", i+1)
	}
}
