package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantscope/tenantscope/natsbus"
)

// ackWait is how long the load generator waits for a publish's
// acknowledgement before it publishes the message again.
const ackWait = 10 * time.Second

// republisher publishes asynchronously, as services do, and keeps what
// JetStream did not acknowledge within wait, or acknowledged from a
// stream other than the one it names, to publish again under the same
// Nats-Msg-Id (the stream's duplicate window keeps one copy), after wait. nats-server
// v2.15.2 can lose a publish acknowledgement that crosses an account
// import, or hand it to another publisher (see the SDK's AckWait): about
// one run of bench ingest in ten waited for ever on one before.
type republisher struct {
	js     jetstream.JetStream
	wait   time.Duration
	stream func(subject string) string
	mu     sync.Mutex
	again  []*nats.Msg
	err    error
	// acks counts, over every republisher sharing it, the
	// acknowledgements that never came and those from another stream.
	acks *lostAcks
}

// lostAcks counts the acknowledgements the load generator did not get:
// Lost never came, Foreign came from another stream. nats-server's
// duplicate reply token makes one of each (one publisher's
// acknowledgement goes to the other).
type lostAcks struct {
	Lost, Foreign atomic.Int64
}

func newRepublisher(conn *nats.Conn, stream func(subject string) string, acks *lostAcks, wait time.Duration) (*republisher, error) {
	r := &republisher{stream: stream, acks: acks, wait: wait}
	js, err := jetstream.New(conn,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(wait),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			if errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				r.acks.Lost.Add(1)
				r.keep(m)
				return
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.err = errors.Join(r.err, fmt.Errorf("publish %s: %w", m.Subject, err))
		}),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			if ack.Stream != r.stream(m.Subject) {
				r.acks.Foreign.Add(1)
				r.keep(m)
			}
		}))
	if err != nil {
		return nil, err
	}
	r.js = js
	return r, nil
}

func (r *republisher) keep(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.again = append(r.again, m)
}

func (r *republisher) publish(m *nats.Msg) error {
	_, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
	return err
}

// complete waits for every acknowledgement, then publishes again, one at a
// time, what was kept, until its acknowledgement names its stream.
func (r *republisher) complete(ctx context.Context) error {
	select {
	case <-r.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	again, err := r.again, r.err
	r.again = nil
	r.mu.Unlock()
	if err != nil {
		return err
	}
	for _, m := range again {
		if err := r.once(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (r *republisher) once(ctx context.Context, m *nats.Msg) error {
	var err error
	for range 5 {
		pctx, cancel := context.WithTimeout(ctx, r.wait)
		var ack *jetstream.PubAck
		ack, err = r.js.PublishMsg(pctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		cancel()
		if err == nil && ack.Stream == r.stream(m.Subject) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("acknowledged by stream %s", ack.Stream)
		}
	}
	return fmt.Errorf("republish %s: %w", m.Subject, err)
}

// streamOf is the stream that stores subject: a tenant's ingest stream,
// or the reference bus's scratch stream.
func streamOf(subject string) string {
	if rest, ok := strings.CutPrefix(subject, "tenant."); ok {
		tenant, _, _ := strings.Cut(rest, ".")
		return natsbus.IngestStream(tenant)
	}
	return benchBusStream
}

// benchBusStream is the reference bus's scratch stream.
const benchBusStream = "BENCH_BUS"
