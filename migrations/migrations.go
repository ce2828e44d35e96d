// Package migrations holds the schema as versioned SQL files, embedded in
// the binary, and the runner that applies them.
//
// Files are NNNN_name.sql; statements end with ";" at the end of a line.
// They are text/template documents with placeholders so one file serves a
// single server, the embedded engine and a cluster:
//
//	{{.OnCluster}}           "ON CLUSTER name" when a cluster is configured
//	{{.Database}}            the region's database
//	{{engine "X" "args"}}    X(args), or ReplicatedX(args) on a cluster
//	{{ttl "column"}}         per-row retention TTL with ttl_only_drop_parts
//	{{codec "ZSTD(1)"}}      CODEC(...), or nothing when codecs are off
//
// Each database records what it applied in schema_migrations (version,
// name, checksum, applied_at). An applied file that changed is refused: a
// change of schema is a new migration.
package migrations

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed *.sql
var files embed.FS

// Params fill the placeholders.
type Params struct {
	Database string
	Cluster  string
	NoCodecs bool
}

// Migration is one versioned file.
type Migration struct {
	Version  uint32
	Name     string
	Checksum string
	source   string
}

// Exec is what the runner needs of a ClickHouse connection.
type Exec interface {
	Exec(ctx context.Context, query string, args ...any) error
	// Applied reads database's schema_migrations.
	Applied(ctx context.Context, database string) ([]Applied, error)
}

// Applied is a row of schema_migrations.
type Applied struct {
	Version   uint32
	Name      string
	Checksum  string
	AppliedAt time.Time
}

// ErrChecksum means an applied migration file was edited.
var ErrChecksum = errors.New("migration was edited after it was applied")

var nameRe = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// All returns the embedded migrations in order.
func All() ([]Migration, error) { return load(files) }

func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, e := range entries {
		m := nameRe.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: %s is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32) //nolint:errcheck // four digits
		if other, ok := seen[uint32(v)]; ok {
			return nil, fmt.Errorf("migrations: %s and %s share version %d", e.Name(), other, v)
		}
		seen[uint32(v)] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: uint32(v), Name: m[2], Checksum: hex.EncodeToString(sum[:]), source: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Statements renders the migration's statements for p.
func (m Migration) Statements(p Params) ([]string, error) {
	funcs := template.FuncMap{
		"engine": func(name string, args ...string) string {
			a := strings.Join(args, ", ")
			if p.Cluster != "" {
				return "Replicated" + name + "(" + a + ")"
			}
			return name + "(" + a + ")"
		},
		"ttl": func(col string) string {
			return "TTL toDateTime(" + col + ") + toIntervalDay(retention_days)\nSETTINGS ttl_only_drop_parts = 1"
		},
		"codec": func(c string) string {
			if p.NoCodecs {
				return ""
			}
			return "CODEC(" + c + ")"
		},
	}
	t, err := template.New(m.Name).Funcs(funcs).Option("missingkey=error").Parse(m.source)
	if err != nil {
		return nil, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
	}
	data := map[string]string{"Database": p.Database, "Cluster": p.Cluster, "OnCluster": ""}
	if p.Cluster != "" {
		data["OnCluster"] = "ON CLUSTER " + quoteIdent(p.Cluster)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
	}
	return splitStatements(buf.String()), nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "\\`") + "`" }

// splitStatements splits at lines ending with ";" and drops comment-only parts.
func splitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(sql, "\n") {
		cur.WriteString(line)
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if s := strings.TrimSpace(stripComments(cur.String())); s != "" {
				out = append(out, strings.TrimSuffix(s, ";"))
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(stripComments(cur.String())); s != "" {
		out = append(out, s)
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// Status is one migration's state in a database.
type Status struct {
	Migration
	Applied   bool
	AppliedAt time.Time
	Edited    bool
}

// StatusOf compares the embedded migrations with what db applied.
func StatusOf(ctx context.Context, db Exec, database string) ([]Status, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	if err := ensureTable(ctx, db, database); err != nil {
		return nil, err
	}
	applied, err := db.Applied(ctx, database)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	done := map[uint32]Applied{}
	for _, a := range applied {
		done[a.Version] = a
	}
	out := make([]Status, len(all))
	for i, m := range all {
		a, ok := done[m.Version]
		out[i] = Status{Migration: m, Applied: ok, AppliedAt: a.AppliedAt, Edited: ok && a.Checksum != m.Checksum}
	}
	return out, nil
}

func ensureTable(ctx context.Context, db Exec, database string) error {
	if err := db.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(database)); err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	return db.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+quoteIdent(database)+`.schema_migrations (
		version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')
	) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`)
}

// Up applies every migration database has not applied yet, in order, and
// refuses to go on when an applied one was edited. progress gets one line per
// migration applied.
func Up(ctx context.Context, db Exec, p Params, progress func(string)) (int, error) {
	st, err := StatusOf(ctx, db, p.Database)
	if err != nil {
		return 0, err
	}
	var edited []error
	for _, s := range st {
		if s.Edited {
			edited = append(edited, fmt.Errorf("%w: %04d_%s in database %s (make the change a new migration)", ErrChecksum, s.Version, s.Name, p.Database))
		}
	}
	if len(edited) > 0 {
		return 0, errors.Join(edited...)
	}
	n := 0
	for _, s := range st {
		if s.Applied {
			continue
		}
		stmts, err := s.Statements(p)
		if err != nil {
			return n, err
		}
		for _, stmt := range stmts {
			if err := db.Exec(ctx, stmt); err != nil {
				return n, fmt.Errorf("migration %04d_%s in %s: %w", s.Version, s.Name, p.Database, err)
			}
		}
		if err := db.Exec(ctx, "INSERT INTO "+quoteIdent(p.Database)+".schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, now64(3))",
			s.Version, s.Name, s.Checksum); err != nil {
			return n, fmt.Errorf("record migration %04d: %w", s.Version, err)
		}
		n++
		if progress != nil {
			progress(fmt.Sprintf("applied %04d_%s to %s", s.Version, s.Name, p.Database))
		}
	}
	return n, nil
}
