// Package wire holds the JSON form of spans on tenant.{tenant}.{service}._span:
// what the SDK's span exporter and the OTLP receiver publish and what the
// collector decodes. It has no dependencies, so publishers import it cheaply.
package wire

import "time"

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
