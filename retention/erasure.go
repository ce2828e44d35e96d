package retention

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/natsbus"
)

// Erasure is a request to erase a data subject from a tenant.
type Erasure struct {
	ID          string            `json:"id"`
	Tenant      string            `json:"tenant"`
	SubjectHash string            `json:"subject_sha256"`
	Status      string            `json:"status"` // dry_run, blocked_by_hold, completed, failed
	Detail      string            `json:"detail,omitempty"`
	Counts      map[string]uint64 `json:"counts"`
	Certificate string            `json:"certificate,omitempty"`
	// Cutoff: the erasure covers the rows received before it.
	Cutoff      time.Time  `json:"received_before,omitzero"`
	RequestedBy string     `json:"requested_by"`
	RequestedAt time.Time  `json:"requested_at"`
	Deadline    time.Time  `json:"deadline"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// Certificate is the signed receipt of an erasure, appended to the
// tenant's audit chain.
type Certificate struct {
	Version       int               `json:"v"`
	Request       string            `json:"request_id"`
	Tenant        string            `json:"tenant"`
	SubjectHash   string            `json:"subject_sha256"`
	Deleted       map[string]uint64 `json:"deleted"`
	Retained      map[string]uint64 `json:"retained"`
	RetainedWhy   string            `json:"retained_why,omitempty"`
	RequestedBy   string            `json:"requested_by"`
	ExecutedBy    string            `json:"executed_by"`
	RequestedAt   time.Time         `json:"requested_at"`
	CompletedAt   time.Time         `json:"completed_at"`
	ChainBefore   ChainPos          `json:"chain_before"`
	ChainRecordID string            `json:"chain_record_id"` // the audit record that carries this certificate
	Verified      bool              `json:"verified_zero_rows_remain"`
	// ReceivedBefore bounds what was erased and verified: the subject's rows
	// the store received before it (later rows are new data).
	ReceivedBefore time.Time `json:"received_before"`
	// KeyDestroyed is the subject's crypto-shredding key, destroyed: copies
	// of its encrypted fields outside the store (exports, backups) are
	// unreadable too.
	KeyDestroyed string `json:"key_destroyed,omitempty"`
}

// ChainPos is a position in a tenant's audit chain.
type ChainPos struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// CertificateOrigin is the origin line of erasure certificate notes.
func CertificateOrigin(tenant string) string { return "tenantscope/erasure/" + tenant }

var erasureDue = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tenantscope_erasure_requests_open",
	Help: "Erasure requests not completed, by tenant and state (due_soon: within a fifth of the deadline; overdue)."}, []string{"tenant", "state"})

func subjectHash(tenant, subject string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + subject))
	return hex.EncodeToString(sum[:])
}

// Erase counts (dryRun) or erases a data subject's rows in every table of
// the tenant and in its dead letters. Rows under a legal hold block the
// erasure: the request is recorded as blocked with the conflict for a
// compliance officer, and nothing is deleted. Audit records are kept (their
// chain must stay verifiable) and listed as retained in the certificate.
//
// An erasure is bounded by a cutoff read from the server at its start: it
// erases the subject's rows received before it (rows that arrive later
// are new data), counts them with the condition it deletes with, and
// verifies that none is left. It holds the tenant exclusively (no hold is
// placed and no purge rewrites rows meanwhile); a dry run only reads.
func (s *Service) Erase(ctx context.Context, tenant, subject string, dryRun bool, by string) (Erasure, error) {
	if dryRun {
		st, err := s.StoreOf(tenant)
		if err != nil {
			return Erasure{}, err
		}
		return s.erase(ctx, st, tenant, subject, true, by)
	}
	var e Erasure
	err := s.exclusive(ctx, tenant, "erasure", func() error {
		st, release, err := s.change(tenant)
		if err != nil {
			return err
		}
		defer release()
		e, err = s.erase(ctx, st, tenant, subject, false, by)
		return err
	})
	return e, err
}

func (s *Service) erase(ctx context.Context, st *chstore.Store, tenant, subject string, dryRun bool, by string) (Erasure, error) {
	subject = strings.TrimSpace(subject)
	if subject == "" {
		return Erasure{}, fmt.Errorf("%w: name the data subject's identifier", ErrInvalid)
	}
	now := s.Now().UTC().Truncate(time.Millisecond)
	e := Erasure{ID: newID("erase_"), Tenant: tenant, SubjectHash: subjectHash(tenant, subject), Counts: map[string]uint64{},
		RequestedBy: by, RequestedAt: now, Deadline: now.Add(time.Duration(s.cfg.Retention.ErasureDeadline))}
	holds, err := s.Holds(ctx, tenant)
	if err != nil {
		return e, err
	}
	cutoff, err := s.cutoff(ctx, st, !dryRun)
	if err != nil {
		return e, err
	}
	e.Cutoff = time.UnixMilli(cutoff).UTC()
	// subjectRows is the condition of the subject's rows this erasure
	// counts, deletes and verifies (audit records are only counted).
	subjectRows := func(sig string) (string, []any) {
		cond, args, _ := s.subject(sig, subject) //nolint:errcheck // never fails
		if cond == "" {
			return "", nil
		}
		if sig == "audit_records" {
			return "tenant_id = ? AND " + cond, append([]any{tenant}, args...)
		}
		return "tenant_id = ? AND " + receivedBy + " AND " + cond, append([]any{tenant, cutoff}, args...)
	}
	var total, held uint64
	for _, sig := range []string{"events", "logs", "spans", "audit_records"} {
		cond, args := subjectRows(sig)
		if cond == "" {
			continue
		}
		t := tables[sig]
		var n uint64
		if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+t.name+" WHERE "+cond, args...); err != nil {
			return e, fmt.Errorf("erasure count %s: %w", t.name, err)
		}
		e.Counts[sig] = n
		if sig == "audit_records" {
			continue
		}
		total += n
		hw, hargs, err := s.heldWhere(sig, holds)
		if err != nil {
			return e, err
		}
		// Held: covered by an active hold, or stored as held.
		var h uint64
		if err := st.QueryRow(ctx, []any{&h}, "SELECT count() FROM "+t.name+" WHERE "+cond+" AND (retention_days = ? OR "+hw+")",
			append(append(append([]any{}, args...), uint16(HeldDays)), hargs...)...); err != nil {
			return e, err
		}
		held += h
	}
	dl, err := s.deadLetters(ctx, tenant, subject, false)
	if err != nil {
		return e, err
	}
	e.Counts["dead_letters"] = uint64(dl)
	if total == 0 && dl == 0 {
		return e, fmt.Errorf("%w: tenant %s holds no data of this subject (nothing to erase)", ErrNotFound, tenant)
	}
	switch {
	case dryRun:
		e.Status, e.Detail = "dry_run", "counted, nothing erased"
	case held > 0:
		e.Status, e.Detail = "blocked_by_hold", fmt.Sprintf("%d rows of this subject are under a legal hold: a compliance officer must lift the hold or withdraw the request", held)
		e.Counts["held"] = held
	}
	if e.Status != "" {
		// The subject is kept while the request is open, to run it later.
		return e, s.saveErasure(ctx, e, subject)
	}
	before, err := head(ctx, st, tenant)
	if err != nil {
		return e, err
	}
	deleted := map[string]uint64{}
	for _, sig := range purged {
		cond, args := subjectRows(sig)
		if cond == "" || e.Counts[sig] == 0 {
			continue
		}
		n, err := deleteCounted(ctx, st, tables[sig].name, cond, args)
		if err != nil {
			return e, fmt.Errorf("erase %s: %w", tables[sig].name, err)
		}
		deleted[sig] = n
	}
	if n, err := s.deadLetters(ctx, tenant, subject, true); err != nil {
		return e, err
	} else if n > 0 {
		deleted["dead_letters"] = uint64(n)
	}
	// Verify: nothing of the subject received before the cutoff is left
	// outside the audit trail.
	remaining := uint64(0)
	for _, sig := range purged {
		cond, args := subjectRows(sig)
		if cond == "" {
			continue
		}
		var n uint64
		if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM "+tables[sig].name+" WHERE "+cond, args...); err != nil {
			return e, err
		}
		remaining += n
	}
	if left, err := s.deadLetters(ctx, tenant, subject, false); err != nil {
		return e, err
	} else {
		remaining += uint64(left)
	}
	keyID := ""
	if s.Shred != nil {
		id, err := s.Shred.Keys.Destroy(ctx, tenant, subject, by)
		switch {
		case err == nil, errors.Is(err, ErrConflict):
			keyID = id
		case errors.Is(err, ErrNotFound):
		default:
			return e, err
		}
	}
	done := s.Now().UTC().Truncate(time.Millisecond)
	e.CompletedAt = &done
	e.Status = "completed"
	if remaining > 0 {
		e.Status, e.Detail = "failed", fmt.Sprintf("%d rows remain after the deletes", remaining)
	}
	cert := Certificate{Version: 1, Request: e.ID, Tenant: tenant, SubjectHash: e.SubjectHash, Deleted: deleted,
		Retained: map[string]uint64{"audit_records": e.Counts["audit_records"]}, RequestedBy: by, ExecutedBy: by,
		RequestedAt: e.RequestedAt, CompletedAt: done, ChainBefore: before, Verified: remaining == 0, KeyDestroyed: keyID, ReceivedBefore: e.Cutoff}
	if cert.Retained["audit_records"] > 0 {
		cert.RetainedWhy = "audit records are kept under the legal obligation to keep a tamper-evident audit trail"
	}
	actor := auditlog.Actor{Type: "user", ID: by}
	// The record id is chosen first so the certificate can name it.
	cert.ChainRecordID = uuid.New().String()
	signed, err := s.signNote(CertificateOrigin(cert.Tenant), cert)
	if err != nil {
		return e, err
	}
	e.Certificate = signed
	s.recordCertificate(ctx, tenant, actor, cert, signed)
	return e, s.saveErasure(ctx, e, "")
}

// signNote signs v as JSON under origin: a note any holder of the
// verifier key can check offline.
func (s *Service) signNote(origin string, v any) (string, error) {
	signer, err := note.NewSigner(s.signer)
	if err != nil {
		return "", fmt.Errorf("note signer: %w", err)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	n, err := note.Sign(&note.Note{Text: origin + "\n" + string(body) + "\n"}, signer)
	return string(n), err
}

// openNote checks a signed note made by signNote and decodes its body into
// v; origin gives the origin line v must carry.
func openNote(signed, verifierKey, what string, v any, origin func() string) error {
	ver, err := note.NewVerifier(verifierKey)
	if err != nil {
		return err
	}
	n, err := note.Open([]byte(signed), note.VerifierList(ver))
	if err != nil {
		return fmt.Errorf("%s does not verify: %w", what, err)
	}
	o, body, ok := strings.Cut(n.Text, "\n")
	if !ok || json.Unmarshal([]byte(body), v) != nil || o != origin() {
		return fmt.Errorf("%s: not a %s", what, what)
	}
	return nil
}

// VerifyCertificate checks a certificate's signature and returns it.
func VerifyCertificate(signed, verifierKey string) (Certificate, error) {
	var c Certificate
	err := openNote(signed, verifierKey, "erasure certificate", &c, func() string { return CertificateOrigin(c.Tenant) })
	return c, err
}

func (s *Service) recordCertificate(ctx context.Context, tenant string, by auditlog.Actor, c Certificate, signed string) {
	rec := auditlog.Record{TenantID: tenant, Time: c.CompletedAt, Actor: by, Action: "erasure.completed",
		Target: auditlog.Target{Type: "data_subject", ID: c.SubjectHash}, Outcome: "success", SourceService: "tenantscope-retention",
		Metadata: map[string]string{"request_id": c.Request, "certificate": signed}}
	if c.ChainRecordID != "" {
		if u, err := uuid.Parse(c.ChainRecordID); err == nil {
			rec.RecordID = u
		}
	}
	if !c.Verified {
		rec.Outcome, rec.Reason = "failure", "rows remained after the deletes"
	}
	if err := s.audit.Record(ctx, rec); err != nil {
		s.log.Error().Err(err).Str("tenant_id", tenant).Str("request_id", c.Request).Msg("could not chain an erasure certificate")
	}
}

func head(ctx context.Context, st interface {
	QueryRow(ctx context.Context, dest []any, q string, args ...any) error
}, tenant string) (ChainPos, error) {
	var p ChainPos
	err := st.QueryRow(ctx, []any{&p.Seq, &p.Hash}, "SELECT seq, hash FROM audit_records FINAL WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1", tenant)
	if err != nil && strings.Contains(err.Error(), "no rows") {
		return ChainPos{Hash: auditlog.GenesisHash}, nil
	}
	return p, err
}

// deadLetters counts (or deletes) the tenant's dead letters that name the
// subject anywhere in their body.
func (s *Service) deadLetters(ctx context.Context, tenant, subject string, remove bool) (int, error) {
	if s.js == nil {
		return 0, nil
	}
	stream, err := s.js.Stream(ctx, natsbus.DeadLetterStream)
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"deadletter." + tenant + ".>"}})
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return 0, err
	}
	n := 0
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return n, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if !strings.Contains(string(m.Data()), subject) {
				continue
			}
			n++
			if remove {
				md, err := m.Metadata()
				if err != nil {
					return n, err
				}
				if err := stream.DeleteMsg(ctx, md.Sequence.Stream); err != nil {
					return n, fmt.Errorf("dead letters: %w", err)
				}
			}
		}
		if got == 0 {
			return n, batch.Error()
		}
	}
}

func (s *Service) saveErasure(ctx context.Context, e Erasure, subject string) error {
	st, err := s.StoreOf(e.Tenant)
	if err != nil {
		return err
	}
	counts, _ := json.Marshal(e.Counts) //nolint:errcheck // plain map
	return st.Exec(ctx, `INSERT INTO erasure_requests (id, tenant_id, subject_hash, subject, status, detail, counts, certificate, requested_by, requested_at, deadline, completed_at, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, e.ID, e.Tenant, e.SubjectHash, subject, e.Status, e.Detail, string(counts), e.Certificate,
		e.RequestedBy, e.RequestedAt, e.Deadline, e.CompletedAt, uint64(s.Now().UnixNano()))
}

