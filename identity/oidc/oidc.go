// Package oidc signs users in through an OpenID Connect provider:
// Authorization Code with PKCE (S256), a state bound to the browser and
// usable once, a nonce, and the ID token checked by go-oidc's verifier
// (issuer, signature, expiry, audience = the client id). A claim of the
// token (config.OIDC.RoleClaim, e.g. groups) is mapped to a role and
// tenant; a user whose values map to none is refused.
//
// The state travels in a short-lived cookie (Begin's Pending, signed with
// the deployment's session key so any UI process can check it and nobody
// can extend it); the first callback with a state marks it used in a NATS
// KV bucket shared by every UI process, so a replayed callback is refused
// even with the cookie. Nothing is stored for a sign-in that is only begun,
// so starting sign-ins fills no store.
package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/sessions"
)

// Bucket keeps the states already used (in the suite's own account).
const Bucket = "TENANTSCOPE_OIDC_STATES"

// PendingTTL is how long a begun sign-in may take at the provider.
const PendingTTL = 10 * time.Minute

// Errors of Begin and Finish. Each refusal leaves no session.
var (
	// ErrUnavailable: the provider's discovery document could not be read.
	ErrUnavailable = errors.New("the identity provider cannot be reached")
	// ErrNoPending: the browser has no (valid, unexpired) begun sign-in.
	ErrNoPending = errors.New("no sign-in was begun in this browser, or it expired")
	// ErrState: the callback's state is not the browser's.
	ErrState = errors.New("the callback's state does not match this browser's sign-in")
	// ErrReplayed: the state was used already.
	ErrReplayed = errors.New("this sign-in response was already used")
	// ErrProvider: the provider answered with an error (the user declined,
	// or the provider refused the client).
	ErrProvider = errors.New("the identity provider did not sign the user in")
	// ErrExchange: the code could not be exchanged for tokens.
	ErrExchange = errors.New("the identity provider did not exchange the code")
	// ErrToken: the ID token is missing or not valid (issuer, signature,
	// expiry, audience, nonce).
	ErrToken = errors.New("the ID token is not valid")
	// ErrAudience: the ID token was issued for another client.
	ErrAudience = fmt.Errorf("%w: issued for another client", ErrToken)
	// ErrNonce: the ID token's nonce is not the one this sign-in sent.
	ErrNonce = fmt.Errorf("%w: nonce mismatch", ErrToken)
	// ErrNoRole: the user's role claim maps to no role.
	ErrNoRole = errors.New("no role is mapped to the user's groups")
	// ErrUser: the token names no usable subject or user name.
	ErrUser = errors.New("the ID token names no usable user")
)

// Identity is a user the provider vouched for, with the role and tenant
// the mapping gives them.
type Identity struct {
	Issuer, Subject string
	// Name is the username claim (else email, else the subject), clipped.
	Name         string
	Role, Tenant string
	// Group is the claim value whose mapping gave the role; Groups are all
	// the user's values that a mapping names, in mapping order (at most
	// sessions.MaxGroups).
	Group  string
	Groups []string
}

// Pending is a begun sign-in, kept in the browser's cookie.
type Pending struct {
	State, Nonce, Verifier string
	Started                time.Time
}

// Client signs users in through one provider.
type Client struct {
	cfg    config.OIDC
	key    []byte
	used   jetstream.KeyValue
	http   *http.Client
	groups map[string]int // mapping index by group

	// Now is the clock (nil: time.Now), for the state's age and the token's
	// expiry.
	Now func() time.Time

	mu       sync.Mutex // guards the discovered provider
	oauth    *oauth2.Config
	verifier *gooidc.IDTokenVerifier
}

// New makes the client. The provider is discovered at the first sign-in
// (so the UI starts while the provider is down). sessionKey (the
// deployment's, hex or raw) signs the state cookie; js holds the bucket of
// used states, shared by every UI process.
func New(ctx context.Context, cfg config.OIDC, js jetstream.JetStream, sessionKey string) (*Client, error) {
	if !cfg.Enabled() {
		return nil, errors.New("oidc: no issuer configured")
	}
	if len(sessionKey) < 16 {
		return nil, errors.New("oidc: the session key is missing or short")
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "tenantscope OIDC sign-in states already used (by hash); kept as long as a state is valid",
		TTL:         PendingTTL + 5*time.Minute, // past a state's life, its cookie is refused anyway
		History:     1,
		MaxBytes:    8 << 20,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("oidc states bucket: %w", err)
	}
	m := hmac.New(sha256.New, []byte(sessionKey))
	m.Write([]byte("tenantscope oidc state v1"))
	c := &Client{cfg: cfg, key: m.Sum(nil), used: kv, http: &http.Client{Timeout: 10 * time.Second}, groups: map[string]int{}}
	for i, mp := range cfg.Mappings {
		c.groups[mp.Group] = i
	}
	return c, nil
}

