// Package audittest records audit records in memory for tests: a Publisher
// that keeps what a domain publishes instead of sending it to NATS.
package audittest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/tenantscope/tenantscope/auditlog"
)

// Recorder keeps the records published through Publish, in order.
type Recorder struct {
	mu      sync.Mutex
	records []auditlog.Record
}

// Publish is an auditlog.Publisher. It refuses a record published to
// another tenant's chain than its own, as the real pipeline does.
func (r *Recorder) Publish(_ context.Context, tenant, _ string, body []byte) error {
	var rec auditlog.Record
	if err := json.Unmarshal(body, &rec); err != nil {
		return err
	}
	if rec.TenantID != tenant {
		return fmt.Errorf("record of %s published to %s", rec.TenantID, tenant)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

// Records is a copy of what was published so far.
func (r *Recorder) Records() []auditlog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]auditlog.Record(nil), r.records...)
}
