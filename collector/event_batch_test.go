package collector_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/collector/wire"
	"github.com/tenantscope/tenantscope/config"
)

// An event batch: every good event is stored under its own id, with its own
// action and correlation id; a bad one is dead-lettered alone, as the plain
// message it would have been; the batch delivered again (a redelivery, a
// re-publish) stores nothing twice and dead-letters nothing twice; a body
// that is not a batch is dead-lettered whole.
func TestEventBatchStoresEachEventOnceAndDeadLettersTheBadOneAlone(t *testing.T) {
	p := collectortest.Start(t, nil, "acme", "globex")
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)

	// Version 7 ids, as the SDK gives: an event without a time takes its id's.
	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	events := []wire.Event{
		{ID: ids[0], Action: "order_created", CorrelationID: "c-0", Payload: []byte(`{"actor":"u1","entity":"o-1","time":"2026-11-01T10:00:00Z"}`)},
		{ID: ids[1], Action: "order_paid", CorrelationID: "c-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Payload: []byte(`{"actor":"u2"}`)},
		{ID: ids[2], Action: "order_created", Payload: []byte(`{"actor":"u3", "note": not json}`)},
		{ID: ids[3], Action: "a.b", Payload: []byte(`{"actor":"u4"}`)},
		{ID: ids[4], Action: "_audit", Payload: []byte(`{"actor":"u5"}`)},
		{ID: ids[5], Action: "order_shipped", Payload: []byte(`{"actor":"u6","tenant_id":"globex"}`)},
	}
	var body []byte
	for _, e := range events {
		body = wire.AppendEvent(body, e)
	}
	publish := func(data []byte) {
		m := nats.NewMsg("tenant.acme.shop." + wire.ActionEvents)
		m.Header.Set("Tenant-Id", "acme")
		m.Header.Set(nats.MsgIdHdr, uuid.NewString())
		m.Header.Set(wire.BatchItemsHeader, "6")
		m.Data = data
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	publish(body)
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") == 3 }, 30*time.Second, 50*time.Millisecond)
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM events WHERE event_id = ? AND action = 'order_created' AND correlation_id = 'c-0' AND actor = 'u1' AND entity = 'o-1' AND time = '2026-11-01 10:00:00'", ids[0]))
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM events WHERE event_id = ? AND action = 'order_paid' AND correlation_id = 'c-1' AND trace_id = '0af7651916cd43dd8448eb211c80319c'", ids[1]))
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM events WHERE event_id = ? AND tenant_id = 'acme'", ids[5]), "a field naming another tenant does not move the event")
	sec, nsec := ids[1].Time().UnixTime()
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM events WHERE event_id = ? AND toUnixTimestamp64Milli(time) = ?", ids[1], time.Unix(sec, nsec).UnixMilli()), "an event without a time takes its id's")
	require.Zero(t, p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'globex'"))

	var dls []collector.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme"})
		return err == nil && len(dls) == 3
	}, 10*time.Second, 50*time.Millisecond, "dead letters: %d", len(dls))
	want := map[uuid.UUID]struct{ reason, subject string }{
		ids[2]: {"invalid_json", "tenant.acme.shop.order_created"},
		ids[3]: {"bad_subject", "tenant.acme.shop.a.b"},
		ids[4]: {"unknown_reserved_action", "tenant.acme.shop._audit"},
	}
	for _, d := range dls {
		id, err := uuid.Parse(d.Header.Get("Deadletter-Msg-Id"))
		require.NoError(t, err)
		w, ok := want[id]
		require.True(t, ok, "dead letter of event %s", id)
		require.Equal(t, w.reason, d.Reason)
		require.Equal(t, w.subject, d.Subject, "dead-lettered as the plain message it would have been")
		require.Equal(t, string(events[indexOf(ids, id)].Payload), string(d.Data), "the event alone, not the batch")
		require.Empty(t, d.Header.Get(wire.BatchItemsHeader))
	}

	// The same batch again: nothing stored twice, nothing dead-lettered twice.
	publish(body)
	// And a body that is not a batch: dead-lettered whole.
	publish([]byte(`{"not":"a batch"}`))
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme", Reason: string(collector.ReasonInvalidBatch)})
		return err == nil && len(dls) == 1
	}, 30*time.Second, 50*time.Millisecond)
	require.EqualValues(t, 3, p.Count(t, "SELECT count() FROM events FINAL"))
	all, err := collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme"})
	require.NoError(t, err)
	require.Len(t, all, 4, "three events and one bad batch")
}

