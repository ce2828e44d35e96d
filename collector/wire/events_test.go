package wire_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/wire"
)

func TestEventBatchRoundTrip(t *testing.T) {
	in := []wire.Event{
		{ID: [16]byte{1}, Action: "order_created", CorrelationID: "c-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Payload: []byte(`{"a":1}`)},
		{ID: [16]byte{2}, Action: "order_paid", Payload: []byte(`{}`)},
		{ID: [16]byte{3}, Action: "x", Payload: bytes.Repeat([]byte("y"), 300)}, // a two-byte length
	}
	var body []byte
	size := 0
	for _, e := range in {
		body = wire.AppendEvent(body, e)
		size += wire.EventSize(e)
	}
	require.Len(t, body, size+5, "EventSize is what AppendEvent adds, plus the 5-byte header once")
	var out []wire.Event
	n, err := wire.DecodeEvents(body, func(i int, e wire.Event) error {
		require.Equal(t, len(out), i)
		out = append(out, e)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, in, out)
}

func TestEventBatchRefusesMalformedBodies(t *testing.T) {
	good := wire.AppendEvent(nil, wire.Event{ID: [16]byte{1}, Action: "a", Payload: []byte(`{}`)})
	for name, body := range map[string][]byte{
		"empty":           nil,
		"json":            []byte(`{"a":1}`),
		"header only":     good[:5],
		"truncated id":    good[:10],
		"truncated field": good[:len(good)-1],
		"huge length":     append(append([]byte{}, good[:21]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := wire.DecodeEvents(body, func(int, wire.Event) error { return nil })
			require.ErrorIs(t, err, wire.ErrEventBatch)
		})
	}
	stop := errors.New("stop")
	_, err := wire.DecodeEvents(good, func(int, wire.Event) error { return stop })
	require.ErrorIs(t, err, stop, "the caller's error comes back as it is")
}

// FuzzDecodeEvents: any bytes: no panic, either an error wrapping
// ErrEventBatch or items, and a body re-encoded from the items decodes to
// the same items (lengths may be re-encoded shorter: uvarints are read in
// any length, written in the shortest).
func FuzzDecodeEvents(f *testing.F) {
	f.Add(wire.AppendEvent(nil, wire.Event{ID: [16]byte{9}, Action: "a", CorrelationID: "c", Payload: []byte(`{"x":1}`)}))
	f.Add([]byte("TSEB\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		var items []wire.Event
		n, err := wire.DecodeEvents(body, func(_ int, e wire.Event) error {
			items = append(items, e)
			return nil
		})
		if err != nil {
			if !errors.Is(err, wire.ErrEventBatch) {
				t.Fatalf("error %v does not wrap ErrEventBatch", err)
			}
			return
		}
		if n != len(items) || n == 0 {
			t.Fatalf("n %d, items %d", n, len(items))
		}
		var again []byte
		for _, e := range items {
			again = wire.AppendEvent(again, e)
		}
		var back []wire.Event
		if _, err := wire.DecodeEvents(again, func(_ int, e wire.Event) error {
			back = append(back, e)
			return nil
		}); err != nil {
			t.Fatalf("re-encoded body: %v", err)
		}
		if len(back) != len(items) {
			t.Fatalf("re-encoded body decodes to %d items, not %d", len(back), len(items))
		}
		for i := range back {
			if back[i].ID != items[i].ID || back[i].Action != items[i].Action || back[i].CorrelationID != items[i].CorrelationID ||
				back[i].TraceParent != items[i].TraceParent || !bytes.Equal(back[i].Payload, items[i].Payload) {
				t.Fatalf("item %d differs after re-encoding", i)
			}
		}
	})
}

// FuzzCountEventsAgreesWithDecode: CountEvents is how many events
// DecodeEvents hands over, for any body.
func FuzzCountEventsAgreesWithDecode(f *testing.F) {
	var body []byte
	for i := range 3 {
		body = wire.AppendEvent(body, wire.Event{ID: [16]byte{byte(i)}, Action: "a", Payload: []byte(`{}`)})
	}
	f.Add(body)
	f.Add(body[:len(body)-1])
	f.Add([]byte("TSEB\x01"))
	f.Add([]byte("nope"))
	f.Fuzz(func(t *testing.T, b []byte) {
		decoded := 0
		_, _ = wire.DecodeEvents(b, func(int, wire.Event) error { decoded++; return nil }) //nolint:errcheck // counted either way
		if got := wire.CountEvents(b); got != decoded {
			t.Fatalf("%q: CountEvents %d, DecodeEvents handed %d", b, got, decoded)
		}
	})
}
