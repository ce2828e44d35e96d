package sessions_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/identity/identitytest"
	"github.com/tenantscope/tenantscope/identity/sessions"
	"github.com/tenantscope/tenantscope/identity/sessions/sessionstest"
)

func TestSessionLifecycleSharedByProcesses(t *testing.T) {
	ctx := context.Background()
	js := sessionstest.JetStream(t)
	clk := identitytest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	cfg := sessions.Config{Idle: 30 * time.Minute, Absolute: 8 * time.Hour}
	a, b := sessionstest.Store(t, js, cfg), sessionstest.Store(t, js, cfg) // two UI processes
	a.Now, b.Now = clk.Now, clk.Now

	token, s, err := a.Create(ctx, sessions.Session{User: "alice", Role: "tenant-admin", Tenant: "acme", Credential: sessions.Fingerprint("h1")})
	require.NoError(t, err)
	require.Len(t, s.ID, 64)
	require.NotContains(t, s.ID, token)
	require.NotEmpty(t, s.CSRF)

	got, err := b.Get(ctx, token)
	require.NoError(t, err, "another process finds it")
	require.Equal(t, "alice", got.User)
	require.Equal(t, s.CSRF, got.CSRF, "the CSRF token follows from the cookie's token")

	for _, bad := range []string{"", "x", token + "x", token[:len(token)-1] + "!", s.ID} {
		_, err := a.Get(ctx, bad)
		require.ErrorIs(t, err, sessions.ErrNoSession, "%q", bad)
	}

	// Idle: used within 30 min it lives on; 30 min untouched it ends.
	for range 20 {
		clk.Add(20 * time.Minute)
		_, err := a.Get(ctx, token)
		require.NoError(t, err)
	}
	clk.Add(31 * time.Minute)
	_, err = b.Get(ctx, token)
	require.ErrorIs(t, err, sessions.ErrTimedOut)
	_, err = a.Get(ctx, token)
	require.ErrorIs(t, err, sessions.ErrNoSession, "ended, not just refused once")

	// Absolute: 8 h after sign-in, however busy.
	token, _, err = a.Create(ctx, sessions.Session{User: "alice"})
	require.NoError(t, err)
	for range 16 {
		clk.Add(29 * time.Minute)
		_, err := a.Get(ctx, token)
		require.NoError(t, err)
	}
	clk.Add(30 * time.Minute) // 8 h 14 min after sign-in
	_, err = a.Get(ctx, token)
	require.ErrorIs(t, err, sessions.ErrTimedOut)

	// End (sign-out) in one process, refused in the other.
	token, _, err = a.Create(ctx, sessions.Session{User: "alice"})
	require.NoError(t, err)
	require.NoError(t, a.End(ctx, token))
	_, err = b.Get(ctx, token)
	require.ErrorIs(t, err, sessions.ErrNoSession)

	// A use noted after the session ended never brings it back.
	token, _, err = a.Create(ctx, sessions.Session{User: "alice"})
	require.NoError(t, err)
	clk.Add(5 * time.Minute) // the next Get writes the use
	id := mustGet(t, a, token).ID
	clk.Add(5 * time.Minute)
	require.NoError(t, b.EndID(ctx, id))
	_, err = a.Get(ctx, token)
	require.ErrorIs(t, err, sessions.ErrNoSession)
	require.ErrorIs(t, b.EndID(ctx, id), sessions.ErrNoSession)
	require.ErrorIs(t, b.EndID(ctx, "../s.*"), sessions.ErrNoSession)

	// List and end a user's sessions.
	var carol []string
	for range 3 {
		tk, _, err := a.Create(ctx, sessions.Session{User: "carol", Role: "compliance"})
		require.NoError(t, err)
		carol = append(carol, tk)
	}
	frank, _, err := a.Create(ctx, sessions.Session{User: "frank", Role: "finance"})
	require.NoError(t, err)
	list, err := b.List(ctx, "carol")
	require.NoError(t, err)
	require.Len(t, list, 3)
	all, err := b.List(ctx, "")
	require.NoError(t, err)
	require.Len(t, all, 4, "alice's ended and timed-out sessions are not listed")
	n, err := b.EndUser(ctx, "carol")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	for _, tk := range carol {
		_, err := a.Get(ctx, tk)
		require.ErrorIs(t, err, sessions.ErrNoSession)
	}
	_, err = a.Get(ctx, frank)
	require.NoError(t, err, "another user's session is untouched")
}

func mustGet(t *testing.T, s *sessions.Store, token string) sessions.Session {
	t.Helper()
	got, err := s.Get(context.Background(), token)
	require.NoError(t, err)
	return got
}

func TestOpenRefusesTimeoutsThatDoNotFit(t *testing.T) {
	js := sessionstest.JetStream(t)
	_, err := sessions.Open(context.Background(), js, sessions.Config{Idle: 9 * time.Hour, Absolute: 8 * time.Hour})
	require.Error(t, err)
	_, err = sessions.Open(context.Background(), js, sessions.Config{Idle: time.Millisecond})
	require.Error(t, err)
}
