package identity

import (
	"container/list"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// ThrottleConfig bounds failed attempts per key (a user name, a client
// address). Zero fields take the defaults named.
type ThrottleConfig struct {
	// Free is how many attempts a key may make before it must wait (5).
	Free int
	// Base is the first wait (1 s); each further attempt doubles it, up to
	// Max (15 min).
	Base, Max time.Duration
	// Window: a key quiet this long is forgotten (its backoff ends) and its
	// burst summarized; a burst still going after Window since its last
	// record gets an interim summary (1 h). At least Max.
	Window time.Duration
	// MaxKeys bounds memory: the least recently seen key is forgotten (and
	// summarized) first (10,000).
	MaxKeys int
	// Now is the clock (time.Now).
	Now func() time.Time
	// Report receives the first failure of each burst and its summaries,
	// outside the throttle's lock (nil: nothing is reported).
	Report func(Burst)
}

func (c ThrottleConfig) withDefaults() ThrottleConfig {
	if c.Free <= 0 {
		c.Free = 5
	}
	if c.Base <= 0 {
		c.Base = time.Second
	}
	if c.Max <= 0 {
		c.Max = 15 * time.Minute
	}
	if c.Window <= 0 {
		c.Window = time.Hour
	}
	if c.Window < c.Max {
		c.Window = c.Max
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = 10_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Attempt is who tried.
type Attempt struct {
	Addr, UserAgent string
}

// Burst is what a throttle reports of a key's failures: the first one, then
// summaries (cumulative since From).
type Burst struct {
	Key string
	// First marks the first failure of the burst; otherwise it is a summary.
	First bool
	// Ended: the key was forgotten (quiet for the window, a success,
	// memory bound or shutdown); otherwise the burst goes on.
	Ended bool
	// Failures counted from From to To (the first and last failure).
	Failures int
	From, To time.Time
	// Refused counts attempts answered "wait" (429).
	Refused int
	// Addresses are the distinct client addresses seen (at most
	// maxAddrs; MoreAddresses counts the others).
	Addresses     []string
	MoreAddresses int
	// UserAgent is the first failure's (clipped).
	UserAgent string
	// LockedUntil is when the key may try again (zero: it may now).
	LockedUntil time.Time
}

const maxAddrs = 16

// Throttle counts failed attempts per key with exponential backoff. Its
// memory is bounded (MaxKeys, least recently seen forgotten first) and swept
// lazily on each call: no goroutine. Flush reports what is still open (at
// shutdown).
type Throttle struct {
	cfg  ThrottleConfig
	mu   sync.Mutex
	keys map[string]*entry
	lru  *list.List // of *entry, least recently seen first
}

type entry struct {
	key      string
	attempts int       // begun and not taken back: drives the wait
	until    time.Time // must wait until
	// before is until as it was before the latest attempt armed it, for
	// Undo: an attempt that did not fail must not make the next one wait.
	before time.Time
	seen   time.Time // last attempt or refusal

	failures, refused int
	from, to          time.Time
	addrs             []string
	moreAddrs         int
	userAgent         string
	reported          time.Time // last record of this burst (zero: none)
	repFailures       int
	repRefused        int
	elem              *list.Element
}

// NewThrottle builds a throttle.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	return &Throttle{cfg: cfg.withDefaults(), keys: map[string]*entry{}, lru: list.New()}
}

// Begin asks whether key may try now. If it must wait, the refusal is
// counted and the wait returned. Otherwise the attempt counts towards the
// backoff at once (so parallel attempts cannot outrun it) until Undo takes
// it back or Forget clears the key; Fail records it as a failure.
func (t *Throttle) Begin(key string, a Attempt) time.Duration {
	key = Clip(key)
	var out []Burst
	defer func() { t.report(out) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	out = t.sweep(now)
	e, evicted := t.get(key, now)
	out = append(out, evicted...)
	e.seen = now
	t.lru.MoveToBack(e.elem)
	if now.Before(e.until) {
		e.refused++
		e.addAddr(a.Addr)
		out = append(out, t.interim(e, now)...)
		return e.until.Sub(now)
	}
	e.attempts++
	e.before = e.until
	if e.attempts >= t.cfg.Free {
		wait := t.cfg.Max
		if n := e.attempts - t.cfg.Free; n < 30 && t.cfg.Base<<n < t.cfg.Max {
			wait = t.cfg.Base << n
		}
		e.until = now.Add(wait)
	}
	return 0
}

// Fail records a failed attempt (begun with Begin): the first of a burst is
// reported at once.
func (t *Throttle) Fail(key string, a Attempt) {
	key = Clip(key)
	var out []Burst
	defer func() { t.report(out) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	e, evicted := t.get(key, now)
	out = append(out, evicted...)
	e.seen = now
	t.lru.MoveToBack(e.elem)
	e.failures++
	if e.from.IsZero() {
		e.from = now
		e.userAgent = clipTo(a.UserAgent, 256)
	}
	e.to = now
	e.addAddr(a.Addr)
	if e.reported.IsZero() {
		b := e.burst(true, false)
		e.reported, e.repFailures, e.repRefused = now, e.failures, e.refused
		out = append(out, b)
		return
	}
	out = append(out, t.interim(e, now)...)
}

// Undo takes back an attempt begun with Begin that did not fail (a right
// password from an address: the address keeps its other failures).
func (t *Throttle) Undo(key string) {
	key = Clip(key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.keys[key]; ok && e.attempts > 0 {
		e.attempts--
		e.until = e.before
	}
}

// Forget clears key after a success (a user who signed in): its backoff
// ends and its burst, if any, is summarized.
func (t *Throttle) Forget(key string) {
	key = Clip(key)
	var out []Burst
	defer func() { t.report(out) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.keys[key]; ok {
		out = append(out, t.remove(e)...)
	}
}

// Flush summarizes and forgets every key (at shutdown).
func (t *Throttle) Flush() {
	var out []Burst
	defer func() { t.report(out) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.lru.Len() > 0 {
		out = append(out, t.remove(t.lru.Front().Value.(*entry))...) //nolint:forcetypeassert // only *entry is stored
	}
}

// Len is how many keys are remembered.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

func (t *Throttle) report(bursts []Burst) {
	if t.cfg.Report == nil {
		return
	}
	for _, b := range bursts {
		t.cfg.Report(b)
	}
}

// get finds or adds key, forgetting the least recently seen key when full.
func (t *Throttle) get(key string, now time.Time) (*entry, []Burst) {
	if e, ok := t.keys[key]; ok {
		return e, nil
	}
	var out []Burst
	for len(t.keys) >= t.cfg.MaxKeys {
		out = append(out, t.remove(t.lru.Front().Value.(*entry))...) //nolint:forcetypeassert // only *entry is stored
	}
	e := &entry{key: key, seen: now}
	e.elem = t.lru.PushBack(e)
	t.keys[key] = e
	return e, out
}

// sweep forgets the keys quiet for the window (they are at the front). A
// key's wait ends at most Max after its last attempt, and Window ≥ Max.
func (t *Throttle) sweep(now time.Time) []Burst {
	var out []Burst
	for t.lru.Len() > 0 {
		e := t.lru.Front().Value.(*entry) //nolint:forcetypeassert // only *entry is stored
		if now.Sub(e.seen) < t.cfg.Window || now.Before(e.until) {
			break
		}
		out = append(out, t.remove(e)...)
	}
	return out
}

// remove forgets e, with a last summary when there is news since its last
// record.
func (t *Throttle) remove(e *entry) []Burst {
	t.lru.Remove(e.elem)
	delete(t.keys, e.key)
	if e.reported.IsZero() || (e.failures == e.repFailures && e.refused == e.repRefused) {
		return nil
	}
	return []Burst{e.burst(false, true)}
}

// interim summarizes a burst that has gone on for the window since its last
// record.
func (t *Throttle) interim(e *entry, now time.Time) []Burst {
	if e.reported.IsZero() || now.Sub(e.reported) < t.cfg.Window || (e.failures == e.repFailures && e.refused == e.repRefused) {
		return nil
	}
	e.reported, e.repFailures, e.repRefused = now, e.failures, e.refused
	return []Burst{e.burst(false, false)}
}

func (e *entry) addAddr(a string) {
	if a == "" {
		return
	}
	for _, x := range e.addrs {
		if x == a {
			return
		}
	}
	if len(e.addrs) >= maxAddrs {
		e.moreAddrs++
		return
	}
	e.addrs = append(e.addrs, clipTo(a, 64))
}

func (e *entry) burst(first, ended bool) Burst {
	b := Burst{Key: e.key, First: first, Ended: ended, Failures: e.failures, From: e.from, To: e.to, Refused: e.refused,
		Addresses: append([]string(nil), e.addrs...), MoreAddresses: e.moreAddrs, UserAgent: e.userAgent}
	if e.until.After(e.seen) {
		b.LockedUntil = e.until
	}
	return b
}

// Reason says what b counts, for a record or a log line.
func (b Burst) Reason(what string) string {
	if b.First {
		return "first failed " + what + " of a burst; further failures are summarized"
	}
	s := fmt.Sprintf("%d failed %s from %s to %s", b.Failures, what, b.From.UTC().Format(time.RFC3339), b.To.UTC().Format(time.RFC3339))
	if b.Refused > 0 {
		s += fmt.Sprintf(", %d more refused while waiting (429)", b.Refused)
	}
	if b.Ended {
		return s + "; burst ended"
	}
	return s + "; still going"
}

// Metadata is b's counts as record metadata.
func (b Burst) Metadata() map[string]string {
	m := map[string]string{"burst": "summary", "failures": strconv.Itoa(b.Failures), "refused": strconv.Itoa(b.Refused),
		"from": b.From.UTC().Format(time.RFC3339Nano), "to": b.To.UTC().Format(time.RFC3339Nano), "addresses": strings.Join(b.Addresses, " ")}
	if b.First {
		m["burst"] = "first"
	}
	if b.Ended {
		m["burst"] = "summary, ended"
	}
	if b.MoreAddresses > 0 {
		m["more_addresses"] = strconv.Itoa(b.MoreAddresses)
	}
	if !b.LockedUntil.IsZero() {
		m["locked_until"] = b.LockedUntil.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// MaxName is the longest user name (bytes) accepted and recorded.
const MaxName = 256

// ValidName reports whether a user name is at most MaxName bytes of
// printable UTF-8.
func ValidName(s string) bool {
	if s == "" || len(s) > MaxName || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Clip is s made safe to record or log: invalid UTF-8 and unprintable runes
// become U+FFFD, and it is cut to at most MaxName bytes (ending in "…" when
// cut).
func Clip(s string) string { return clipTo(s, MaxName) }

func clipTo(s string, limit int) string {
	if len(s) <= limit && ValidName(s) {
		return s
	}
	var b strings.Builder
	cut := false
	for i, r := range s {
		if i > 4*limit { // enough read; the rest is cut anyway
			cut = true
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > limit-len("…") {
			cut = true
			break
		}
		b.WriteRune(r)
	}
	if cut {
		b.WriteString("…")
	}
	return b.String()
}

// ClientAddr is the throttling key of r's client: its IPv4 address, or the
// /64 of its IPv6 address (one host usually holds a whole /64). The
// connection's address is used: no forwarding header is trusted.
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return clipTo(host, 64)
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// ErrTooManyAttempts is the sentinel of a throttled caller; the error is a
// *WaitError saying how long.
var ErrTooManyAttempts = errors.New("too many failed attempts")

// WaitError is a throttled attempt: try again after Wait.
type WaitError struct{ Wait time.Duration }

func (e *WaitError) Error() string {
	return fmt.Sprintf("too many failed attempts: try again in %d s", RetryAfter(e.Wait))
}

// Unwrap makes errors.Is(err, ErrTooManyAttempts) hold.
func (e *WaitError) Unwrap() error { return ErrTooManyAttempts }

// RetryAfter is the Retry-After value (whole seconds, at least 1) of wait.
func RetryAfter(wait time.Duration) int {
	s := int((wait + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}
