package natsbus

import (
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// LogConnection makes a long-lived connection log what happens to it: a
// disconnect (warn, with its cause), the reconnect (info, with the server
// and how long the connection was down), asynchronous errors such as a slow
// consumer (warn), and a close that was not asked for (error). Server URLs
// are logged without credentials.
func LogConnection(nc *nats.Conn, log zerolog.Logger) {
	log = log.With().Str("component", "nats-client").Logger()
	var downSince atomic.Int64 // unix ns of the disconnect; 0 while connected
	nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		if nc.IsClosed() {
			return // closed on purpose (Close, Drain): nothing to report
		}
		downSince.CompareAndSwap(0, time.Now().UnixNano())
		log.Warn().Err(err).Msg("nats: disconnected; reconnecting")
	})
	nc.SetReconnectHandler(func(nc *nats.Conn) {
		ev := log.Info().Str("server", nc.ConnectedUrlRedacted())
		if t := downSince.Swap(0); t != 0 {
			ev = ev.Stringer("down_for", time.Since(time.Unix(0, t)).Round(time.Millisecond))
		}
		ev.Msg("nats: reconnected")
	})
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		ev := log.Warn().Err(err)
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Msg("nats: asynchronous error")
	})
	nc.SetClosedHandler(func(nc *nats.Conn) {
		if err := nc.LastError(); err != nil {
			log.Error().Err(err).Msg("nats: connection closed")
		}
	})
}
