package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
)

// OIDCCallbackPath is where the identity provider sends the browser back
// (the path of oidc.redirect_url).
const OIDCCallbackPath = "/ui/oidc/callback"

// OIDC configures single sign-on with an OpenID Connect provider
// (Authorization Code with PKCE). A claim of the ID token (role_claim,
// e.g. groups) is mapped to a role and tenant; local users stay for
// break-glass unless local_users is false.
type OIDC struct {
	// Issuer is the provider's issuer URL (its discovery document is at
	// <issuer>/.well-known/openid-configuration). Empty: no single sign-on.
	Issuer string `yaml:"issuer"`
	// Name is shown on the sign-in page, "Sign in with <name>" (default:
	// the issuer's host).
	Name string `yaml:"name"`
	// ClientID is this application's client at the provider; ID tokens
	// must be issued for it (their audience).
	ClientID string `yaml:"client_id"`
	// ClientSecret is the client's secret (empty: a public client, PKCE
	// only); ClientSecretFile reads it from a file.
	ClientSecret     string `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is this suite's callback as the browser reaches it:
	// https://<host>/ui/oidc/callback, registered at the provider.
	RedirectURL string `yaml:"redirect_url"`
	// Scopes requested (default openid, profile, email). Add the scope
	// that makes your provider put role_claim in the ID token (often
	// "groups").
	Scopes []string `yaml:"scopes"`
	// UsernameClaim names the user in the UI and the audit trail (default
	// preferred_username; then email, then sub when it is absent).
	UsernameClaim string `yaml:"username_claim"`
	// RoleClaim is the claim (a dot path into the ID token's claims, e.g.
	// groups or realm_access.roles) whose values are matched against
	// Mappings (default groups). A string or an array of strings.
	RoleClaim string `yaml:"role_claim"`
	// Mappings give a claim value a role (and, for tenant roles, a
	// tenant). The first mapping, in this order, whose group the user has
	// wins; a user with none is refused.
	Mappings []OIDCMapping `yaml:"mappings"`
	// LocalUsers keeps password sign-in for the configured users
	// (break-glass; default true). false hides and refuses it, and ends
	// local users' sessions.
	LocalUsers bool `yaml:"local_users"`
}

// OIDCMapping maps one value of the role claim to a role and tenant.
type OIDCMapping struct {
	Group  string `yaml:"group"`
	Role   string `yaml:"role"`
	Tenant string `yaml:"tenant"`
}

// Enabled reports whether single sign-on is configured.
func (o OIDC) Enabled() bool { return o.Issuer != "" }

// DisplayName is the name on the sign-in button.
func (o OIDC) DisplayName() string {
	if o.Name != "" {
		return o.Name
	}
	if u, err := url.Parse(o.Issuer); err == nil && u.Host != "" {
		return u.Hostname()
	}
	return "single sign-on"
}

// ScopeList is Scopes or the default.
func (o OIDC) ScopeList() []string {
	if len(o.Scopes) == 0 {
		return []string{"openid", "profile", "email"}
	}
	return o.Scopes
}

// ClaimOfRole is RoleClaim or the default.
func (o OIDC) ClaimOfRole() string {
	if o.RoleClaim == "" {
		return "groups"
	}
	return o.RoleClaim
}

// ClaimOfName is UsernameClaim or the default.
func (o OIDC) ClaimOfName() string {
	if o.UsernameClaim == "" {
		return "preferred_username"
	}
	return o.UsernameClaim
}

// MaxOIDCGroup bounds a mapping's group (a session keeps the user's mapped
// groups).
const MaxOIDCGroup = 128

var (
	claimPathRe = regexp.MustCompile(`^[A-Za-z0-9_:/.-]{1,128}$`)
	scopeRe     = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`)
)

// loopback reports whether u's host is a loopback name or address, where
// plain http is allowed (tests, a provider on the same machine).
func loopback(u *url.URL) bool {
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (c Config) validateOIDC(bad func(field, format string, a ...any)) {
	o := c.OIDC
	if !o.Enabled() {
		if o.ClientID != "" || o.RedirectURL != "" || len(o.Mappings) > 0 || o.ClientSecret != "" || o.ClientSecretFile != "" {
			bad("oidc.issuer", "is required when the oidc section is used")
		}
		if !o.LocalUsers {
			bad("oidc.local_users", "false needs oidc.issuer: nobody could sign in")
		}
		return
	}
	checkURL := func(field, v string) *url.URL {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			bad(field, "%q is not an absolute https:// URL", v)
			return nil
		}
		if u.Scheme == "http" && !loopback(u) {
			bad(field, "%q must use https (plain http only on loopback)", v)
			return nil
		}
		if u.User != nil || u.Fragment != "" {
			bad(field, "%q must have no user info or fragment", v)
			return nil
		}
		return u
	}
	checkURL("oidc.issuer", o.Issuer)
	if o.ClientID == "" {
		bad("oidc.client_id", "is required")
	}
	if o.RedirectURL == "" {
		bad("oidc.redirect_url", "is required (https://<this suite>%s)", OIDCCallbackPath)
	} else if u := checkURL("oidc.redirect_url", o.RedirectURL); u != nil && (u.Path != OIDCCallbackPath || u.RawQuery != "") {
		bad("oidc.redirect_url", "%q must end in the path %s, without a query", o.RedirectURL, OIDCCallbackPath)
	}
	if !slices.Contains(o.ScopeList(), "openid") {
		bad("oidc.scopes", "must include openid")
	}
	for i, s := range o.Scopes {
		if !scopeRe.MatchString(s) {
			bad(fmt.Sprintf("oidc.scopes[%d]", i), "%q is not a scope", s)
		}
	}
	if !claimPathRe.MatchString(o.ClaimOfRole()) {
		bad("oidc.role_claim", "%q is not a claim name or dot path", o.RoleClaim)
	}
	if !claimPathRe.MatchString(o.ClaimOfName()) {
		bad("oidc.username_claim", "%q is not a claim name", o.UsernameClaim)
	}
	if len(o.Mappings) == 0 {
		bad("oidc.mappings", "at least one mapping from a %s value to a role is required", o.ClaimOfRole())
	}
	tenants := map[string]bool{}
	for _, t := range c.Tenants {
		tenants[t.ID] = true
	}
	groups := map[string]bool{}
	for i, m := range o.Mappings {
		f := fmt.Sprintf("oidc.mappings[%d]", i)
		if m.Group == "" || len(m.Group) > MaxOIDCGroup {
			bad(f+".group", "must be 1 to %d bytes", MaxOIDCGroup)
		}
		if groups[m.Group] {
			bad(f+".group", "%q is mapped twice", m.Group)
		}
		groups[m.Group] = true
		switch {
		case !slices.Contains(Roles, m.Role):
			bad(f+".role", "%q is not one of %s", m.Role, joinRoles())
		case TenantScoped(m.Role) && !tenants[m.Tenant]:
			bad(f+".tenant", "role %s needs a configured tenant, got %q", m.Role, m.Tenant)
		case !TenantScoped(m.Role) && m.Tenant != "":
			bad(f+".tenant", "role %s spans all tenants; leave tenant empty", m.Role)
		}
	}
}

func joinRoles() string {
	out := ""
	for i, r := range Roles {
		if i > 0 {
			out += ", "
		}
		out += r
	}
	return out
}
