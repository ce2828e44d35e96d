package collector

import (
	"encoding/base64"
	"math"
	"strconv"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tenantscope/tenantscope/collector/otlpwire"
)

// decodeTracesWire is DecodeOTLPTraces without building the request: the
// spans are read from the bytes straight into rows, with proto.Unmarshal's
// rules (the last of a repeated scalar field wins, a field of the wrong
// wire type is unknown). Building the request cost the collector more than
// reading it. An attribute value other than a plain string, number, bool
// or bytes (arrays, maps, odd encodings) is built alone and read as
// before. ok is false, with nothing done, for a body that is not sound or
// of a rare shape (a resource or scope given twice, which proto merges):
// decodeTracesProto decodes those. FuzzDecodeTracesWireSameAsProto holds
// the two to the same rows, bad items and errors.
func decodeTracesWire(m Meta, body []byte, offset int, red *Redactor) (spans []Span, bads []BadItem, ok bool) {
	if !otlpwire.SoundTraces(body) {
		return nil, nil, false
	}
	i := offset
	in := &interner{strs: map[string]string{}}
	ok = otlpwire.EachField(body, func(num protowire.Number, typ protowire.Type, rs []byte) bool {
		if num != 1 || typ != protowire.BytesType { // resource_spans
			return true
		}
		// resource_spans: resource, scope_spans, schema_url.
		r := otlpwire.PartsOf(rs, 1, 2, 3)
		resource, resources, scopes, schemaURL := r.One, r.Ones, r.Many, r.Last
		if resources > 1 {
			return false
		}
		res := resourceOf(in.attrs(otlpwire.PartsOf(resource, 0, 1, 0).Many)) // resource: attributes
		resErr := res.check(m)
		for _, ss := range scopes {
			// scope_spans: scope, spans, schema_url.
			p := otlpwire.PartsOf(ss, 1, 2, 3)
			scope, scopeCount, items, ssSchema := p.One, p.Ones, p.Many, p.Last
			if scopeCount > 1 {
				return false
			}
			for _, raw := range items {
				idx := i
				i++
				de := resErr
				var sp Span
				if de == nil {
					sp, de = otlpSpan(m, res, in.span(raw), red)
				}
				if de != nil {
					one := oneSpanRequest(resource, resources > 0, schemaURL, scope, scopeCount > 0, ssSchema, raw)
					bads = append(bads, BadItem{Index: idx, Err: de, Data: one})
					continue
				}
				spans = append(spans, sp)
			}
		}
		return true
	})
	if !ok {
		return nil, nil, false
	}
	return spans, bads, true
}

// oneSpanRequest is a request of one span with its resource and scope, as
// decodeTracesProto marshals it.
func oneSpanRequest(resource []byte, hasResource bool, schemaURL, scope []byte, hasScope bool, ssSchema, span []byte) []byte {
	field := func(b []byte, num protowire.Number, v []byte, present bool) []byte {
		if !present {
			return b
		}
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	// scope_spans: scope, the span, schema_url.
	ss := field(nil, 1, scope, hasScope)
	ss = field(ss, 2, span, true)
	ss = field(ss, 3, ssSchema, len(ssSchema) > 0)
	// resource_spans: resource, scope_spans, schema_url.
	rs := field(nil, 1, resource, hasResource)
	rs = field(rs, 2, ss, true)
	rs = field(rs, 3, schemaURL, len(schemaURL) > 0)
	return field(nil, 1, rs, true)
}

// interner gives the strings of one request that repeat from span to span
// (attribute keys, names, short values) one allocation each. kvs and ekvs
// are a span's and an event's attributes as read (reused from span to
// span: an event is read while its span's attributes are gathered).
type interner struct {
	strs      map[string]string
	kvs, ekvs [][]byte
}

// maxInterned is the longest value interned: longer ones (paths, ids,
// messages) seldom repeat.
const maxInterned = 32

func (in *interner) str(b []byte) string {
	if s, ok := in.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	in.strs[s] = s
	return s
}

// span reads a sound span's fields.
func (in *interner) span(b []byte) spanFields {
	var f spanFields
	kvs := in.kvs[:0]
	otlpwire.EachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		switch typ {
		case protowire.BytesType:
			switch num {
			case 1:
				f.traceID = v
			case 2:
				f.spanID = v
			case 4:
				f.parentSpanID = v
			case 5:
				f.name = in.str(v)
			case 9:
				kvs = append(kvs, v)
			case 11:
				f.events = append(f.events, in.event(v))
			case 15:
				statusOfWire(v, &f)
			}
		case protowire.VarintType:
			if num == 6 {
				f.kind = int32(otlpwire.Varint(v))
			}
		case protowire.Fixed64Type:
			switch num {
			case 7:
				f.start = otlpwire.Fixed64(v)
			case 8:
				f.end = otlpwire.Fixed64(v)
			}
		}
		return true
	})
	f.attributes = in.attrs(kvs)
	in.kvs = kvs[:0]
	return f
}

