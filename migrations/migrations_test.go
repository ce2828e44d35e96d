package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/engine/enginetest"
	"github.com/tenantscope/tenantscope/migrations"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func TestPlaceholders(t *testing.T) {
	all, err := migrations.All()
	require.NoError(t, err)
	require.NotEmpty(t, all)
	var events migrations.Migration
	for _, m := range all {
		if m.Name == "events" {
			events = m
		}
	}
	single, err := events.Statements(migrations.Params{Database: "db"})
	require.NoError(t, err)
	require.Len(t, single, 1)
	require.Contains(t, single[0], "ENGINE = ReplacingMergeTree(received_at)")
	require.Contains(t, single[0], "TTL toDateTime(time) + toIntervalDay(retention_days)")
	require.Contains(t, single[0], "ttl_only_drop_parts = 1")
	require.NotContains(t, single[0], "ON CLUSTER")
	cluster, err := events.Statements(migrations.Params{Database: "db", Cluster: "main", NoCodecs: true})
	require.NoError(t, err)
	require.Contains(t, cluster[0], "CREATE TABLE IF NOT EXISTS events ON CLUSTER `main`")
	require.Contains(t, cluster[0], "ENGINE = ReplicatedReplacingMergeTree(received_at)")
	require.NotContains(t, cluster[0], "CODEC")
}

func TestUpAppliesOnceAndRefusesEdits(t *testing.T) {
	db := enginetest.New(t)
	ctx := context.Background()
	st, err := chstore.Open(ctx, chstore.Options{DSN: db.URL(), Database: db.Name + "_region", Name: "test"})
	require.NoError(t, err)
	defer st.Close()
	t.Cleanup(func() { _, _ = db.Engine.Engine.Control("DROP DATABASE IF EXISTS " + db.Name + "_region") })
	p := migrations.Params{Database: db.Name + "_region"}
	var lines []string
	n, err := migrations.Up(ctx, st, p, func(s string) { lines = append(lines, s) })
	require.NoError(t, err)
	all, _ := migrations.All()
	require.Equal(t, len(all), n)
	require.Len(t, lines, n)
	n, err = migrations.Up(ctx, st, p, nil)
	require.NoError(t, err)
	require.Zero(t, n, "second run applies nothing")

	status, err := migrations.StatusOf(ctx, st, p.Database)
	require.NoError(t, err)
	for _, s := range status {
		require.True(t, s.Applied)
		require.False(t, s.Edited)
	}
	// The tables exist and accept rows.
	for _, table := range []string{"tenants", "retention_policies", "events", "logs", "spans", "audit_records"} {
		var c uint64
		require.NoError(t, st.QueryRow(ctx, []any{&c}, "SELECT count() FROM "+table), table)
	}

	// Pretend migration 1 was applied with other contents.
	require.NoError(t, st.Exec(ctx, "INSERT INTO "+p.Database+".schema_migrations VALUES (1, 'tenants', 'edited', now64(3) + 1)"))
	_, err = migrations.Up(ctx, st, p, nil)
	require.True(t, errors.Is(err, migrations.ErrChecksum), "got %v", err)
	require.True(t, strings.Contains(err.Error(), "0001_tenants"))
}
