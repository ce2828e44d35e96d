package config

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes, written as a number (1073741824) or as
// nats-server writes sizes in its configuration: 64MB, 10GB, 1TB, 512K
// (powers of 1024; KiB, MiB, GiB and TiB too).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	shift  uint
}{
	{"TIB", 40}, {"GIB", 30}, {"MIB", 20}, {"KIB", 10},
	{"TB", 40}, {"GB", 30}, {"MB", 20}, {"KB", 10},
	{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}, {"B", 0},
}

// ParseByteSize reads "64MB", "10GB", "2GiB" or a plain number of bytes.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	shift := uint(0)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(t, u.suffix); ok {
			t, shift = strings.TrimSpace(n), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is not a size like 1073741824, 64MB or 10GB", s)
	}
	return ByteSize(n << shift), nil
}

// UnmarshalYAML reads a number of bytes or a size like 10GB.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the number of bytes.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }

// String is the size in the largest binary unit that keeps it readable:
// "1 GiB", "292.97 KiB", "512 B".
func (b ByteSize) String() string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if b >= 1<<u.shift {
			v := float64(b) / float64(int64(1)<<u.shift)
			return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".") + " " + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + " B"
}

// StreamReservation is what one of the suite's JetStream streams reserves:
// nats-server sets aside a stream's max_bytes, up front, on every node that
// holds a replica of it, whether or not anything is stored yet. A node
// refuses to create (or grow) a stream whose reservation does not fit in
// what is left of its max_file_store (error 10047, "insufficient storage
// resources available").
type StreamReservation struct {
	// Tenant is the chain tenant of an ingest stream (a tenant, or the
	// platform chain); empty for the dead-letter stream.
	Tenant string
	Bytes  int64
}

// DeadLetterMaxBytes is the dead-letter stream's limit:
// nats.stream.dead_letter_max_bytes, else nats.stream.max_bytes.
func (c Config) DeadLetterMaxBytes() int64 {
	if c.NATS.Stream.DeadLetterMaxBytes > 0 {
		return c.NATS.Stream.DeadLetterMaxBytes
	}
	return c.NATS.Stream.MaxBytes
}

// StreamReservations lists every stream the suite declares with what it
// reserves: each chain tenant's ingest stream its backlog_bytes, then the
// dead-letter stream.
func (c Config) StreamReservations() []StreamReservation {
	var rs []StreamReservation
	for _, t := range c.ChainTenants() {
		rs = append(rs, StreamReservation{Tenant: t.ID, Bytes: c.QuotaOf(t).BacklogBytes})
	}
	return append(rs, StreamReservation{Bytes: c.DeadLetterMaxBytes()})
}

// ReservedStreamBytes is what a node that holds a replica of every stream
// reserves: one embedded server, or each node of a cluster whose size is
// the replica count. Across a cluster the streams reserve Replicas times it.
func (c Config) ReservedStreamBytes() int64 {
	var sum int64
	for _, r := range c.StreamReservations() {
		sum += r.Bytes
	}
	return sum
}

// validateStreams checks the stream limits against each other and against
// the JetStream budget when one is given.
func (c Config) validateStreams(bad func(field, format string, a ...any)) {
	if c.NATS.Stream.DeadLetterMaxBytes < 0 {
		bad("nats.stream.dead_letter_max_bytes", "must not be negative")
	}
	if c.NATS.JetStreamBudget < 0 {
		bad("nats.jetstream_budget", "must not be negative")
	}
	if c.NATS.Stream.MaxBytes <= 0 || c.NATS.JetStreamBudget <= 0 || len(c.Regions) == 0 {
		return
	}
	if need := c.ReservedStreamBytes(); need > int64(c.NATS.JetStreamBudget) {
		bad("nats.jetstream_budget", "the streams reserve %s on each node that holds them (%d ingest backlogs and the dead letters), more than the budget of %s: lower backlog_bytes or dead_letter_max_bytes, or raise the budget ('tenantscope config validate' lists each stream)",
			ByteSize(need), len(c.ChainTenants()), c.NATS.JetStreamBudget)
	}
}
