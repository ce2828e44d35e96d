package auditlog

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
)

// Failure bursts (failed sign-ins, wrong API keys) are recorded in the
// platform chain, not in a tenant's: anyone can cause them without
// credentials, so they must not fill (or be attributed to) a tenant's chain.
// A burst gives its first failure and then summaries (count, window,
// addresses), never one record per attempt.

// Kinds of failure bursts.
const (
	SignInFailures = "ui.sign_in"       // key: the user name tried (clipped)
	KeyFailures    = "api.key_rejected" // key: the client address
)

// ReportFailures returns the identity.Throttle reporter that records each
// burst of kind (SignInFailures, KeyFailures) in the platform chain.
func ReportFailures(pub Publisher, log zerolog.Logger, kind string) func(identity.Burst) {
	return func(b identity.Burst) {
		rec := FailureRecord(b, kind)
		if err := pub.Record(context.Background(), rec); err != nil {
			log.Warn().Err(err).Str("tenant_id", rec.TenantID).Str("action", rec.Action).Msg("could not audit failed attempts")
		}
	}
}

// FailureRecord is the platform chain's record of b: action kind for the
// first failure, kind + "_summary" for a summary.
func FailureRecord(b identity.Burst, kind string) Record {
	rec := Record{TenantID: config.PlatformTenant, Time: time.Now().UTC(), Action: kind, Outcome: "failure",
		SourceService: "tenantscope", Metadata: b.Metadata()}
	ip := ""
	if len(b.Addresses) > 0 {
		ip = b.Addresses[0]
	}
	switch kind {
	case SignInFailures:
		rec.SourceService = "tenantscope-ui"
		rec.Actor = Actor{Type: "user", ID: b.Key, IP: ip, UserAgent: b.UserAgent}
		rec.Target = Target{Type: "user", ID: b.Key}
		rec.Reason = b.Reason("sign-ins")
	default:
		rec.Actor = Actor{Type: "api_key", ID: "unknown", IP: b.Key, UserAgent: b.UserAgent}
		rec.Target = Target{Type: "address", ID: b.Key}
		rec.Reason = b.Reason("API keys")
	}
	if !b.First {
		rec.Action += "_summary"
	}
	return rec
}
