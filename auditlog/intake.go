package auditlog

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits of a record submitted from outside the suite (the API, a tenant's
// NATS `._audit` subject). Sizes are bytes of UTF-8.
const (
	// MaxFieldBytes bounds ids and names: actor type, id, name and IP,
	// target type, id and name, action, source_service, correlation_id.
	MaxFieldBytes = 256
	// MaxUserAgentBytes bounds actor.user_agent.
	MaxUserAgentBytes = 1024
	// MaxReasonBytes bounds reason.
	MaxReasonBytes = 4096
	// MaxChangesBytes bounds changes (as sent).
	MaxChangesBytes = 64 << 10
	// MaxMetadataEntries and MaxMetadataBytes bound metadata: entries, and
	// keys plus values together; a key is at most MaxFieldBytes.
	MaxMetadataEntries = 64
	MaxMetadataBytes   = 64 << 10
	// MaxClockSkew is how far ahead of its arrival a record's time may be.
	MaxClockSkew = 5 * time.Minute
)

// EarliestSubmitted is the earliest time a submitted record may carry.
var EarliestSubmitted = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// SuiteService is the suite's own source_service, and the service token of
// the NATS subject its own records travel on (tenant.{t}.tenantscope._audit).
const SuiteService = "tenantscope"

// SubmittedByKey is the metadata key that names who submitted a record: the
// suite sets it at intake (an API key, a tenant's NATS credentials, or the
// suite itself), so it is part of the hashed record.
const SubmittedByKey = "submitted_by"

// reservedActorTypes are the actor types only the suite writes.
var reservedActorTypes = []string{"system", "operator"}

// reservedMetadata are the metadata keys the suite sets at intake.
var reservedMetadata = []string{SubmittedByKey, "idempotency_body_sha256"}

// ErrReserved is a submitted record that claims to be the suite's own.
var ErrReserved = errors.New("reserved for the suite's own records")

// ErrOutOfLimits is a submitted record outside the intake limits.
var ErrOutOfLimits = errors.New("outside the intake limits")

// CheckSubmitted checks a record submitted from outside the suite, that
// arrived at now: everything Validate checks; a time no more than
// MaxClockSkew ahead of now and not before EarliestSubmitted; no actor type,
// source_service or metadata key of the suite's own (ErrReserved); and the
// field limits above (ErrOutOfLimits). A zero time counts as now.
func (r Record) CheckSubmitted(now time.Time) error {
	errs := []error{r.Validate()}
	if t := r.Time; !t.IsZero() && (t.After(now.Add(MaxClockSkew)) || t.Before(EarliestSubmitted)) {
		errs = append(errs, fmt.Errorf("%w: time %s is more than %s ahead of now or before %s", ErrOutOfLimits,
			t.UTC().Format(time.RFC3339Nano), MaxClockSkew, EarliestSubmitted.Format(time.DateOnly)))
	}
	norm := func(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
	for _, t := range reservedActorTypes {
		if norm(r.Actor.Type) == t {
			errs = append(errs, fmt.Errorf("%w: actor.type %q", ErrReserved, t))
		}
	}
	if s := norm(r.SourceService); s == SuiteService || strings.HasPrefix(s, SuiteService+"-") {
		errs = append(errs, fmt.Errorf("%w: source_service %q", ErrReserved, clip(r.SourceService, MaxFieldBytes)))
	}
	for _, k := range reservedMetadata {
		if _, ok := r.Metadata[k]; ok {
			errs = append(errs, fmt.Errorf("%w: metadata key %q is set by the suite", ErrReserved, k))
		}
	}
	limit := func(name, v string, n int) {
		if len(v) > n {
			errs = append(errs, fmt.Errorf("%w: %s is %d bytes, at most %d", ErrOutOfLimits, name, len(v), n))
		}
	}
	for _, f := range r.textFields() {
		switch f.name {
		case "actor.user_agent":
			limit(f.name, f.value, MaxUserAgentBytes)
		case "reason":
			limit(f.name, f.value, MaxReasonBytes)
		default:
			limit(f.name, f.value, MaxFieldBytes)
		}
	}
	limit("changes", string(r.Changes), MaxChangesBytes)
	if len(r.Metadata) > MaxMetadataEntries {
		errs = append(errs, fmt.Errorf("%w: metadata has %d entries, at most %d", ErrOutOfLimits, len(r.Metadata), MaxMetadataEntries))
	}
	size := 0
	for k, v := range r.Metadata {
		size += len(k) + len(v)
		if len(k) > MaxFieldBytes {
			errs = append(errs, fmt.Errorf("%w: a metadata key is %d bytes, at most %d", ErrOutOfLimits, len(k), MaxFieldBytes))
		}
	}
	if size > MaxMetadataBytes {
		errs = append(errs, fmt.Errorf("%w: metadata is %d bytes, at most %d", ErrOutOfLimits, size, MaxMetadataBytes))
	}
	return errors.Join(errs...)
}

// SetSubmittedBy records who submitted r (clipped to MaxFieldBytes).
func (r *Record) SetSubmittedBy(who string) {
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	r.Metadata[SubmittedByKey] = clip(who, MaxFieldBytes)
}

// SubmittedBy is who submitted r ("" for records chained before it was kept).
func (r Record) SubmittedBy() string { return r.Metadata[SubmittedByKey] }

// Clip cuts s to at most n bytes without splitting a character: for the
// suite's own records, whose fields come from requests (a route, a
// User-Agent) and are not refused for their length.
func Clip(s string, n int) string { return clip(s, n) }