// Name is the provider's name for the sign-in button.
func (c *Client) Name() string { return c.cfg.DisplayName() }

// Issuer is the configured issuer.
func (c *Client) Issuer() string { return c.cfg.Issuer }

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// provider discovers the provider once; a failure is tried again at the
// next sign-in.
func (c *Client) provider(ctx context.Context) (*oauth2.Config, *gooidc.IDTokenVerifier, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.oauth != nil {
		return c.oauth, c.verifier, nil
	}
	// The key set fetches keys later with the context given here: it must
	// outlive this request (the client's timeout bounds each fetch).
	bg := gooidc.ClientContext(context.WithoutCancel(ctx), c.http)
	p, err := gooidc.NewProvider(bg, c.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	c.oauth = &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: c.cfg.RedirectURL, Scopes: c.cfg.ScopeList()}
	c.verifier = p.VerifierContext(bg, &gooidc.Config{ClientID: c.cfg.ClientID, Now: c.now})
	return c.oauth, c.verifier, nil
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) //nolint:errcheck // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// Begin starts a sign-in: the provider's authorization URL to send the
// browser to, and the cookie value that binds the sign-in to the browser.
func (c *Client) Begin(ctx context.Context) (authURL, cookie string, err error) {
	oc, _, err := c.provider(ctx)
	if err != nil {
		return "", "", err
	}
	p := Pending{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), Started: c.now()}
	authURL = oc.AuthCodeURL(p.State, gooidc.Nonce(p.Nonce), oauth2.S256ChallengeOption(p.Verifier))
	return authURL, c.encode(p), nil
}

// encode is "state.nonce.verifier.unix.mac" (the MAC over the rest).
func (c *Client) encode(p Pending) string {
	body := strings.Join([]string{p.State, p.Nonce, p.Verifier, strconv.FormatInt(p.Started.Unix(), 10)}, ".")
	return body + "." + c.mac(body)
}

func (c *Client) mac(body string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// decode checks the cookie's MAC and age.
func (c *Client) decode(cookie string) (Pending, error) {
	if len(cookie) > 512 {
		return Pending{}, ErrNoPending
	}
	parts := strings.Split(cookie, ".")
	if len(parts) != 5 {
		return Pending{}, ErrNoPending
	}
	body := strings.Join(parts[:4], ".")
	if subtle.ConstantTimeCompare([]byte(c.mac(body)), []byte(parts[4])) != 1 {
		return Pending{}, ErrNoPending
	}
	unix, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return Pending{}, ErrNoPending
	}
	p := Pending{State: parts[0], Nonce: parts[1], Verifier: parts[2], Started: time.Unix(unix, 0)}
	if age := c.now().Sub(p.Started); age > PendingTTL || age < -time.Minute {
		return Pending{}, fmt.Errorf("%w (begun %s ago)", ErrNoPending, age.Truncate(time.Second))
	}
	return p, nil
}

