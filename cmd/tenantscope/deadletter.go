package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
)

const deadletterUsage = "deadletter list|show SEQ|replay [SEQ...] [--tenant T] [--reason R] [--limit N]"

// runDeadletter lists, shows and replays dead letters of a running suite.
func runDeadletter(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	usage := fmt.Errorf("%w: tenantscope %s", errUsage, deadletterUsage)
	if len(args) == 0 {
		return usage
	}
	cmd := args[0]
	cf := newConfigFlags("deadletter "+cmd, stderr)
	tenant := cf.fs.String("tenant", "", "only this tenant's dead letters")
	reason := cf.fs.String("reason", "", "only this reason (e.g. invalid_json)")
	limit := cf.fs.Int("limit", 100, "at most this many")
	cfg, err := cf.parseAndLoad(args[1:], getenv)
	if err != nil {
		return err
	}
	js, nc, err := adminJetStream(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	filter := collector.DeadLetterFilter{Tenant: *tenant, Reason: *reason, Limit: *limit}
	switch cmd {
	case "list":
		dls, err := collector.ListDeadLetters(ctx, js, filter)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tTENANT\tREASON\tSUBJECT\tDETAIL")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Time.UTC().Format("2006-01-02 15:04:05"), d.Tenant, d.Reason, d.Subject, clip(d.Detail, 80))
		}
		return tw.Flush()
	case "show":
		if len(cf.args) != 1 {
			return usage
		}
		seq, err := strconv.ParseUint(cf.args[0], 10, 64)
		if err != nil {
			return fmt.Errorf("deadletter show: %q is not a sequence number", cf.args[0])
		}
		d, err := collector.GetDeadLetter(ctx, js, seq)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "seq %d  %s\n", d.Seq, d.Time.UTC().Format("2006-01-02 15:04:05.000"))
		for k, vs := range d.Header {
			fmt.Fprintf(stdout, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		body := string(d.Data)
		if !utf8.ValidString(body) {
			body = fmt.Sprintf("%q", d.Data)
		}
		_, err = fmt.Fprintf(stdout, "\n%s\n", body)
		return err
	case "replay":
		var dls []collector.DeadLetter
		if len(cf.args) > 0 {
			for _, a := range cf.args {
				seq, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("deadletter replay: %q is not a sequence number", a)
				}
				d, err := collector.GetDeadLetter(ctx, js, seq)
				if err != nil {
					return err
				}
				dls = append(dls, d)
			}
		} else {
			if dls, err = collector.ListDeadLetters(ctx, js, filter); err != nil {
				return err
			}
		}
		for i, d := range dls {
			if err := collector.Replay(ctx, js, d); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "\rreplayed %d/%d", i+1, len(dls))
		}
		fmt.Fprintln(stderr)
		_, err = fmt.Fprintf(stdout, "replayed %d dead letters; the collector validates them again\n", len(dls))
		return err
	}
	return usage
}

// adminJetStream connects with the suite's own NATS credentials (from the
// configuration, or for the embedded server from <data>/bootstrap.json).
// It reads secrets, never writes them: a command pointed at the wrong data
// directory says so instead of inventing new ones.
func adminJetStream(cfg config.Config) (jetstream.JetStream, *nats.Conn, error) {
	if cfg.NATS.URL == "" {
		cfg.NATS.URL = "nats://" + cfg.NATS.Listen
		if cfg.NATS.Password == "" {
			b, err := config.LoadSecrets(cfg)
			if err != nil {
				return nil, nil, err
			}
			if cfg.NATS.User == "" {
				cfg.NATS.User = "tenantscope"
			}
			if cfg.NATS.Password = b.NATS[cfg.NATS.User]; cfg.NATS.Password == "" {
				return nil, nil, fmt.Errorf("no NATS password of the suite's user %s in %s: run where 'tenantscope serve' keeps its data (--data), or set nats.password", cfg.NATS.User, config.SecretsPath(cfg))
			}
		}
	}
	nc, err := natsbus.ConnectExternal(cfg, "tenantscope-cli")
	if err != nil {
		return nil, nil, fmt.Errorf("is 'tenantscope serve' running? %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
