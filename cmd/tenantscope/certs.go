package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/edge"
)

// runCerts writes a local CA and a certificate for each named service, for
// TLS between the services of one deployment (docker-compose: 'make certs').
// A production deployment uses its own PKI instead.
func runCerts(_ context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "deploy/certs", "directory to write ca.crt/ca.key and <service>.crt/.key into")
	services := fs.String("services", "nats:nats-1:nats-2:nats-3,clickhouse,tenantscope:ui:collector:audit-writer:migrate,prometheus,grafana",
		"comma-separated certificates, each name[:host...] (the hosts default to the name); each also covers localhost and 127.0.0.1")
	days := fs.Int("days", 365, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	valid := time.Duration(*days) * 24 * time.Hour
	ca, err := edge.NewLocalCA(*dir, valid)
	if err != nil {
		return err
	}
	var names []string
	for _, s := range strings.Split(*services, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		parts := strings.Split(s, ":")
		hosts := parts[1:]
		if len(hosts) == 0 {
			hosts = parts[:1]
		}
		if _, _, err := ca.Issue(*dir, parts[0], append(hosts, "localhost", "127.0.0.1"), valid); err != nil {
			return err
		}
		names = append(names, parts[0])
	}
	_, err = fmt.Fprintf(stdout, "local CA %s and certificates for %s in %s (keys 0600), valid %d days\n",
		ca.File, strings.Join(names, ", "), *dir, *days)
	return err
}
