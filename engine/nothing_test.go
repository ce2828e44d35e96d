package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/engine/enginetest"
)

// Nothing is written as one byte per row. clickhouse-go's column.Nothing
// decodes those bytes but encodes none, so a reframer that re-encoded blocks
// with its codecs dropped them and clickhouse-go then ran into the end of the
// stream, which it takes for a clean end: zero rows and no error.
func TestNullableNothingRowsSurvive(t *testing.T) {
	db := enginetest.New(t)
	conn := db.Conn(t)
	ctx := context.Background()

	var a uint8
	var b any
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1 AS a, NULL AS b").Scan(&a, &b))
	require.Equal(t, uint8(1), a)
	require.Nil(t, b)

	for _, c := range []struct {
		sql   string
		types []string
		rows  int
	}{
		{"SELECT 1 AS a, NULL AS b", []string{"UInt8", "Nullable(Nothing)"}, 1},
		{"SELECT NULL AS b, 1 AS a", []string{"Nullable(Nothing)", "UInt8"}, 1},
		{"SELECT NULL AS b", []string{"Nullable(Nothing)"}, 1},
		{"SELECT number, NULL AS b FROM numbers(5)", []string{"UInt64", "Nullable(Nothing)"}, 5},
		{"SELECT number, NULL AS b FROM numbers(100) SETTINGS max_block_size = 7", []string{"UInt64", "Nullable(Nothing)"}, 100},
		{"SELECT [] AS x", []string{"Array(Nothing)"}, 1},
		{"SELECT [NULL, NULL] AS x, 2 AS y", []string{"Array(Nullable(Nothing))", "UInt8"}, 1},
		{"SELECT map(1, NULL) AS m, 2 AS y", []string{"Map(UInt8, Nullable(Nothing))", "UInt8"}, 1},
		{"SELECT tuple(1, NULL) AS t, 2 AS y", []string{"Tuple(UInt8, Nullable(Nothing))", "UInt8"}, 1},
	} {
		t.Run(c.sql, func(t *testing.T) {
			rows, err := conn.Query(ctx, c.sql)
			require.NoError(t, err)
			defer rows.Close()
			var types []string
			for _, ct := range rows.ColumnTypes() {
				types = append(types, ct.DatabaseTypeName())
			}
			require.Equal(t, c.types, types)
			n := 0
			for rows.Next() {
				n++
			}
			require.NoError(t, rows.Err())
			require.Equal(t, c.rows, n)
		})
	}
}
