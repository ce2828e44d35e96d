// Package otlpwire reads OTLP export requests in protobuf without building
// them: the wire checks proto.Unmarshal makes (every nested message at
// every depth, UTF-8 in string fields), from the OTLP descriptors, and a
// walk over fields. The OTLP receiver uses it to forward clean requests as
// they came; the collector to decode spans straight to rows.
package otlpwire

import (
	"unicode/utf8"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// schema is a message's fields by number, as the wire checks need them.
type schema struct {
	fields []field
}

type kind uint8

const (
	kindUnknown kind = iota // unknown, or a scalar whose wire type is checked only
	kindMessage
	kindString
	kindBytes
	kindPacked // a repeated number, packed: elements of packedType
)

type field struct {
	kind       kind
	msg        *schema
	packedType protowire.Type
}

func schemaOf(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*schema) *schema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &schema{}
	seen[md.FullName()] = s
	fds := md.Fields()
	top := 0
	for i := range fds.Len() {
		top = max(top, int(fds.Get(i).Number()))
	}
	s.fields = make([]field, top+1)
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := &s.fields[fd.Number()]
		switch fd.Kind() {
		case protoreflect.MessageKind:
			f.kind, f.msg = kindMessage, schemaOf(fd.Message(), seen)
		case protoreflect.StringKind:
			f.kind = kindString
		case protoreflect.BytesKind:
			f.kind = kindBytes
		case protoreflect.GroupKind:
			// Not in OTLP; a group's bytes are left to ConsumeFieldValue.
		default:
			if fd.IsList() {
				f.kind, f.packedType = kindPacked, scalarWireType(fd.Kind())
			}
		}
	}
	return s
}

func scalarWireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// maxScanDepth is how deep scan follows nested messages (attribute values
// inside arrays inside maps...); deeper requests take the full decode.
const maxScanDepth = 64

// sound reports whether b is a message of schema s as proto.Unmarshal
// would accept it.
func sound(b []byte, s *schema, depth int) bool {
	if depth > maxScanDepth {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || !num.IsValid() {
			return false
		}
		b = b[n:]
		if typ == protowire.BytesType && int(num) < len(s.fields) && s.fields[num].kind != kindUnknown {
			f := &s.fields[num]
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch f.kind {
			case kindMessage:
				if !sound(v, f.msg, depth+1) {
					return false
				}
			case kindString:
				if !utf8.Valid(v) {
					return false
				}
			case kindPacked:
				for len(v) > 0 {
					n := protowire.ConsumeFieldValue(num, f.packedType, v)
					if n < 0 {
						return false
					}
					v = v[n:]
				}
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

var (
	traces = schemaOf((&coltrace.ExportTraceServiceRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*schema{})
	logs   = schemaOf((&collogs.ExportLogsServiceRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*schema{})
)

// SoundTraces reports whether b is an ExportTraceServiceRequest that
// proto.Unmarshal accepts.
func SoundTraces(b []byte) bool { return sound(b, traces, 0) }

// SoundLogs reports whether b is an ExportLogsServiceRequest that
// proto.Unmarshal accepts.
func SoundLogs(b []byte) bool { return sound(b, logs, 0) }

// EachField calls fn with each field of a sound message, until fn says
// false; it reports whether fn never did. v is the payload of a
// length-delimited field, and the encoded value of the others (Varint and
// Fixed64 read it).
func EachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n >= 0 {
				v = b[:n]
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
		if !fn(num, typ, v) {
			return false
		}
	}
	return true
}

// Varint reads the value of a varint field as EachField gives it.
func Varint(v []byte) uint64 {
	n, _ := protowire.ConsumeVarint(v)
	return n
}

// Fixed64 reads the value of a fixed64 field as EachField gives it.
func Fixed64(v []byte) uint64 {
	n, _ := protowire.ConsumeFixed64(v)
	return n
}

// PlainString reads an AnyValue that holds only a string_value.
func PlainString(anyValue []byte) ([]byte, bool) {
	var s []byte
	fields, isString := 0, false
	EachField(anyValue, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		fields++
		if num == 1 && typ == protowire.BytesType {
			s, isString = v, true
		}
		return true
	})
	return s, fields == 1 && isString
}

// Parts are the length-delimited fields of a sound message of the shape
// OTLP uses at each level: one singular field (and how often it came: proto
// merges a repeated message, and the last of a repeated string wins), one
// repeated field, and one more singular field (the last counts; Lasts how
// often it came). Fields of another wire type are unknown to proto, and
// here. The receiver's scan and the collector's span reader walk requests
// with it.
type Parts struct {
	One   []byte
	Ones  int
	Many  [][]byte
	Last  []byte
	Lasts int
}

// PartsOf reads them; a number 0 reads nothing.
func PartsOf(b []byte, one, many, last protowire.Number) Parts {
	var p Parts
	EachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		if typ != protowire.BytesType {
			return true
		}
		switch num {
		case one:
			p.One = v
			p.Ones++
		case many:
			p.Many = append(p.Many, v)
		case last:
			p.Last = v
			p.Lasts++
		}
		return true
	})
	return p
}
