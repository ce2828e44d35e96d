package collector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/collector/collectortest"
)

// TestSwitchingMessageSizesKeepsPulling: a tenant switches between small
// and large messages again and again, so the collector re-sizes its pull
// each time (it drains the old one); every message is stored.
func TestSwitchingMessageSizesKeepsPulling(t *testing.T) {
	p := collectortest.Start(t, nil, "acme")
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	big := strings.Repeat("x", 60<<10)
	n := 0
	for round := range 12 {
		for i := range 100 {
			m := nats.NewMsg("tenant.acme.orders.order_created")
			m.Header.Set("Tenant-Id", "acme")
			note := ""
			if round%2 == 1 {
				note = big
			}
			m.Data = fmt.Appendf(nil, `{"n":%d,"note":%q}`, i, note)
			_, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
			n++
		}
		if round%4 == 3 {
			want := uint64(n)
			require.Eventually(t, func() bool {
				return p.Count(t, "SELECT count() FROM events WHERE tenant_id = 'acme'") >= want
			}, 30*time.Second, 20*time.Millisecond, "round %d: the collector stopped pulling", round)
		}
	}
}
