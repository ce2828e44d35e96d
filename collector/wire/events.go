package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ActionEvents is the reserved action of event batches: a message on
// tenant.{tenant}.{service}._events holds many domain events of one
// service, each with its own id, action, correlation id and traceparent
// (EncodeEvents). The SDK publishes batches by default; a plain message on
// tenant.{tenant}.{service}.{action} is still one event.
const ActionEvents = "_events"

// eventsMagic starts an event batch body; the last byte is the version.
var eventsMagic = []byte("TSEB\x01")

// MaxBatchItems bounds how many items one batch message may hold.
const MaxBatchItems = 100_000

// Event is one domain event of a batch.
type Event struct {
	// ID is the event's id (a UUID): the row's event_id, the same on
	// every redelivery and replay.
	ID [16]byte
	// Action is the event's action, as the last token of a plain
	// message's subject would be.
	Action        string
	CorrelationID string
	TraceParent   string
	// Payload is the event's JSON object.
	Payload []byte
}

// AppendEvent appends one event to a batch body (started with the magic
// when dst is empty).
func AppendEvent(dst []byte, e Event) []byte {
	if len(dst) == 0 {
		dst = append(dst, eventsMagic...)
	}
	dst = append(dst, e.ID[:]...)
	for _, s := range []string{e.Action, e.CorrelationID, e.TraceParent} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Payload)))
	return append(dst, e.Payload...)
}

// EventSize is how many bytes AppendEvent adds for e (besides the magic).
func EventSize(e Event) int {
	n := 16
	for _, l := range []int{len(e.Action), len(e.CorrelationID), len(e.TraceParent), len(e.Payload)} {
		n += uvarintLen(uint64(l)) + l
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// CountEvents is how many events a batch body holds, read from its
// length prefixes without decoding them (as many as are whole, for a
// malformed body; 0 for a body that is not a batch). The collector bounds
// its batches' rows with it before it decodes them.
func CountEvents(body []byte) int {
	rest, ok := bytes.CutPrefix(body, eventsMagic)
	if !ok {
		return 0
	}
	n := 0
	for len(rest) > 0 && n < MaxBatchItems {
		var err error
		if _, _, rest, err = nextEvent(rest, n); err != nil {
			break
		}
		n++
	}
	return n
}

// nextEvent reads the framing of the event that starts rest (the i-th):
// its 16-byte id and its four length-prefixed fields (action, correlation
// id, traceparent, payload), and returns what follows it.
func nextEvent(rest []byte, i int) (id []byte, fields [4][]byte, after []byte, err error) {
	if len(rest) < 16 {
		return nil, fields, nil, fmt.Errorf("%w: item %d: truncated id", ErrEventBatch, i)
	}
	id, rest = rest[:16], rest[16:]
	for f := range fields {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return nil, fields, nil, fmt.Errorf("%w: item %d: field %d overruns the body", ErrEventBatch, i, f)
		}
		fields[f] = rest[k : k+int(n)]
		rest = rest[k+int(n):]
	}
	return id, fields, rest, nil
}

// ErrEventBatch is wrapped by every error of DecodeEvents.
var ErrEventBatch = errors.New("not an event batch")

// DecodeEvents calls fn for each event of a batch body, in order. The
// events' strings and payloads point into body. A malformed body is an
// error wrapping ErrEventBatch and names the item it stopped at; the items
// before it were handed to fn.
func DecodeEvents(body []byte, fn func(i int, e Event) error) (int, error) {
	rest, ok := bytes.CutPrefix(body, eventsMagic)
	if !ok {
		return 0, fmt.Errorf("%w: the body does not start with the batch header", ErrEventBatch)
	}
	i := 0
	// The events of a batch mostly share an action: the last one's string
	// is reused rather than allocated again.
	var action string
	for ; len(rest) > 0; i++ {
		if i >= MaxBatchItems {
			return i, fmt.Errorf("%w: more than %d items", ErrEventBatch, MaxBatchItems)
		}
		id, fields, after, err := nextEvent(rest, i)
		if err != nil {
			return i, err
		}
		rest = after
		var e Event
		copy(e.ID[:], id)
		if string(fields[0]) != action {
			action = string(fields[0])
		}
		e.Action, e.CorrelationID, e.TraceParent, e.Payload = action, string(fields[1]), string(fields[2]), fields[3]
		if err := fn(i, e); err != nil {
			return i, err
		}
	}
	if i == 0 {
		return 0, fmt.Errorf("%w: no items", ErrEventBatch)
	}
	return i, nil
}

// MaxActionLen bounds an event's action, as a subject token.
const MaxActionLen = 256

// Why an action cannot be an event's: CheckAction wraps one of these.
var (
	ErrActionReserved = errors.New("reserved")
	ErrActionNotToken = errors.New("not one subject token")
)

// CheckAction refuses what a plain message's subject could not carry as its
// action: empty, too long, not UTF-8, with a NATS separator, wildcard,
// space or control character (ErrActionNotToken), or beginning with '_'
// (ErrActionReserved). The SDK refuses such an event before it is sent; the
// collector dead-letters one that arrives in a batch.
func CheckAction(a string) error {
	if a == "" || len(a) > MaxActionLen || !utf8.ValidString(a) {
		return fmt.Errorf("event action %q is empty, longer than %d bytes or not UTF-8: %w", clipAction(a), MaxActionLen, ErrActionNotToken)
	}
	if a[0] == '_' {
		return fmt.Errorf("event action %q is %w", clipAction(a), ErrActionReserved)
	}
	if strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == '.' || r == '*' || r == '>' || r == 0x7f }) {
		return fmt.Errorf("event action %q is %w", clipAction(a), ErrActionNotToken)
	}
	return nil
}

func clipAction(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}
