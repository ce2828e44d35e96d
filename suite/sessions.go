package suite

import (
	"context"
	"time"

	"github.com/tenantscope/tenantscope/identity/sessions"
)

// sessionStore opens the UI sessions' bucket on the suite's JetStream: every
// UI process of the deployment shares it, and the process that audits
// changes of configured users ends their sessions there.
func (s *Suite) sessionStore(ctx context.Context) (*sessions.Store, error) {
	return sessions.Open(ctx, s.js, sessions.Config{
		Idle:     time.Duration(s.cfg.Sessions.IdleTimeout),
		Absolute: time.Duration(s.cfg.Sessions.AbsoluteTimeout),
		Replicas: s.cfg.NATS.Stream.Replicas,
	})
}
