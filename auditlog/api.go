package auditlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
)

// API serves the audit trail:
//
//	GET /api/v1/tenants/{tenantId}/audit-events               filters, fields, sort, cursor
//	GET /api/v1/tenants/{tenantId}/audit-events/{seq}/proof   inclusion proof of one record
type API struct {
	keys   *identity.Keys
	stores func(tenant string) (*chstore.Store, error)
	pub    Publisher
	log    zerolog.Logger
	// Open decrypts crypto-shredded actor fields (nil: shown as stored).
	Open Opener
}

// Publisher hands an audit record to the pipeline (NATS `._audit`, where the
// one chain writer picks it up); msgID deduplicates retries.
type Publisher func(ctx context.Context, tenant, msgID string, body []byte) error

// NewAPI builds the audit API. pub may be nil (then POST is not offered).
func NewAPI(keys *identity.Keys, stores func(tenant string) (*chstore.Store, error), pub Publisher, log zerolog.Logger) *API {
	return &API{keys: keys, stores: stores, pub: pub, log: log}
}

// Register mounts the routes.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/tenants/{tenantId}/audit-events", identity.WithCorrelation(http.HandlerFunc(a.list)))
	mux.Handle("GET /api/v1/tenants/{tenantId}/audit-events/{seq}/proof", identity.WithCorrelation(http.HandlerFunc(a.proof)))
	mux.Handle("GET /api/v1/tenants/{tenantId}/audit-events/export", identity.WithCorrelation(http.HandlerFunc(a.exportTrail)))
	if a.pub != nil {
		mux.Handle("POST /api/v1/tenants/{tenantId}/audit-events", identity.WithCorrelation(http.HandlerFunc(a.create)))
	}
}

// Filter selects audit records; every field is optional.
type Filter struct {
	Actor, Action, Target, Outcome, Text string
	From, To                             time.Time
	Desc                                 bool
	After                                uint64 // cursor: the last seq of the previous page
	Limit                                int
	Fields                               []string
	// Progress, when set, is called by Stream after each page.
	Progress func(records int)
	// Open, when set, decrypts crypto-shredded actor fields for reading.
	Open Opener
}

// Opener decrypts a crypto-shredded value of tenant (a destroyed key reads
// as "[erased]"); other values come back as they are.
type Opener func(ctx context.Context, tenant, value string) (string, error)

// Sealer encrypts a personal value of a data subject of tenant (returning
// it as it is when the tenant does not shred, or when it is sealed already).
type Sealer func(ctx context.Context, tenant, subject, value string) (string, error)

// shredded are the actor fields a tenant's writer seals: personal, and not
// needed to filter the trail (the actor id stays, as a pseudonym); as
// columns, and as fields of a Record (actorPII).
var shredded = []string{"actor_name", "actor_ip", "user_agent"}

func (r *Record) actorPII() []*string {
	return []*string{&r.Actor.Name, &r.Actor.IP, &r.Actor.UserAgent}
}

// reveal opens the shredded fields of a listed row.
func reveal(ctx context.Context, open Opener, tenant string, row map[string]any) error {
	if open == nil {
		return nil
	}
	for _, k := range shredded {
		if v, ok := row[k].(string); ok && v != "" {
			plain, err := open(ctx, tenant, v)
			if err != nil {
				return err
			}
			row[k] = plain
		}
	}
	return nil
}

// RevealRecord opens the shredded actor fields of a record.
func RevealRecord(ctx context.Context, open Opener, r *Record) error {
	if open == nil {
		return nil
	}
	for _, v := range r.actorPII() {
		if *v == "" {
			continue
		}
		plain, err := open(ctx, r.TenantID, *v)
		if err != nil {
			return err
		}
		*v = plain
	}
	return nil
}

// Fields is what a caller may select, in output order.
var Fields = []string{"seq", "record_id", "time", "actor_type", "actor_id", "actor_name", "actor_ip", "user_agent", "action",
	"target_type", "target_id", "target_name", "outcome", "reason", "source_service", "submitted_by", "correlation_id", "changes", "metadata", "hash", "prev_hash"}

// ErrBadRequest wraps invalid query parameters.
var ErrBadRequest = errors.New("bad request")

