// Package wire holds what publishers put on the reserved subjects: the JSON
// form of spans on tenant.{tenant}.{service}._span (what the SDK's span
// exporter publishes and the collector decodes), and the names and headers
// of OTLP batches (what the OTLP receiver publishes). It has no
// dependencies beyond the standard library, so publishers import it cheaply.
package wire

import (
	"strings"
	"time"
)

// Span is one span. Either EndTime or DurationNs gives the duration.
type Span struct {
	TraceID       string         `json:"trace_id"`
	SpanID        string         `json:"span_id"`
	ParentSpanID  string         `json:"parent_span_id,omitempty"`
	Name          string         `json:"name"`
	Kind          string         `json:"kind,omitempty"`
	StartTime     time.Time      `json:"start_time"`
	EndTime       time.Time      `json:"end_time,omitzero"`
	DurationNs    uint64         `json:"duration_ns,omitempty"`
	StatusCode    string         `json:"status_code,omitempty"`
	StatusMessage string         `json:"status_message,omitempty"`
	Attributes    map[string]any `json:"attributes,omitempty"`
	Resource      map[string]any `json:"resource,omitempty"`
	Events        []SpanEvent    `json:"events,omitempty"`
}

// SpanEvent is an event inside a span.
type SpanEvent struct {
	Time       time.Time      `json:"time"`
	Name       string         `json:"name"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Reserved actions of OTLP batches: a message on
// tenant.{tenant}.{service}._otlp_traces is one OTLP
// ExportTraceServiceRequest, on ._otlp_logs one ExportLogsServiceRequest,
// in protobuf. Each row takes its service from its own resource's
// service.name (ServiceToken); the subject's service token is the first
// resource's.
const (
	ActionOTLPTraces = "_otlp_traces"
	ActionOTLPLogs   = "_otlp_logs"
)

// Headers of batch messages.
const (
	// BatchItemsHeader is how many items (spans, log records) a batch
	// message holds; the collector counts them against the tenant's
	// events_per_second quota (a message without it counts as one).
	BatchItemsHeader = "Batch-Items"
	// BatchOffsetHeader is the index of a batch's first item in the
	// message it was cut from (a dead-lettered item carries its index), so
	// a replayed item keeps the row id it would have had.
	BatchOffsetHeader = "Batch-Offset"
)

// ServiceToken is the subject token and the service column of a resource's
// service.name: NATS wildcards, dots and spaces become underscores, and a
// resource without one is unknown_service.
func ServiceToken(name string) string {
	if name == "" {
		return "unknown_service"
	}
	return serviceReplacer.Replace(name)
}

var serviceReplacer = strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")

// IngestStream is the JetStream stream that stores a tenant's subjects
// (tenant.{tenant}.>). A publisher checks that its acknowledgements name
// it: an acknowledgement naming another stream was meant for another
// publisher (nats-server can hand one publisher's acknowledgement to
// another when two replies through the suite account's service import
// draw the same token), and says nothing about its own message.
func IngestStream(tenant string) string { return "INGEST_" + tenant }
