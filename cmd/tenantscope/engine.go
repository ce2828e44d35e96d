package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

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
	user := fs.String("user", envOr(getenv, "TENANTSCOPE_ENGINE_USER", ""), "user name clients must present (required off loopback)")
	password := fs.String("password", "", "password for --user (or TENANTSCOPE_ENGINE_PASSWORD)")
	maxBody := fs.Int64("max-body", 1<<30, "largest request body in bytes, before and after decompression")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *password == "" {
		*password = getenv("TENANTSCOPE_ENGINE_PASSWORD")
	}
	log := zerolog.New(stderr).With().Timestamp().Str("component", "engine").Logger()
	users := map[string]string{}
	if *user != "" {
		users[*user] = *password
	}
	local, err := engine.StartLocal(engine.Config{Dir: *data, LibPath: *lib, PoolSize: *pool, Logger: log},
		engine.ServerConfig{Users: users, MaxBodyBytes: *maxBody, Logger: log}, *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ClickHouse %s (embedded) at http://%s  data %s\n", local.Engine.Version, local.Addr, local.Engine.Dir())
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
