package suite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/config"
)

// principal is the audited state of a configured user or API key. The
// credential is a fingerprint of its hash, so a password or key change is
// seen without the hash ever entering the chain.
type principal struct {
	Role       string `json:"role"`
	Tenant     string `json:"tenant,omitempty"`
	Credential string `json:"credential"`
}

// principalKinds maps the target type of a principal to its audit actions.
var principalKinds = map[string][3]string{
	"user":    {"user.created", "user.changed", "user.removed"},
	"api_key": {"api_key.configured", "api_key.changed", "api_key.removed"},
}

func fingerprint(hash string) string {
	sum := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(sum[:8])
}

// configuredPrincipals is the configuration's users and API keys by
// (type, name).
func configuredPrincipals(cfg config.Config) map[[2]string]principal {
	out := map[[2]string]principal{}
	for _, u := range cfg.Users {
		out[[2]string{"user", u.Name}] = principal{Role: u.Role, Tenant: u.Tenant, Credential: fingerprint(u.PasswordHash)}
	}
	for _, k := range cfg.APIKeys {
		out[[2]string{"api_key", k.Name}] = principal{Role: k.Role, Tenant: k.Tenant, Credential: fingerprint(k.KeyHash)}
	}
	return out
}

// chainedPrincipals folds the principal records of the platform chain into
// the state they last recorded.
func (s *Suite) chainedPrincipals(ctx context.Context) (map[[2]string]principal, error) {
	st, err := s.storeOf(config.PlatformTenant)
	if err != nil {
		return nil, err
	}
	var actions []string
	for _, a := range principalKinds {
		actions = append(actions, a[:]...)
	}
	var rows []struct {
		Type    string `ch:"target_type"`
		ID      string `ch:"target_id"`
		Changes string `ch:"changes"`
	}
	if err := st.Select(ctx, &rows, `SELECT target_type, target_id, changes FROM audit_records FINAL
		WHERE tenant_id = ? AND action IN ? ORDER BY seq`, config.PlatformTenant, actions); err != nil {
		return nil, fmt.Errorf("read the platform chain: %w", err)
	}
	out := map[[2]string]principal{}
	for _, r := range rows {
		var c struct {
			After *principal `json:"after"`
		}
		if err := json.Unmarshal([]byte(r.Changes), &c); err != nil {
			return nil, fmt.Errorf("platform chain: %s %s: %w", r.Type, r.ID, err)
		}
		if c.After == nil {
			delete(out, [2]string{r.Type, r.ID})
		} else {
			out[[2]string{r.Type, r.ID}] = *c.After
		}
	}
	return out, nil
}

// auditPrincipals records every change of the configured users and API keys
// (created, role, tenant or credential changed, removed) since the platform
// chain last saw them: in the platform chain, and in the tenant's chain for
// tenant users and keys. Users and configured keys change only through the
// configuration, so this runs at start. Each record's message id is its
// content, so two processes starting at once record a change once. A user
// whose entry changed (role, tenant, password) or was removed loses every
// UI session (endSessions), whatever else fails.
func (s *Suite) auditPrincipals(ctx context.Context) (int, error) {
	chained, err := s.chainedPrincipals(ctx)
	if err != nil {
		return 0, err
	}
	now := configuredPrincipals(s.cfg)
	keys := map[[2]string]bool{}
	for k := range chained {
		keys[k] = true
	}
	for k := range now {
		keys[k] = true
	}
	sorted := make([][2]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i][0]+"/"+sorted[i][1] < sorted[j][0]+"/"+sorted[j][1] })
	type userChange struct {
		name, tenant string
		sum          [32]byte
	}
	var changedUsers []userChange
	defer func() {
		for _, u := range changedUsers {
			if err := s.endSessions(ctx, u.name, u.tenant, u.sum); err != nil {
				s.log.Error().Err(err).Str("user", u.name).Msg("the sessions of a changed user were not ended")
			}
		}
	}()
	n := 0
	for _, k := range sorted {
		before, had := chained[k]
		after, has := now[k]
		if had && has && before == after {
			continue
		}
		kind := principalKinds[k[0]]
		action := kind[1]
		var b, a *principal
		switch {
		case !had:
			action, a = kind[0], &after
		case !has:
			action, b = kind[2], &before
		default:
			b, a = &before, &after
		}
		changes, err := json.Marshal(map[string]*principal{"before": b, "after": a})
		if err != nil {
			return n, err
		}
		rec := auditlog.Record{Time: time.Now().UTC(), Actor: auditlog.Actor{Type: "system", ID: "configuration", Name: "tenantscope configuration"},
			Action: action, Target: auditlog.Target{Type: k[0], ID: k[1]}, Outcome: "success", SourceService: "tenantscope",
			Changes: changes}
		chains := []string{config.PlatformTenant}
		for _, p := range []*principal{b, a} {
			if p != nil && p.Tenant != "" && (len(chains) == 1 || chains[len(chains)-1] != p.Tenant) {
				chains = append(chains, p.Tenant)
			}
		}
		sum := sha256.Sum256(append([]byte(action+"\x00"+k[0]+"\x00"+k[1]+"\x00"), changes...))
		if k[0] == "user" && had {
			changedUsers = append(changedUsers, userChange{k[1], before.Tenant, sum})
		}
		for _, chain := range chains {
			if _, ok := s.place.RegionOf(s.cfg, chain); !ok {
				continue // a tenant that is gone
			}
			rec.TenantID = chain
			body, err := json.Marshal(rec)
			if err != nil {
				return n, err
			}
			if err := s.publishAudit(ctx, chain, "principal-"+chain+"-"+hex.EncodeToString(sum[:16]), body); err != nil {
				return n, fmt.Errorf("audit %s of %s %s: %w", action, k[0], k[1], err)
			}
		}
		n++
	}
	return n, nil
}

// endSessions ends the UI sessions of a user whose configured entry changed
// or was removed, and records how many in the chain the user signed in to
// (their tenant before the change; platform users: the platform's). The
// record's message id follows from the change, so two processes starting
// at once record it once.
func (s *Suite) endSessions(ctx context.Context, user, tenant string, change [32]byte) error {
	store, err := s.sessionStore(ctx)
	if err != nil {
		return err
	}
	n, err := store.EndUser(ctx, user)
	if err != nil || n == 0 {
		return err
	}
	chain := tenant
	if _, ok := s.place.RegionOf(s.cfg, chain); chain == "" || !ok { // a platform user, or a tenant that is gone
		chain = config.PlatformTenant
	}
	rec := auditlog.Record{TenantID: chain, Time: time.Now().UTC(),
		Actor:  auditlog.Actor{Type: "system", ID: "configuration", Name: "tenantscope configuration"},
		Action: "ui.session_ended", Target: auditlog.Target{Type: "user", ID: user}, Outcome: "success", SourceService: "tenantscope",
		Metadata: map[string]string{"sessions": fmt.Sprint(n), "reason": "the user changed or was removed in the configuration"}}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.publishAudit(ctx, chain, "sessions-ended-"+chain+"-"+hex.EncodeToString(change[:16]), body)
}
