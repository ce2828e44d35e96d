package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ByteSize
		text string
	}{
		{"1073741824", 1 << 30, "1 GiB"},
		{"64MB", 64 << 20, "64 MiB"},
		{"10GB", 10 << 30, "10 GiB"},
		{"2GiB", 2 << 30, "2 GiB"},
		{"512k", 512 << 10, "512 KiB"},
		{"300000", 300000, "292.97 KiB"},
		{"1T", 1 << 40, "1 TiB"},
		{"100", 100, "100 B"},
	} {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseByteSize(c.in)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
			require.Equal(t, c.text, got.String())
		})
	}
	for _, bad := range []string{"", "-1GB", "1.5GB", "lots", "99999999999TB"} {
		_, err := ParseByteSize(bad)
		require.Error(t, err, bad)
	}
}

// TestStreamReservations: every chain tenant's backlog, then the dead
// letters; per-tenant quotas and dead_letter_max_bytes count.
func TestStreamReservations(t *testing.T) {
	cfg := Default()
	cfg.NATS.Stream.MaxBytes = 100
	cfg.NATS.Stream.DeadLetterMaxBytes = 7
	cfg.Tenants = []Tenant{{ID: "acme", Region: "default", Quota: Quota{BacklogBytes: 30}}, {ID: "globex", Region: "default"}}
	require.Equal(t, []StreamReservation{{Tenant: "acme", Bytes: 30}, {Tenant: "globex", Bytes: 100}, {Tenant: PlatformTenant, Bytes: 100}, {Bytes: 7}}, cfg.StreamReservations())
	require.Equal(t, int64(237), cfg.ReservedStreamBytes())
	cfg.NATS.JetStreamBudget = 237
	var errs []string
	cfg.validateStreams(func(f, format string, a ...any) { errs = append(errs, f) })
	require.Empty(t, errs, "exactly the budget fits")
	cfg.NATS.JetStreamBudget = 236
	cfg.validateStreams(func(f, format string, a ...any) { errs = append(errs, f) })
	require.Equal(t, []string{"nats.jetstream_budget"}, errs)
}
