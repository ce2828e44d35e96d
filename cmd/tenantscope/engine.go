package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/engine/chdb"
)

func runEngine(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", envOr(getenv, "TENANTSCOPE_DATA", "./data/engine"), "engine data directory")
	listen := fs.String("listen", envOr(getenv, "TENANTSCOPE_ENGINE_LISTEN", "127.0.0.1:8123"), "address of the ClickHouse HTTP interface")
	lib := fs.String("chdb-lib", chdb.DefaultLibraryPath(getenv), "path of libchdb (fetched by 'make chdb')")
	pool := fs.Int("pool", 0, "connections per pool (0: number of CPUs)")
	user := fs.String("user", envOr(getenv, "TENANTSCOPE_ENGINE_USER", config.EngineUser), "read-write user clients present")
	password := fs.String("password", "", "password of --user (or TENANTSCOPE_ENGINE_PASSWORD; generated into <data>/credentials when absent)")
	reader := fs.String("reader", config.EngineReader, "read-only user (people, Grafana, curl)")
	readerPassword := fs.String("reader-password", "", "password of --reader (or TENANTSCOPE_ENGINE_READER_PASSWORD; generated when absent)")
	var origins, hosts, urlHosts listFlag
	fs.Var(&origins, "allow-origin", "browser origin allowed to send requests (repeatable; none by default)")
	fs.Var(&hosts, "host", "extra name clients reach this server by, checked against the Host header (repeatable)")
	fs.Var(&urlHosts, "allow-url-host", "host:port that url() may read, e.g. another region's engine (repeatable)")
	maxBody := fs.Int64("max-body", 1<<30, "largest request body in bytes, before and after decompression")
	allocator := fs.String("allocator", "", "the engine allocator's options, as jemalloc's JE_MALLOC_CONF takes them (JE_MALLOC_CONF wins; '-': the library's own; default \""+config.DefaultEngineAllocator+"\")")
	logLevel := fs.String("log-level", envOr(getenv, "TENANTSCOPE_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil || *logLevel == "" {
		return fmt.Errorf("%w: --log-level %q is not debug, info, warn or error", errUsage, *logLevel)
	}
	if *password == "" {
		*password = getenv("TENANTSCOPE_ENGINE_PASSWORD")
	}
	if *readerPassword == "" {
		*readerPassword = getenv("TENANTSCOPE_ENGINE_READER_PASSWORD")
	}
	credPath, err := engineCredentials(*data, *user, password, *reader, readerPassword)
	if err != nil {
		return err
	}
	log := zerolog.New(stderr).Level(lvl).With().Timestamp().Str("component", "engine").Logger()
	users := map[string]engine.User{*user: {Password: *password}, *reader: {Password: *readerPassword, ReadOnly: true}}
	local, err := engine.StartLocal(engine.Config{Dir: *data, LibPath: *lib, PoolSize: *pool, Logger: log, Allocator: config.Memory{EngineAllocator: *allocator}.EngineAllocatorOptions()},
		engine.ServerConfig{Users: users, AllowOrigins: origins, Hosts: hosts, URLHosts: urlHosts, MaxBodyBytes: *maxBody, Logger: log}, *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ClickHouse %s (embedded) at http://%s  data %s\n", local.Engine.Version, local.Addr, local.Engine.Dir())
	if credPath != "" {
		fmt.Fprintf(stdout, "users %s (read-write) and %s (read-only); generated passwords are in %s\n", *user, *reader, credPath)
	}
	select {
	case err = <-local.Served:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(err, local.Close(sctx))
}

func envOr(getenv func(string) string, key, def string) string {
	if v := strings.TrimSpace(getenv(key)); v != "" {
		return v
	}
	return def
}

// engineCredentials fills missing passwords from <data>/credentials (mode
// 0600, "user password" lines), generating and saving them the first time.
// It returns the file's path when it was used.
func engineCredentials(data, user string, password *string, reader string, readerPassword *string) (string, error) {
	if *password != "" && *readerPassword != "" {
		return "", nil
	}
	path := filepath.Join(data, "credentials")
	saved := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				saved[f[0]] = f[1]
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("engine credentials: %w", err)
	}
	for _, u := range []struct {
		name string
		pw   *string
	}{{user, password}, {reader, readerPassword}} {
		if *u.pw != "" {
			continue
		}
		if saved[u.name] == "" {
			saved[u.name] = config.RandomSecret(18)
		}
		*u.pw = saved[u.name]
	}
	if err := os.MkdirAll(data, 0o750); err != nil {
		return "", err
	}
	var b strings.Builder
	for name, pw := range saved {
		fmt.Fprintf(&b, "%s %s\n", name, pw)
	}
	if err := config.WriteSecretFile(path, []byte(b.String())); err != nil {
		return "", fmt.Errorf("engine credentials: %w", err)
	}
	return path, nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