// Finish completes the sign-in the provider sent the browser back with:
// cookie is the browser's Begin cookie, q the callback's query. The
// Identity is filled as far as the token was verified (for the audit of a
// refused user), also when err is ErrNoRole.
func (c *Client) Finish(ctx context.Context, cookie string, q url.Values) (Identity, error) {
	p, err := c.decode(cookie)
	if err != nil {
		return Identity{}, err
	}
	state := q.Get("state")
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(p.State)) != 1 {
		return Identity{}, ErrState
	}
	// The state is used now, whatever follows: a second callback with it
	// (from this browser or one that copied its cookie) is refused.
	sum := sha256.Sum256([]byte(state))
	if _, err := c.used.Create(ctx, "s."+hex.EncodeToString(sum[:]), []byte(strconv.FormatInt(p.Started.Unix(), 10))); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Identity{}, ErrReplayed
		}
		return Identity{}, fmt.Errorf("oidc: mark the state used: %w", err)
	}
	if e := q.Get("error"); e != "" {
		return Identity{}, fmt.Errorf("%w: %s", ErrProvider, identity.Clip(e))
	}
	code := q.Get("code")
	if code == "" {
		return Identity{}, fmt.Errorf("%w: no code", ErrProvider)
	}
	oc, verifier, err := c.provider(ctx)
	if err != nil {
		return Identity{}, err
	}
	tok, err := oc.Exchange(context.WithValue(ctx, oauth2.HTTPClient, c.http), code, oauth2.VerifierOption(p.Verifier))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrExchange, err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return Identity{}, fmt.Errorf("%w: the token response has no id_token", ErrToken)
	}
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		if aud, ok := unverifiedAudience(raw); ok && !slices.Contains(aud, c.cfg.ClientID) {
			return Identity{}, fmt.Errorf("%w (audience %q, not %q): %w", ErrAudience, aud, c.cfg.ClientID, err)
		}
		return Identity{}, fmt.Errorf("%w: %w", ErrToken, err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %w", ErrToken, err)
	}
	// With several audiences, the token must name this client as the
	// party it was issued to (OpenID Connect Core 3.1.3.7).
	azp, _ := claims["azp"].(string) //nolint:errcheck // absent is ""
	if (len(idt.Audience) > 1 || azp != "") && azp != c.cfg.ClientID {
		return Identity{}, fmt.Errorf("%w (authorized party %q, not %q)", ErrAudience, azp, c.cfg.ClientID)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(p.Nonce)) != 1 {
		return Identity{}, ErrNonce
	}
	if len(idt.Subject) > 255 || !identity.ValidName(idt.Subject) {
		return Identity{}, fmt.Errorf("%w: subject", ErrUser)
	}
	id := Identity{Issuer: idt.Issuer, Subject: idt.Subject, Name: c.name(claims, idt.Subject)}
	if !identity.ValidName(id.Name) {
		return Identity{}, fmt.Errorf("%w: name", ErrUser)
	}
	id.Groups = c.mapped(claimValues(claims, c.cfg.ClaimOfRole()))
	var found bool
	id.Role, id.Tenant, id.Group, found = c.Resolve(id.Groups)
	if !found {
		return id, ErrNoRole
	}
	return id, nil
}

// name is the username claim, else email, else the subject.
func (c *Client) name(claims map[string]any, sub string) string {
	for _, k := range []string{c.cfg.ClaimOfName(), "email"} {
		if v, ok := claims[k].(string); ok && strings.TrimSpace(v) != "" {
			return identity.Clip(v)
		}
	}
	return identity.Clip(sub)
}

// claimValues reads the dot path of claims as a list of strings (a string
// is one value).
func claimValues(claims map[string]any, path string) []string {
	var v any = claims
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// mapped keeps the values a mapping names, in mapping order, at most
// sessions.MaxGroups (the first, which decides the role, always kept).
func (c *Client) mapped(values []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range values {
		if _, ok := c.groups[v]; ok && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return c.groups[a] - c.groups[b] })
	if len(out) > sessions.MaxGroups {
		out = out[:sessions.MaxGroups]
	}
	return out
}

// Resolve is the role and tenant the current mapping gives a user with
// groups: the first mapping, in configuration order, whose group they
// have. A session is checked with it at every request, so a changed
// mapping ends sessions it no longer gives the same role.
func (c *Client) Resolve(groups []string) (role, tenant, group string, ok bool) {
	best := -1
	for _, g := range groups {
		if i, found := c.groups[g]; found && (best < 0 || i < best) {
			best = i
		}
	}
	if best < 0 {
		return "", "", "", false
	}
	m := c.cfg.Mappings[best]
	return m.Role, m.Tenant, m.Group, true
}

// unverifiedAudience reads the aud claim of a token that failed
// verification, only to say why it was refused.
func unverifiedAudience(raw string) ([]string, bool) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(parts[1]) > 64<<10 {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, false
	}
	var c struct {
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(b, &c) != nil || len(c.Aud) == 0 {
		return nil, false
	}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}, true
	}
	var many []string
	if json.Unmarshal(c.Aud, &many) == nil {
		return many, true
	}
	return nil, false
}
