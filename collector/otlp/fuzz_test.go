package otlp

import (
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

// FuzzDecodeTraces feeds arbitrary bodies, as protobuf and as JSON, to the
// receiver's decoding: it errors or decodes, never panics.
func FuzzDecodeTraces(f *testing.F) {
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}`), true)
	f.Add([]byte("\x0a\x02\x0a\x00"), false)
	f.Add([]byte(`{"traceId":"zz"}`), true)
	r := &Receiver{}
	f.Fuzz(func(t *testing.T, body []byte, json bool) {
		var m coltrace.ExportTraceServiceRequest
		_ = r.decode(&request{tenant: "acme", json: json, body: body}, &m)
	})
}
