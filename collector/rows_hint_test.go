package collector

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/wire"
)

// TestRowsHintBelievesNoMoreThanTheBytesHold: a publisher's Batch-Items
// sizes how much room a batch reserves for rows, so a hostile header on a
// small message must not reserve room for rows its bytes cannot hold.
func TestRowsHintBelievesNoMoreThanTheBytesHold(t *testing.T) {
	h := nats.Header{}
	require.Equal(t, 1, rowsHint(h, 300), "a plain message is one row")
	h.Set(wire.BatchItemsHeader, "1000000000")
	require.Equal(t, 7, rowsHint(h, 100), "100 bytes cannot hold more than 7 rows of 16 bytes")
	require.Equal(t, maxRowsHint, rowsHint(h, 4<<20), "and never more than maxRowsHint")
	h.Set(wire.BatchItemsHeader, "512")
	require.Equal(t, 512, rowsHint(h, 150<<10), "an honest batch is believed")
	h.Set(wire.BatchItemsHeader, "-5")
	require.Equal(t, 1, rowsHint(h, 150<<10))
}
