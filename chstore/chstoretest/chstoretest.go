// Package chstoretest gives a test a store on a fresh database of the
// shared embedded engine (engine/enginetest), with every migration applied.
package chstoretest

import (
	"context"
	"testing"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/migrations"
)

// Migrated opens a store on a fresh migrated database, closed when t ends.
// The package's TestMain must call enginetest.Main.
func Migrated(t testing.TB) *chstore.Store {
	t.Helper()
	db := enginetest.New(t)
	ctx := context.Background()
	st, err := chstore.Open(ctx, chstore.Options{DSN: db.URL(), Database: db.Name, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) //nolint:errcheck // test teardown
	if _, err := migrations.Up(ctx, st, migrations.Params{Database: db.Name}, nil); err != nil {
		t.Fatal(err)
	}
	return st
}
