package auditlog

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamPublisher publishes audit records on the tenant's `._audit`
// subject, waiting for JetStream's acknowledgement; msgID becomes the
// Nats-Msg-Id, so the duplicate window drops a retry.
func JetStreamPublisher(js jetstream.JetStream) Publisher {
	return func(ctx context.Context, tenant, msgID string, body []byte) error {
		m := nats.NewMsg("tenant." + tenant + ".tenantscope._audit")
		m.Header.Set("Tenant-Id", tenant)
		if msgID != "" {
			m.Header.Set(nats.MsgIdHdr, msgID)
		}
		m.Data = body
		_, err := js.PublishMsg(ctx, m)
		return err
	}
}
