package identity

import "context"

// Caller holds the principal that authentication found for one request, so
// that middleware around the routes (metering) learns who was served after
// the handler returns. The request's goroutine fills it (Keys.Authenticate,
// the UI's session check) and the middleware reads it once the handler has
// returned, so it needs no lock.
type Caller struct {
	p  Principal
	ok bool
}

const callerKey ctxKey = 2

// WithCaller returns ctx with an empty Caller for authentication to fill.
func WithCaller(ctx context.Context) (context.Context, *Caller) {
	c := &Caller{}
	return context.WithValue(ctx, callerKey, c), c
}

// SetCaller notes p as ctx's authenticated caller (nothing without a Caller).
func SetCaller(ctx context.Context, p Principal) {
	if c, ok := ctx.Value(callerKey).(*Caller); ok {
		c.p, c.ok = p, true
	}
}

// Principal is the authenticated caller, if any.
func (c *Caller) Principal() (Principal, bool) {
	if c == nil {
		return Principal{}, false
	}
	return c.p, c.ok
}