func indexOf(ids []uuid.UUID, id uuid.UUID) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// The worst publisher of a batch: events with the nil id, actions that are
// not one subject token (a NUL, a space, a wildcard, a tab, 500 KB), a
// far-future time, and a Batch-Items header that understates the batch.
// Each bad event is dead-lettered alone with its reason; the good ones are
// stored under the subject's tenant; nothing else is stored.
func TestEventBatchRefusesHostileEvents(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	good, future := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	events := []wire.Event{
		{ID: good, Action: "order_created", Payload: []byte(`{"actor":"u1"}`)},
		{ID: future, Action: "order_created", Payload: []byte(`{"actor":"u2","time":"9999-12-31T23:59:59Z"}`)},
		{ID: uuid.Nil, Action: "order_created", Payload: []byte(`{"actor":"nil-id"}`)},
		{ID: uuid.Must(uuid.NewV7()), Action: "a\x00b", Payload: []byte(`{}`)},
		{ID: uuid.Must(uuid.NewV7()), Action: "a b", Payload: []byte(`{}`)},
		{ID: uuid.Must(uuid.NewV7()), Action: "*", Payload: []byte(`{}`)},
		{ID: uuid.Must(uuid.NewV7()), Action: "a\tb", Payload: []byte(`{}`)},
		{ID: uuid.Must(uuid.NewV7()), Action: strings.Repeat("x", 500<<10), Payload: []byte(`{}`)},
	}
	var body []byte
	for _, e := range events {
		body = wire.AppendEvent(body, e)
	}
	publishUnderstatedBatch(t, js, body)

	var dls []collector.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme"})
		return err == nil && len(dls) == 6
	}, 30*time.Second, 50*time.Millisecond, "dead letters: %d (%v), events %d", len(dls), dls, p.Count(t, "SELECT count() FROM events"))
	reasons := map[string]int{}
	for _, d := range dls {
		reasons[d.Reason]++
		require.LessOrEqual(t, len(d.Detail), 1024, "a 500 KB action is not copied into the detail")
	}
	require.Equal(t, map[string]int{"invalid_field": 1, "bad_subject": 5}, reasons)
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") >= 1 }, 30*time.Second, 50*time.Millisecond)
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM events WHERE event_id = ? AND tenant_id = 'acme'", good))
	// A far-future time is the publisher's to give (in the JSON, or in a
	// UUIDv7 id); ClickHouse's DateTime64 bounds it, and the row is its.
	require.LessOrEqual(t, p.Count(t, "SELECT count() FROM events"), uint64(2))
}

// A message as large as the server takes, and bad: its dead letter (the
// body and more headers) would not fit; it is published cut, saying so,
// instead of handing the message back forever.
func TestDeadLetterOfAMessageAtTheSizeLimitFits(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx := context.Background()
	nc := p.TenantConn(t, "acme")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	m := nats.NewMsg("tenant.acme.shop.order_created")
	m.Header.Set("Tenant-Id", "acme")
	m.Data = bytes.Repeat([]byte("x"), int(nc.MaxPayload())-200) // not JSON
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)
	var dls []collector.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: "acme"})
		return err == nil && len(dls) == 1
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "invalid_json", dls[0].Reason)
	require.Equal(t, strconv.Itoa(len(m.Data)), dls[0].Header.Get("Deadletter-Truncated"))
	require.Less(t, len(dls[0].Data), len(m.Data))
}

// Two tenants' batches holding a bad event with the same id (ids are the
// publishers' choice): each tenant's dead letter is kept. Keyed by the id
// alone, the second was dropped by the dead-letter stream's duplicate window
// and its event lost, the batch being acked.
func TestADeadLetteredEventIsNotAnotherTenantsDuplicate(t *testing.T) {
	p := collectortest.Start(t, nil, "acme", "globex")
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	for _, tenant := range []string{"acme", "globex"} {
		js, err := jetstream.New(p.TenantConn(t, tenant))
		require.NoError(t, err)
		m := nats.NewMsg("tenant." + tenant + ".shop." + wire.ActionEvents)
		m.Header.Set("Tenant-Id", tenant)
		m.Header.Set(nats.MsgIdHdr, uuid.NewString())
		m.Data = wire.AppendEvent(nil, wire.Event{ID: id, Action: "order_created", Payload: []byte(`{"actor": not json}`)})
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	for _, tenant := range []string{"acme", "globex"} {
		require.Eventually(t, func() bool {
			dls, err := collector.ListDeadLetters(ctx, p.JS, collector.DeadLetterFilter{Tenant: tenant})
			return err == nil && len(dls) == 1 && dls[0].Header.Get("Deadletter-Msg-Id") == id.String()
		}, 15*time.Second, 50*time.Millisecond, "tenant %s's dead letter", tenant)
	}
}

// A batch that understates its Batch-Items header pays for every event it
// held: the quota charges the rest once the batch is decoded, so the
// tenant's next message waits for it (before, a batch of 100 events said
// "1" and cost 1 against events_per_second).
func TestAnUnderstatedBatchPaysForEveryEvent(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) { c.Tenants[0].Quota.EventsPerSecond = 20 }, "acme")
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	var body []byte
	for range 100 {
		body = wire.AppendEvent(body, wire.Event{ID: uuid.Must(uuid.NewV7()), Action: "order_created", Payload: []byte(`{"actor":"u1"}`)})
	}
	publishUnderstatedBatch(t, js, body)
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") == 100 }, 30*time.Second, 50*time.Millisecond)
	throttled := func() float64 {
		mfs, err := p.Registry.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "tenantscope_collector_throttled_total" {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "tenant" && l.GetValue() == "acme" {
							return m.GetCounter().GetValue()
						}
					}
				}
			}
		}
		return 0
	}
	require.Zero(t, throttled(), "the batch itself was charged what it claimed")

	one := nats.NewMsg("tenant.acme.shop.order_created")
	one.Header.Set("Tenant-Id", "acme")
	one.Data = []byte(`{"actor":"after"}`)
	_, err = js.PublishMsg(ctx, one)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events WHERE actor = 'after'") == 1 }, 30*time.Second, 50*time.Millisecond)
	require.EqualValues(t, 1, throttled(), "the next message waited for the 99 events the batch did not declare")
}

// publishUnderstatedBatch publishes body as one of acme's event batches
// whose Batch-Items header says it holds one event.
func publishUnderstatedBatch(t *testing.T, js jetstream.JetStream, body []byte) {
	t.Helper()
	m := nats.NewMsg("tenant.acme.shop." + wire.ActionEvents)
	m.Header.Set("Tenant-Id", "acme")
	m.Header.Set(wire.BatchItemsHeader, "1")
	m.Data = body
	_, err := js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}
