package collector

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/wire"
)

// TestRowsHintBelievesNoMoreThanTheBytesHold: a publisher's Batch-Items
// sizes how much room a batch reserves for rows, so a hostile header on a
// small message must not reserve room for rows its bytes cannot hold.
func TestRowsHintBelievesNoMoreThanTheBytesHold(t *testing.T) {
	h := nats.Header{}
	require.Equal(t, 1, rowsHint(h, 300), "a plain message is one row")
	h.Set(wire.BatchItemsHeader, "1000000000")
	require.Equal(t, 7, rowsHint(h, 100), "100 bytes cannot hold more than 7 rows of 16 bytes")
	require.Equal(t, maxRowsHint, rowsHint(h, 4<<20), "and never more than maxRowsHint")
	h.Set(wire.BatchItemsHeader, "512")
	require.Equal(t, 512, rowsHint(h, 150<<10), "an honest batch is believed")
	h.Set(wire.BatchItemsHeader, "-5")
	require.Equal(t, 1, rowsHint(h, 150<<10))
}

// TestAnEventBatchReservesABoundedRoom: a message's events get room made
// at once for what its Batch-Items says (as far as its bytes allow), but
// never for more than maxEventsAhead: a hostile header on a 1 MiB message
// would otherwise reserve room for 65,536 rows (15 MB) to decode one event.
func TestAnEventBatchReservesABoundedRoom(t *testing.T) {
	body := wire.AppendEvent(nil, wire.Event{ID: [16]byte{1}, Action: "order_created", Payload: []byte(`{}`)})
	s := &Service{redactors: map[string]*Redactor{}}
	s.cfg.defaults()
	m := Meta{Subject: Subject{Tenant: "acme", Service: "orders", Action: wire.ActionEvents}}
	h := nats.Header{}
	h.Set(wire.BatchItemsHeader, "1000000000")
	r, err := s.decodeEventBatch(m, body, rowsHint(h, 1<<20))
	require.NoError(t, err)
	require.Len(t, r.events, 1)
	require.LessOrEqual(t, cap(r.events), maxEventsAhead)
	r, err = s.decodeEventBatch(m, body, 512)
	require.NoError(t, err)
	require.Equal(t, 512, cap(r.events), "an honest batch's room is made at once")
}
