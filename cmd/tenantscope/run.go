package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/tenantscope/tenantscope/suite"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// subcommandUsage is, for each command whose first argument names a
// subcommand, what '<command> -h' prints; the other commands' flag sets
// print theirs.
var subcommandUsage = map[string]string{
	"bench":      "bench engine|ingest|sdk|otlp|audit|cost|erase|move [flags]",
	"migrate":    "migrate up|status [flags]",
	"config":     "config validate|show [flags] | config hash (the secret on stdin)",
	"deadletter": deadletterUsage,
	"nats":       natsUsage,
	"secrets":    "secrets init --out FILE [flags]",
	"report":     reportUsage,
	"period":     periodUsage,
	"slo":        sloUsage,
	"retention":  retentionUsage,
}

func commands() map[string]command {
	return map[string]command{
		"bench":         {"run a benchmark and print its table (engine, ingest, sdk, otlp, audit, cost, erase, move)", runBench},
		"serve":         {"run the whole suite in one process (embedded NATS and ClickHouse by default)", runSuite(suite.All, "serve")},
		"collector":     {"run only the collector (distributed shape: --nats-url, --clickhouse-dsn)", runSuite(suite.Components{Collector: true}, "collector")},
		"ui":            {"run only the UI and API (distributed shape: --nats-url, --clickhouse-dsn)", runSuite(suite.Components{UI: true}, "ui")},
		"migrate":       {"apply (up) or list (status) schema migrations on every region", runMigrate},
		"config":        {"validate or show (secrets redacted) a configuration; hash a secret", runConfig},
		"deadletter":    {"list, show or replay dead letters (--tenant, --reason)", runDeadletter},
		"verify":        {"verify the tenants' audit chains and signed checkpoints (--tenant, --from)", runVerify},
		"export":        {"a tenant's data as a bundle it can verify offline (--tenant, --out); 'export audit' streams its trail as CSV or JSON lines", runExport},
		"verify-export": {"verify an export bundle offline (--verifier-key)", runVerifyExport},
		"demo":          {"publish demo traffic as the configured tenants to a running suite", runDemo},
		"nats":          {"write NATS credentials: 'nats setup --dir D' (operator, accounts, resolver for a cluster), 'nats creds --tenant T --out F'", runNats},
		"certs":         {"write a local CA and a certificate per service for TLS between a deployment's services (make certs)", runCerts},
		"secrets":       {"write the secrets a distributed deployment's processes share (secrets init --out FILE)", runSecrets},
		"engine":        {"serve only the embedded ClickHouse engine over ClickHouse's HTTP interface", runEngine},
		"version":       {"print the version", runVersion},
		"report":        {"a month's cost, SLA or margin report as CSV or JSON (report cost|sla|margin --period 2026-11)", runReport},
		"period":        {"close a month's cost report, or adjust a closed one (audited)", runPeriod},
		"slo":           {"print the Prometheus rules file of the SLO burn-rate alerts (slo rules)", runSLO},
		"erase":         {"erase a data subject from a tenant (--dry-run counts), with a signed certificate in its audit chain", runErase},
		"purge":         {"run a purge now: policies and holds enforced, expired rows removed, receipts chained", runPurge},
		"retention":     {"show or set a tenant's retention policies, place or lift legal holds, report residency", runRetention},
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("unknown command %q", args[0])
	}
	if u := subcommandUsage[args[0]]; u != "" && len(args) > 1 && isHelp(args[1]) {
		_, err := fmt.Fprintf(stdout, "usage: tenantscope %s\n\n%s.\nRun 'tenantscope %s <subcommand> -h' for a subcommand's flags.\n", u, c.summary, args[0])
		return err
	}
	err := c.run(ctx, args[1:], getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the flag set printed the usage asked for
	}
	return err
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// wantsHelp reports whether any argument asks for help (commands that take
// no flags, or read stdin, check it before doing anything).
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelp(a) {
			return true
		}
	}
	return false
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: tenantscope <command> [flags]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-14s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nRun 'tenantscope <command> -h' for a command's flags.\n")
	_, _ = io.WriteString(w, b.String()) //nolint:errcheck // usage to a closed stream is not worth an error
}

func runVersion(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	if wantsHelp(args) {
		_, err := fmt.Fprintln(stdout, "usage: tenantscope version")
		return err
	}
	_, err := fmt.Fprintf(stdout, "tenantscope %s\n", version)
	return err
}

var errUsage = errors.New("bad usage")

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