// ParseFilter reads and checks query parameters.
func ParseFilter(q map[string][]string) (Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	f := Filter{Actor: get("actor"), Action: get("action"), Target: get("target"), Outcome: get("outcome"), Text: get("q"), Desc: true, Limit: 50}
	var errs []error
	for _, k := range []string{"from", "to"} {
		if v := get(k); v != "" {
			t, err := parseTime(v, k == "to")
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not an RFC 3339 time, a date (2006-01-02) or a UTC date and time (2006-01-02T15:04)", k, v))
			}
			if k == "from" {
				f.From = t
			} else {
				f.To = t
			}
		}
	}
	switch get("sort") {
	case "", "-seq", "desc":
	case "seq", "asc":
		f.Desc = false
	default:
		errs = append(errs, fmt.Errorf("sort: %q is not seq or -seq", get("sort")))
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("limit: %q is not 1..1000", v))
		}
		f.Limit = n
	}
	if v := get("cursor"); v != "" {
		n, err := decodeCursor(v)
		if err != nil {
			errs = append(errs, err)
		}
		f.After = n
	}
	if v := get("fields"); v != "" {
		for _, name := range strings.Split(v, ",") {
			if !contains(Fields, name) {
				errs = append(errs, fmt.Errorf("fields: unknown field %q", name))
			}
			f.Fields = append(f.Fields, name)
		}
	}
	if f.Outcome != "" && f.Outcome != "success" && f.Outcome != "failure" && f.Outcome != "denied" {
		errs = append(errs, fmt.Errorf("outcome: %q is not success, failure or denied", f.Outcome))
	}
	if err := errors.Join(errs...); err != nil {
		return f, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return f, nil
}

// parseTime reads an RFC 3339 time, or (as HTML date and datetime-local
// inputs send) a UTC date or date and minute. A date given as the end of a
// range includes that whole day.
func parseTime(v string, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04", v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, v)
	if err == nil && end {
		t = t.AddDate(0, 0, 1)
	}
	return t, err
}

// A cursor is the last sequence number of a page, opaque to callers.
func encodeCursor(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatUint(seq, 10)))
}