// event reads a sound span event.
func (in *interner) event(b []byte) SpanEvent {
	var e SpanEvent
	var t uint64
	kvs := in.ekvs[:0]
	otlpwire.EachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			t = otlpwire.Fixed64(v)
		case num == 2 && typ == protowire.BytesType:
			e.Name = in.str(v)
		case num == 3 && typ == protowire.BytesType:
			kvs = append(kvs, v)
		}
		return true
	})
	e.Time = time.Unix(0, int64(t)).UTC()
	e.Attributes = in.attrs(kvs)
	in.ekvs = kvs[:0]
	return e
}

// statusOfWire reads a sound status into f: a status given twice is
// merged, field by field, as proto does.
func statusOfWire(b []byte, f *spanFields) {
	otlpwire.EachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		switch {
		case num == 2 && typ == protowire.BytesType:
			f.statusMessage = string(v)
		case num == 3 && typ == protowire.VarintType:
			f.statusCode = int32(otlpwire.Varint(v))
		}
		return true
	})
}

// attrs is otlpAttrs of sound KeyValue messages.
func (in *interner) attrs(kvs [][]byte) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v := in.attr(kv)
		out[k] = v
	}
	return out
}

// attr reads a KeyValue: the plain values from the bytes, anything else
// (arrays, maps, a value given twice, unknown fields) through the built
// message and OTLPValue, as before.
func (in *interner) attr(b []byte) (string, string) {
	// key_value: key, value.
	p := otlpwire.PartsOf(b, 2, 0, 1)
	key, value, values := p.Last, p.One, p.Ones
	if values == 0 {
		return in.str(key), OTLPValue(nil)
	}
	if values == 1 {
		if s, ok := in.plainValue(value); ok {
			return in.str(key), s
		}
	}
	var kv commonpb.KeyValue
	if err := proto.Unmarshal(b, &kv); err != nil {
		return string(key), "" // not reached: b is sound
	}
	return kv.Key, OTLPValue(kv.Value)
}

// plainValue reads an AnyValue of exactly one plain field as OTLPValue
// would format it; short strings are interned.
func (in *interner) plainValue(b []byte) (string, bool) {
	var out string
	fields, ok := 0, false
	otlpwire.EachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		fields++
		switch {
		case num == 1 && typ == protowire.BytesType && len(v) <= maxInterned:
			out, ok = in.str(v), true
		case num == 1 && typ == protowire.BytesType:
			out, ok = string(v), true
		case num == 2 && typ == protowire.VarintType:
			out, ok = strconv.FormatBool(otlpwire.Varint(v) != 0), true
		case num == 3 && typ == protowire.VarintType:
			out, ok = strconv.FormatInt(int64(otlpwire.Varint(v)), 10), true
		case num == 4 && typ == protowire.Fixed64Type:
			out, ok = strconv.FormatFloat(math.Float64frombits(otlpwire.Fixed64(v)), 'g', -1, 64), true
		case num == 7 && typ == protowire.BytesType:
			out, ok = base64.StdEncoding.EncodeToString(v), true
		}
		return true
	})
	return out, ok && fields == 1
}
