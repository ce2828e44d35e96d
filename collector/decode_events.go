package collector

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tenantscope/tenantscope/collector/wire"
)

// Event batches: a message on tenant.{t}.{service}._events holds many
// domain events of one service (wire.EncodeEvents), each with its own id,
// action, correlation id and traceparent. Every event passes the checks a
// plain one-event message on tenant.{t}.{service}.{action} would (action,
// UTF-8, JSON object, fields), is redacted, encrypted and given its
// retention as one; an event that fails them is dead-lettered alone, as
// the plain message it would have been, while the others are stored.

// ReasonInvalidBatch is a batch message whose body is not a batch.
const ReasonInvalidBatch Reason = "invalid_batch"

// checkAction is wire.CheckAction with the dead-letter reason: reserved
// actions are unknown_reserved_action, the rest bad_subject.
func checkAction(a string) error {
	err := wire.CheckAction(a)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wire.ErrActionReserved):
		return bad(ReasonUnknownAction, "%v", err)
	default:
		return bad(ReasonBadSubject, "%v", err)
	}
}

// decodeEventBatch decodes a batch of domain events, making room for hint
// of them at once (rowsHint: what the message says it holds, as far as its
// bytes allow). A body that is not a batch is a DecodeError (the whole
// message is dead-lettered); an event that fails its checks is a BadItem.
func (s *Service) decodeEventBatch(m Meta, body []byte, hint int) (rows, error) {
	r := rows{events: make([]Event, 0, min(hint, maxEventsAhead))}
	_, err := wire.DecodeEvents(body, func(i int, e wire.Event) error {
		ev, err := s.decodeBatchEvent(m, e)
		if err == nil {
			r.events = append(r.events, ev)
			return nil
		}
		return r.badEvent(i, e, err)
	})
	if errors.Is(err, wire.ErrEventBatch) {
		return rows{}, bad(ReasonInvalidBatch, "%v", err)
	}
	return r, err
}

// maxEventsAhead bounds the room decodeEventBatch makes for a message's
// events at once: a row takes about 230 bytes in hand and may come from 16
// bytes of a message whose Batch-Items says what its publisher likes, so
// the hint alone would let a 1 MiB message reserve 15 MB. Batches larger
// than this (the SDK sends 512 events) grow as they are decoded.
const maxEventsAhead = 4096

// badEvent records a batch's event that failed its checks (a DecodeError)
// as a BadItem, and returns any other error. It is apart from
// decodeEventBatch so that only a bad event's copies go to the heap.
func (r *rows) badEvent(i int, e wire.Event, err error) error {
	var de *DecodeError
	if !errors.As(err, &de) {
		return err
	}
	r.bad = append(r.bad, BadItem{Index: i, Err: de, Data: e.Payload, Event: &e})
	return nil
}

// decodeBatchEvent is one event of a batch, checked, redacted, encrypted
// and with its retention, as decode does a plain event message.
func (s *Service) decodeBatchEvent(m Meta, e wire.Event) (Event, error) {
	if err := checkAction(e.Action); err != nil {
		return Event{}, err
	}
	id := uuid.UUID(e.ID)
	if id == uuid.Nil {
		return Event{}, bad(ReasonInvalidField, "event id is the nil UUID")
	}
	m.Action, m.MsgID, m.eventID, m.CorrelationID, m.TraceParent = e.Action, "", id, e.CorrelationID, e.TraceParent
	return s.eventRow(m, e.Payload)
}

// eventRow is an event's row from its JSON, as a plain message or an event
// of a batch: redacted by the tenant's rules, decoded, its personal fields
// encrypted (crypto-shredding) and with its retention (holds match the row
// as stored, as the retention engine's queries do).
func (s *Service) eventRow(m Meta, payload []byte) (Event, error) {
	body, err := s.redactors[m.Tenant].Apply(payload)
	if err != nil {
		return Event{}, bad(ReasonInvalidJSON, "redaction: %v", err)
	}
	ev, err := DecodeEvent(m, body, 0)
	if err != nil {
		return Event{}, err
	}
	if s.cfg.ShredEvent != nil {
		// body is what ev.Payload was copied from: most tenants have no
		// personal fields, and their payload comes back as it went, so it
		// is not copied twice more for nothing.
		p, err := s.cfg.ShredEvent(context.Background(), ev.TenantID, ev.Actor, body)
		if err != nil {
			return Event{}, fmt.Errorf("encrypt personal fields: %w", err)
		}
		if !sameSlice(p, body) {
			ev.Payload = string(p)
		}
	}
	ev.RetentionDays = s.retention(m.Tenant, SignalEvent, "events", ev.Time, eventField(ev.Actor, ev.Entity, ev.Payload))
	return ev, nil
}

// sameSlice reports whether a and b are the same bytes in memory (not only
// equal ones).
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// eventDeadLetter turns the dead letter of a batch's event into the plain
// message the event would have been: its own subject, id, correlation id
// and traceparent, so a replay stores it under its id.
func eventDeadLetter(out *nats.Msg, batchSubject string, e *wire.Event) {
	sub, err := ParseSubject(batchSubject)
	if err == nil {
		out.Header.Set("Deadletter-Subject", "tenant."+sub.Tenant+"."+sub.Service+"."+e.Action)
	}
	out.Header.Set("Deadletter-Msg-Id", uuid.UUID(e.ID).String())
	out.Header.Set("Deadletter-Batch-Subject", batchSubject)
	for _, h := range []string{wire.BatchItemsHeader, wire.BatchOffsetHeader, "Correlation-Id", "traceparent", "Traceparent"} {
		out.Header.Del(h)
	}
	if e.CorrelationID != "" {
		out.Header.Set("Correlation-Id", e.CorrelationID)
	}
	if e.TraceParent != "" {
		out.Header.Set("traceparent", e.TraceParent)
	}
	// One dead letter per event, even when the batch is redelivered or
	// re-published; the event's id is the publisher's choice, so it is
	// keyed by the batch's tenant too: another tenant sending the same id
	// must not make this dead letter a duplicate (dropped, and the event
	// with it, since the batch is acked).
	tenant := batchSubject
	if err == nil {
		tenant = sub.Tenant
	}
	out.Header.Set(nats.MsgIdHdr, "dl-"+tenant+"-"+uuid.UUID(e.ID).String())
}