func decodeCursor(c string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	n, perr := strconv.ParseUint(string(b), 10, 64)
	if err != nil || perr != nil {
		return 0, errors.New("cursor: not a cursor this API returned")
	}
	return n, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Query is the one place that reads a tenant's audit records: tenant_id is
// always the first condition, every value a bound parameter.
func Query(tenant string, f Filter) (string, []any) {
	where := []string{"tenant_id = ?"}
	args := []any{tenant}
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	if f.Actor != "" {
		add("(actor_id = ? OR actor_name = ?)", f.Actor)
		args = append(args, f.Actor)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Target != "" {
		add("(target_id = ? OR target_name = ?)", f.Target)
		args = append(args, f.Target)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if !f.From.IsZero() {
		add("time >= ?", f.From)
	}
	if !f.To.IsZero() {
		add("time < ?", f.To)
	}
	if f.Text != "" {
		add("positionCaseInsensitiveUTF8(concat(action, ' ', actor_id, ' ', actor_name, ' ', target_id, ' ', target_name, ' ', reason, ' ', changes), ?) > 0", f.Text)
	}
	order := "DESC"
	if f.After > 0 {
		if f.Desc {
			add("seq < ?", f.After)
		} else {
			add("seq > ?", f.After)
		}
	}
	if !f.Desc {
		order = "ASC"
	}
	cols := "seq, record_id, time, actor_type, actor_id, actor_name, actor_ip, user_agent, action, target_type, target_id, target_name, outcome, reason, source_service, metadata['" + SubmittedByKey + "'] AS submitted_by, correlation_id, changes, metadata, hash, prev_hash"
	return fmt.Sprintf("SELECT %s FROM audit_records FINAL WHERE %s ORDER BY seq %s LIMIT %d", cols, strings.Join(where, " AND "), order, f.Limit+1), args
}

type row struct {
	Seq           uint64            `ch:"seq" json:"seq"`
	RecordID      string            `ch:"record_id" json:"record_id"`
	Time          time.Time         `ch:"time" json:"time"`
	ActorType     string            `ch:"actor_type" json:"actor_type"`
	ActorID       string            `ch:"actor_id" json:"actor_id"`
	ActorName     string            `ch:"actor_name" json:"actor_name"`
	ActorIP       string            `ch:"actor_ip" json:"actor_ip"`
	UserAgent     string            `ch:"user_agent" json:"user_agent"`
	Action        string            `ch:"action" json:"action"`
	TargetType    string            `ch:"target_type" json:"target_type"`
	TargetID      string            `ch:"target_id" json:"target_id"`
	TargetName    string            `ch:"target_name" json:"target_name"`
	Outcome       string            `ch:"outcome" json:"outcome"`
	Reason        string            `ch:"reason" json:"reason"`
	SourceService string            `ch:"source_service" json:"source_service"`
	SubmittedBy   string            `ch:"submitted_by" json:"submitted_by"`
	CorrelationID string            `ch:"correlation_id" json:"correlation_id"`
	Changes       string            `ch:"changes" json:"changes"`
	Metadata      map[string]string `ch:"metadata" json:"metadata"`
	Hash          string            `ch:"hash" json:"hash"`
	PrevHash      string            `ch:"prev_hash" json:"prev_hash"`
}

// fields keeps the selected fields of a row, changes as JSON.
func (r row) fields(sel []string) map[string]any {
	var all map[string]any
	b, _ := json.Marshal(r)     //nolint:errcheck // plain struct
	_ = json.Unmarshal(b, &all) //nolint:errcheck // just marshalled
	if r.Changes != "" && json.Valid([]byte(r.Changes)) {
		all["changes"] = json.RawMessage(r.Changes)
	} else {
		all["changes"] = nil
	}
	if len(sel) == 0 {
		return all
	}
	out := make(map[string]any, len(sel))
	for _, k := range sel {
		out[k] = all[k]
	}
	return out
}

// List runs a scoped query and returns a page and the next cursor.
func List(ctx context.Context, st *chstore.Store, tenant string, f Filter) ([]map[string]any, string, error) {
	sql, args := Query(tenant, f)
	var rows []row
	if err := st.Select(ctx, &rows, sql, args...); err != nil {
		return nil, "", err
	}
	next := ""
	if len(rows) > f.Limit {
		rows = rows[:f.Limit]
		next = encodeCursor(rows[len(rows)-1].Seq)
	}
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = r.fields(f.Fields)
		if err := reveal(ctx, f.Open, tenant, out[i]); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// authorize authenticates the caller and scopes it to the path's tenant.
// A refused credential is itself audited in that tenant's chain.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, c identity.Capability) (identity.Principal, string, *chstore.Store, bool) {
	p, tenant, ok := a.keys.Require(w, r, c, Denied(a.pub, a.stores, a.log, r, c))
	if !ok {
		return p, "", nil, false
	}
	st, err := a.stores(tenant)
	if err != nil {
		identity.WriteError(w, r, http.StatusNotFound, "not_found", "no such tenant")
		return p, "", nil, false
	}
	return p, tenant, st, true
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	_, tenant, st, ok := a.authorize(w, r, identity.ReadAudit)
	if !ok {
		return
	}
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	f.Open = a.Open
	data, next, err := List(r.Context(), st, tenant, f)
	if err != nil {
		a.log.Error().Err(err).Str("tenant_id", tenant).Str("correlation_id", identity.CorrelationID(r.Context())).Msg("audit query")
		identity.WriteError(w, r, http.StatusInternalServerError, "internal", "the audit trail could not be read")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "next_cursor": next}) //nolint:errcheck // client gone
}

func (a *API) proof(w http.ResponseWriter, r *http.Request) {
	_, tenant, st, ok := a.authorize(w, r, identity.ReadAudit)
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "seq must be a positive number")
		return
	}
	p, err := Prove(r.Context(), st, tenant, seq)
	if err != nil {
		identity.WriteError(w, r, http.StatusNotFound, "not_found", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p) //nolint:errcheck // client gone
}

// Denied is the callback identity.Keys.Require takes: it records a refused
// access in the caller's own chain, so that its compliance officers see
// what it tried: a tenant-scoped key's own tenant, the platform chain for a
// cross-tenant role (or a tenant without a chain). Never the chain of the
// tenant the path names: its viewers would read the caller's key name, IP
// and user agent.
func Denied(pub Publisher, stores func(string) (*chstore.Store, error), log zerolog.Logger, r *http.Request, c identity.Capability) func(identity.Principal, string) {
	return func(p identity.Principal, tenant string) {
		if pub == nil {
			return
		}
		chain := p.Tenant
		if chain == "" {
			chain = config.PlatformTenant
		}
		if _, err := stores(chain); err != nil {
			chain = config.PlatformTenant
		}
		rec := Record{
			TenantID: chain, Time: time.Now().UTC(),
			Actor: Actor{Type: "api_key", ID: Clip(p.Name, MaxFieldBytes), Name: p.Role + keyTenant(p), IP: clientIP(r),
				UserAgent: Clip(r.UserAgent(), MaxUserAgentBytes)},
			Action: "api.access_denied", Target: Target{Type: "route", ID: Clip(r.Method+" "+r.URL.Path, MaxFieldBytes), Name: Clip(tenant, MaxFieldBytes)},
			Outcome: "denied", Reason: "credential lacks " + string(c) + " for this tenant", SourceService: SuiteService,
			CorrelationID: identity.CorrelationID(r.Context()),
		}
		if err := pub.Record(r.Context(), rec); err != nil {
			log.Warn().Err(err).Str("tenant_id", chain).Str("correlation_id", rec.CorrelationID).Msg("could not audit a denied access")
		}
	}
}

func keyTenant(p identity.Principal) string {
	if p.Tenant == "" {
		return ""
	}
	return " of " + p.Tenant
}

func clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// create accepts an audit record for the tenant: POST with an
// Idempotency-Key header; the same key always yields the same record (id),
// chained once.
func (a *API) create(w http.ResponseWriter, r *http.Request) {
	p, tenant, st, ok := a.authorize(w, r, identity.WriteAudit)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" || len(key) > 200 {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "an Idempotency-Key header (1 to 200 characters) is required")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 256<<10))
	if err != nil {
		identity.WriteError(w, r, http.StatusRequestEntityTooLarge, "too_large", "the body is over 256 KiB")
		return
	}
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "the body is not an audit record: "+err.Error())
		return
	}
	if rec.TenantID != "" && rec.TenantID != tenant {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "tenant_id in the body does not match the path")
		return
	}
	if rec.Seq != 0 || rec.Hash != "" || rec.PrevHash != "" {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "seq, hash and prev_hash are assigned by the chain")
		return
	}
	rec.TenantID = tenant
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if rec.SourceService == "" {
		rec.SourceService = "api"
	}
	if rec.CorrelationID == "" {
		rec.CorrelationID = identity.CorrelationID(r.Context())
	}
	// The record as the caller sent it: a sane time, not the suite's own
	// identity, fields within their limits.
	if err := rec.CheckSubmitted(time.Now()); err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", oneLine(err))
		return
	}
	rec.RecordID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("tenantscope:audit:"+tenant+":"+key))
	sum := sha256.Sum256(raw)
	bodyHash := hex.EncodeToString(sum[:])
	// A key already used for another body is a client error, not a retry.
	var prior []struct {
		Hash string `ch:"h"`
	}
	if err := st.Select(r.Context(), &prior, "SELECT metadata['idempotency_body_sha256'] AS h FROM audit_records WHERE tenant_id = ? AND record_id = ? LIMIT 1", tenant, rec.RecordID); err != nil {
		identity.WriteError(w, r, http.StatusServiceUnavailable, "unavailable", "could not check the Idempotency-Key; retry")
		return
	}
	if len(prior) > 0 && prior[0].Hash != bodyHash {
		identity.WriteError(w, r, http.StatusConflict, "idempotency_key_reused", "this Idempotency-Key was used for a different body")
		return
	}
	if rec.Metadata == nil {
		rec.Metadata = map[string]string{}
	}
	rec.Metadata["idempotency_body_sha256"] = bodyHash
	rec.SetSubmittedBy("api_key:" + p.Name)
	if err := rec.Validate(); err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", oneLine(err))
		return
	}
	body, err := json.Marshal(rec)
	if err == nil {
		err = a.pub(r.Context(), tenant, rec.RecordID.String(), body)
	}
	if err != nil {
		a.log.Error().Err(err).Str("tenant_id", tenant).Str("correlation_id", identity.CorrelationID(r.Context())).Msg("publish audit record")
		identity.WriteError(w, r, http.StatusServiceUnavailable, "unavailable", "the audit record could not be queued; retry with the same Idempotency-Key")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"record_id": rec.RecordID.String(), "status": "accepted"}) //nolint:errcheck // client gone
}

// oneLine joins the lines of an errors.Join error for an error body.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// Record queues rec in its tenant's chain (rec.TenantID), outliving the
// request's cancellation; a nil Publisher records nothing.
func (p Publisher) Record(ctx context.Context, rec Record) error {
	if p == nil {
		return nil
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return p(context.WithoutCancel(ctx), rec.TenantID, "", body)
}

// KeyActor is the audit actor of an API-key caller.
func KeyActor(p identity.Principal, r *http.Request) Actor {
	return Actor{Type: "api_key", ID: p.Name, Name: p.Role, IP: r.RemoteAddr, UserAgent: r.UserAgent()}
}
