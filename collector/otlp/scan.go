package otlp

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tenantscope/tenantscope/collector/otlpwire"
	"github.com/tenantscope/tenantscope/collector/wire"
)

// A protobuf request that is sound and whole is forwarded as the client's
// own bytes; building it (proto.Unmarshal) only to find that out cost the
// receiver about as much as the collector's own decoding. scan walks the
// bytes instead: it checks them as proto.Unmarshal would (the wire format
// of every message, at every depth, and UTF-8 in string fields, from the
// OTLP descriptors) and reads only what the receiver decides on: each
// resource's tenant.id, the first resource's service.name, the items, and
// for spans their trace and span ids. Anything it does not find plainly
// clean (a resource of another tenant, a span without ids, a field given
// twice where the last would win, a non-string tenant.id, deep nesting) it
// leaves to the full decode, which finds and reports the same as before:
// scan never refuses a request itself. FuzzScanAgreesWithUnmarshal holds it
// to that.

// The field numbers scan reads: the same in both requests (resource_spans
// and resource_logs, scope_spans and scope_logs, spans and log_records).
const (
	fieldResourceItems = 1 // request: resource_spans, resource_logs
	fieldResource      = 1 // resource_spans: resource
	fieldScopeItems    = 2 // resource_spans: scope_spans
	fieldItems         = 2 // scope_spans: spans
	fieldAttributes    = 1 // resource: attributes
	fieldKey           = 1 // key_value: key
	fieldValue         = 2 // key_value: value
	fieldStringValue   = 1 // any_value: string_value
	fieldTraceID       = 1 // span: trace_id
	fieldSpanID        = 2 // span: span_id
)

// scanned is what scan read of a clean request.
type scanned struct {
	items   int
	service string // the first resource's, as a subject token
}

// scanTraces reports whether a protobuf ExportTraceServiceRequest is clean
// for tenant: sound, no resource of another tenant, every span with a
// 16-byte trace id and an 8-byte span id.
func scanTraces(body []byte, tenant string) (scanned, bool) {
	return scan(body, tenant, otlpwire.SoundTraces, spanIDsPlain)
}

// scanLogs is scanTraces for an ExportLogsServiceRequest.
func scanLogs(body []byte, tenant string) (scanned, bool) {
	return scan(body, tenant, otlpwire.SoundLogs, nil)
}

func scan(body []byte, tenant string, sound func([]byte) bool, itemOK func([]byte) bool) (scanned, bool) {
	var out scanned
	if !sound(body) {
		return out, false
	}
	first := true
	// Every message below was just found sound: the walk reads its fields
	// without checking them again.
	ok := otlpwire.EachField(body, func(num protowire.Number, typ protowire.Type, rs []byte) bool {
		if num != fieldResourceItems || typ != protowire.BytesType {
			return true
		}
		p := otlpwire.PartsOf(rs, fieldResource, fieldScopeItems, 0)
		if p.Ones > 1 {
			return false // a resource given twice is merged: the full decode reads it
		}
		items := 0
		for _, ss := range p.Many {
			for _, item := range otlpwire.PartsOf(ss, 0, fieldItems, 0).Many {
				if itemOK != nil && !itemOK(item) {
					return false
				}
				items++
			}
		}
		t, hasTenant, service, ok := resourceNames(p.One)
		if !ok || (hasTenant && t != tenant) {
			return false
		}
		if first {
			out.service, first = wire.ServiceToken(service), false
		}
		out.items += items
		return true
	})
	return out, ok && out.items > 0
}

// spanIDsPlain reports whether a span has one trace id of 16 bytes and one
// span id of 8.
func spanIDsPlain(span []byte) bool {
	var traces, spans int
	ok := otlpwire.EachField(span, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		switch {
		case typ != protowire.BytesType:
		case num == fieldTraceID:
			traces++
			return len(v) == 16
		case num == fieldSpanID:
			spans++
			return len(v) == 8
		}
		return true
	})
	return ok && traces == 1 && spans == 1
}

var (
	keyTenant  = []byte("tenant.id")
	keyService = []byte("service.name")
)

// resourceNames reads a resource's first tenant.id and service.name, when
// each attribute has one key and those two have plain string values;
// otherwise ok is false and the full decode decides.
func resourceNames(resource []byte) (tenant string, hasTenant bool, service string, ok bool) {
	var hasService bool
	for _, kv := range otlpwire.PartsOf(resource, 0, fieldAttributes, 0).Many {
		p := otlpwire.PartsOf(kv, fieldValue, 0, fieldKey)
		if p.Lasts != 1 {
			return "", false, "", false
		}
		isTenant := bytes.Equal(p.Last, keyTenant) && !hasTenant
		isService := bytes.Equal(p.Last, keyService) && !hasService
		if !isTenant && !isService {
			continue
		}
		s, plain := otlpwire.PlainString(p.One)
		if p.Ones != 1 || !plain {
			return "", false, "", false
		}
		if isTenant {
			tenant, hasTenant = string(s), true
		} else {
			service, hasService = string(s), true
		}
	}
	return tenant, hasTenant, service, true
}