// Erasures lists a tenant's erasure requests, newest first.
func (s *Service) Erasures(ctx context.Context, tenant string) ([]Erasure, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		ID          string     `ch:"id"`
		Hash        string     `ch:"subject_hash"`
		Status      string     `ch:"status"`
		Detail      string     `ch:"detail"`
		Counts      string     `ch:"counts"`
		Certificate string     `ch:"certificate"`
		By          string     `ch:"requested_by"`
		At          time.Time  `ch:"requested_at"`
		Deadline    time.Time  `ch:"deadline"`
		Completed   *time.Time `ch:"completed_at"`
	}
	if err := st.Select(ctx, &rows, `SELECT id, subject_hash, status, detail, counts, certificate, requested_by, requested_at, deadline, completed_at
		FROM erasure_requests FINAL WHERE tenant_id = ? ORDER BY requested_at DESC`, tenant); err != nil {
		return nil, fmt.Errorf("erasure requests: %w", err)
	}
	out := make([]Erasure, 0, len(rows))
	for _, r := range rows {
		e := Erasure{ID: r.ID, Tenant: tenant, SubjectHash: r.Hash, Status: r.Status, Detail: r.Detail, Certificate: r.Certificate,
			RequestedBy: r.By, RequestedAt: r.At, Deadline: r.Deadline, CompletedAt: r.Completed, Counts: map[string]uint64{}}
		_ = json.Unmarshal([]byte(r.Counts), &e.Counts) //nolint:errcheck // written by saveErasure
		out = append(out, e)
	}
	return out, nil
}

// remind exports open requests due soon or overdue, and logs them.
func (s *Service) remind(ctx context.Context) {
	deadline := time.Duration(s.cfg.Retention.ErasureDeadline)
	for _, t := range s.cfg.Tenants {
		es, err := s.Erasures(ctx, t.ID)
		if err != nil {
			continue
		}
		soon, over := 0, 0
		for _, e := range es {
			if e.Status == "completed" {
				continue
			}
			left := e.Deadline.Sub(s.Now())
			switch {
			case left < 0:
				over++
				s.log.Warn().Str("tenant_id", t.ID).Str("request_id", e.ID).Time("deadline", e.Deadline).Msg("erasure request is overdue")
			case left < deadline/5:
				soon++
				s.log.Info().Str("tenant_id", t.ID).Str("request_id", e.ID).Time("deadline", e.Deadline).Msg("erasure request is due soon")
			}
		}
		erasureDue.WithLabelValues(t.ID, "due_soon").Set(float64(soon))
		erasureDue.WithLabelValues(t.ID, "overdue").Set(float64(over))
	}
}
