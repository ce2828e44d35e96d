package bench

import (
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/engine"
)

// The engines the benchmarks start answer, like every engine, only to a
// user with a password: these, on loopback, for the benchmark's lifetime.
const (
	benchUser     = "tenantscope"
	benchPassword = "bench-only-loopback"
)

func benchServerConfig() engine.ServerConfig {
	return engine.ServerConfig{Users: map[string]engine.User{benchUser: {Password: benchPassword}}, Logger: zerolog.Nop()}
}

// benchDSN is the HTTP DSN of a benchmark engine at addr.
func benchDSN(addr string) string { return "http://" + benchUser + ":" + benchPassword + "@" + addr }
