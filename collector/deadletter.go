package collector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantscope/tenantscope/natsbus"
)

// DeadLetter is one message in the dead-letter stream.
type DeadLetter struct {
	Seq     uint64
	Time    time.Time
	Tenant  string
	Reason  string
	Detail  string
	Subject string // the original subject
	Header  nats.Header
	Data    []byte
}

// DeadLetterFilter selects dead letters; empty fields match everything.
type DeadLetterFilter struct {
	Tenant string
	Reason string
	Limit  int
}

func (f DeadLetterFilter) subject() string {
	t, r := "*", "*"
	if f.Tenant != "" {
		t = f.Tenant
	}
	if f.Reason != "" {
		r = f.Reason
	}
	return natsbus.DeadLetterPrefix + "." + t + "." + r
}

func fromRaw(seq uint64, t time.Time, h nats.Header, data []byte) DeadLetter {
	tenant := ""
	if sub, err := ParseSubject(h.Get("Deadletter-Subject")); err == nil {
		tenant = sub.Tenant
	}
	return DeadLetter{Seq: seq, Time: t, Tenant: tenant, Reason: h.Get("Deadletter-Reason"), Detail: h.Get("Deadletter-Detail"),
		Subject: h.Get("Deadletter-Subject"), Header: h, Data: data}
}

// ListDeadLetters reads the dead letters matching f, oldest first.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	cons, err := js.OrderedConsumer(ctx, natsbus.DeadLetterStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject()}})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	want := min(int(info.NumPending), f.Limit)
	out := make([]DeadLetter, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, fromRaw(md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data()))
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

// GetDeadLetter reads one dead letter by its stream sequence.
func GetDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	st, err := js.Stream(ctx, natsbus.DeadLetterStream)
	if err != nil {
		return DeadLetter{}, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return fromRaw(m.Sequence, m.Time, m.Header, m.Data), nil
}

// Replay publishes a dead letter again on its original subject with its
// original headers, so the collector validates it anew (and dead-letters it
// again if it is still bad), then deletes it from the dead-letter stream.
func Replay(ctx context.Context, js jetstream.JetStream, dl DeadLetter) error {
	if dl.Subject == "" {
		return fmt.Errorf("dead letter %d has no original subject", dl.Seq)
	}
	m := nats.NewMsg(dl.Subject)
	for k, vs := range dl.Header {
		if len(k) > 11 && k[:11] == "Deadletter-" {
			continue
		}
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	// A replay of the same dead letter inside the duplicate window is one
	// message; the row keeps the id the message was first published with.
	m.Header.Set(nats.MsgIdHdr, "replay-"+strconv.FormatUint(dl.Seq, 10))
	if id := dl.Header.Get("Deadletter-Msg-Id"); id != "" {
		m.Header.Set(OriginalMsgIDHeader, id)
	}
	m.Data = dl.Data
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("replay dead letter %d: %w", dl.Seq, err)
	}
	st, err := js.Stream(ctx, natsbus.DeadLetterStream)
	if err != nil {
		return err
	}
	if err := st.DeleteMsg(ctx, dl.Seq); err != nil {
		return fmt.Errorf("replayed dead letter %d but could not delete it: %w", dl.Seq, err)
	}
	return nil
}
