package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
)

// printStorage writes what the configuration's streams reserve on a NATS
// node, stream by stream, against the JetStream budget when one is given.
func printStorage(w io.Writer, cfg config.Config) error {
	st := cfg.NATS.Stream
	var b strings.Builder
	fmt.Fprintf(&b, "\nJetStream storage: each stream reserves its max_bytes up front on every NATS node that holds one of its %d replica(s)\n", max(st.Replicas, 1))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STREAM\tRESERVES\tWHAT IT HOLDS")
	for _, r := range cfg.StreamReservations() {
		if r.Tenant == "" {
			fmt.Fprintf(tw, "  %s\t%s\tdead letters for 30 days, the oldest dropped first beyond the limit\n", natsbus.DeadLetterStream, config.ByteSize(r.Bytes))
			continue
		}
		what := "messages the collector has not yet stored"
		if t, ok := chainTenant(cfg, r.Tenant); ok {
			if bps := cfg.QuotaOf(t).BytesPerSecond; bps > 0 {
				fill := time.Duration(float64(r.Bytes) / bps * float64(time.Second)).Round(100 * time.Millisecond)
				what += fmt.Sprintf("; with the collector stopped, publishing at its quota (%s/s) fills it in %v", config.ByteSize(bps), fill)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", natsbus.IngestStream(r.Tenant), config.ByteSize(r.Bytes), what)
	}
	need := cfg.ReservedStreamBytes()
	fmt.Fprintf(tw, "  total\t%s\ton a node that holds every stream (one server, or replicas = cluster size); %s across the cluster\n",
		config.ByteSize(need), config.ByteSize(need*int64(max(st.Replicas, 1))))
	if err := tw.Flush(); err != nil {
		return err
	}
	budget := int64(cfg.NATS.JetStreamBudget)
	switch {
	case budget <= 0:
		fmt.Fprintf(&b, "  budget  not given (--jetstream-budget 10GB or nats.jetstream_budget, a node's max_file_store)")
		if cfg.EmbeddedNATS() {
			fmt.Fprintf(&b, "; the embedded server then has nats-server's default, 75%% of the free disk under %s", filepath.Join(cfg.Data, "nats"))
		}
		b.WriteString("\n")
	case need <= budget:
		fmt.Fprintf(&b, "  budget  %s: %.0f%% reserved, %s left: fits\n", config.ByteSize(budget), 100*float64(need)/float64(budget), config.ByteSize(budget-need))
	default:
		fmt.Fprintf(&b, "  budget  %s: %s short: DOES NOT FIT (nats-server refuses the streams that do not fit: error 10047, insufficient storage resources available)\n",
			config.ByteSize(budget), config.ByteSize(need-budget))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func chainTenant(cfg config.Config, id string) (config.Tenant, bool) {
	for _, t := range cfg.ChainTenants() {
		if t.ID == id {
			return t, true
		}
	}
	return config.Tenant{}, false
}

// storageOnError prints the storage table when a configuration was refused
// because its streams do not fit the budget, then returns err.
func storageOnError(w io.Writer, cmd string, cfg config.Config, err error) error {
	if cmd == "validate" && len(cfg.Regions) > 0 && cfg.NATS.JetStreamBudget > 0 && cfg.ReservedStreamBytes() > int64(cfg.NATS.JetStreamBudget) {
		if perr := printStorage(w, cfg); perr != nil {
			return fmt.Errorf("%w (and printing the storage: %w)", err, perr)
		}
	}
	return err
}

// migrateStreams is 'migrate up's step for the streams: against a NATS
// cluster it is their one owner (creates them, applies changed limits,
// switches streams of earlier versions to work-queue retention). With the
// embedded server, 'serve' owns them.
func migrateStreams(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	if cfg.EmbeddedNATS() {
		_, err := fmt.Fprintln(stdout, "streams: declared by 'tenantscope serve', which runs the embedded NATS server")
		return err
	}
	nc, err := natsbus.ConnectExternal(cfg, "tenantscope-migrate")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stdout, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}})
	s, err := natsbus.NewStreams(js, cfg, log, nil)
	if err != nil {
		return err
	}
	if err := s.Apply(ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "streams: %d ingest streams and %s as configured (%s reserved on each node that holds them all)\n",
		len(cfg.ChainTenants()), natsbus.DeadLetterStream, config.ByteSize(cfg.ReservedStreamBytes()))
	return err
}
