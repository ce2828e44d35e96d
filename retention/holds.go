package retention

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/auditlog"
)

// Hold is a legal hold: while it is active nothing it covers is removed by
// TTL, purge or erasure.
type Hold struct {
	ID       string     `ch:"id" json:"id"`
	Tenant   string     `ch:"tenant_id" json:"tenant"`
	Kind     string     `ch:"kind" json:"kind"` // tenant, subject, time_range
	Subject  string     `ch:"subject" json:"subject,omitempty"`
	From     *time.Time `ch:"from_time" json:"from,omitempty"`
	To       *time.Time `ch:"to_time" json:"to,omitempty"`
	Reason   string     `ch:"reason" json:"reason"`
	PlacedBy string     `ch:"placed_by" json:"placed_by"`
	PlacedAt time.Time  `ch:"placed_at" json:"placed_at"`
	LiftedBy string     `ch:"lifted_by" json:"lifted_by,omitempty"`
	LiftedAt *time.Time `ch:"lifted_at" json:"lifted_at,omitempty"`
	Version  uint64     `ch:"version" json:"-"`
}

// Active reports whether h still holds.
func (h Hold) Active() bool { return h.LiftedAt == nil }

// Holds lists a tenant's holds, newest first.
func (s *Service) Holds(ctx context.Context, tenant string) ([]Hold, error) {
	st, err := s.StoreOf(tenant)
	if err != nil {
		return nil, err
	}
	var hs []Hold
	if err := st.Select(ctx, &hs, `SELECT id, tenant_id, kind, subject, from_time, to_time, reason, placed_by, placed_at, lifted_by, lifted_at, version
		FROM legal_holds FINAL WHERE tenant_id = ? ORDER BY placed_at DESC`, tenant); err != nil {
		return nil, fmt.Errorf("legal holds: %w", err)
	}
	return hs, nil
}

// PlaceHold places a hold (a reason is required) and marks what it covers
// at once.
func (s *Service) PlaceHold(ctx context.Context, tenant, kind, subject string, from, to *time.Time, reason string, by auditlog.Actor) (Hold, error) {
	reason = strings.TrimSpace(reason)
	var problems []string
	if reason == "" {
		problems = append(problems, "a reason is required")
	}
	switch kind {
	case "tenant":
		subject, from, to = "", nil, nil
	case "subject":
		if strings.TrimSpace(subject) == "" {
			problems = append(problems, "a subject hold names the subject's identifier")
		}
		from, to = nil, nil
	case "time_range":
		if from == nil || to == nil || !to.After(*from) {
			problems = append(problems, "a time_range hold needs from < to")
		}
		subject = ""
	default:
		problems = append(problems, fmt.Sprintf("kind %q is not tenant, subject or time_range", kind))
	}
	if len(problems) > 0 {
		return Hold{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	var h Hold
	err := s.exclusive(ctx, tenant, "hold placed", func() error {
		st, release, err := s.change(tenant)
		if err != nil {
			return err
		}
		defer release()
		now := s.Now().UTC().Truncate(time.Millisecond)
		h = Hold{ID: newID("hold_"), Tenant: tenant, Kind: kind, Subject: subject, From: from, To: to, Reason: reason, PlacedBy: by.ID, PlacedAt: now, Version: uint64(now.UnixNano())}
		if err := s.writeHold(ctx, st, h); err != nil {
			h = Hold{}
			return err
		}
		s.record(ctx, tenant, by, "retention.hold_placed", "legal_hold", h.ID, reason, map[string]any{"after": map[string]any{"kind": kind, "subject": subject, "from": from, "to": to}}, nil)
		if _, err := s.apply(ctx, tenant, "hold placed", by); err != nil {
			return fmt.Errorf("hold placed; marking its data failed (the next purge run retries): %w", err)
		}
		return nil
	})
	return h, err
}

// LiftHold lifts an active hold; its data returns to its policy (and what
// is past it goes at the purge run this starts).
func (s *Service) LiftHold(ctx context.Context, tenant, id, reason string, by auditlog.Actor) (Hold, error) {
	if strings.TrimSpace(reason) == "" {
		return Hold{}, fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	var out Hold
	err := s.exclusive(ctx, tenant, "hold lifted", func() error {
		st, release, err := s.change(tenant)
		if err != nil {
			return err
		}
		defer release()
		hs, err := s.Holds(ctx, tenant)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.ID != id {
				continue
			}
			out = h
			if !h.Active() {
				return fmt.Errorf("%w: hold %s was lifted by %s", ErrConflict, id, h.LiftedBy)
			}
			now := s.Now().UTC().Truncate(time.Millisecond)
			h.LiftedBy, h.LiftedAt, h.Version = by.ID, &now, uint64(now.UnixNano())
			if err := s.writeHold(ctx, st, h); err != nil {
				return err
			}
			out = h
			s.record(ctx, tenant, by, "retention.hold_lifted", "legal_hold", h.ID, reason, map[string]any{"before": map[string]any{"active": true}, "after": map[string]any{"active": false}}, nil)
			if _, err := s.apply(ctx, tenant, "hold lifted", by); err != nil {
				return fmt.Errorf("hold lifted; releasing its data failed (the next purge run retries): %w", err)
			}
			return nil
		}
		return fmt.Errorf("%w: no hold %s in tenant %s", ErrNotFound, id, tenant)
	})
	return out, err
}

func (s *Service) writeHold(ctx context.Context, st interface {
	Exec(ctx context.Context, q string, args ...any) error
}, h Hold) error {
	if err := st.Exec(ctx, `INSERT INTO legal_holds (id, tenant_id, kind, subject, from_time, to_time, reason, placed_by, placed_at, lifted_by, lifted_at, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, h.ID, h.Tenant, h.Kind, h.Subject, h.From, h.To, h.Reason, h.PlacedBy, h.PlacedAt, h.LiftedBy, h.LiftedAt, h.Version); err != nil {
		return fmt.Errorf("legal hold: %w", err)
	}
	return nil
}

// heldWhere is the condition, for a signal's table, of the rows the active
// holds cover ("0" when none).
func (s *Service) heldWhere(signal string, holds []Hold) (string, []any, error) {
	t := tables[signal]
	var conds []string
	var args []any
	for _, h := range holds {
		if !h.Active() {
			continue
		}
		switch h.Kind {
		case "tenant":
			return "1", nil, nil
		case "subject":
			c, a, err := s.subject(signal, h.Subject)
			if err != nil {
				return "", nil, err
			}
			if c != "" {
				conds, args = append(conds, c), append(args, a...)
			}
		case "time_range":
			conds = append(conds, "("+t.timeCol+" >= fromUnixTimestamp64Milli(?, 'UTC') AND "+t.timeCol+" < fromUnixTimestamp64Milli(?, 'UTC'))")
			args = append(args, h.From.UnixMilli(), h.To.UnixMilli())
		}
	}
	if len(conds) == 0 {
		return "0", nil, nil
	}
	return "(" + strings.Join(conds, " OR ") + ")", args, nil
}
