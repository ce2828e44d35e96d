package auditlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
)

// BenchmarkChainAppend reports records/s appended (hashed and stored) in
// batches as the collector hands them over: up to 5,000 (its default batch),
// or 1,000 when traffic is light; serve checkpoints every 1,000 records.
func BenchmarkChainAppend(b *testing.B) {
	for _, batch := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := newBenchChain(b)
			recs := make([]auditlog.Record, batch)
			b.ResetTimer()
			for n := range b.N {
				for i := range recs {
					recs[i] = sample(n*batch + i)
					recs[i].RecordID = [16]byte{}
				}
				if _, err := c.w.Append(context.Background(), "acme", recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkVerify reports records/s verified (read from ClickHouse, hashes
// and links recomputed, Merkle roots of the checkpoints recomputed and their
// signatures checked) of one tenant's chain of 100,000 records, by the
// streamed read path (Verify) and, in the same run, by the row-by-row one it
// replaced (VerifyV0, kept in verify_v0_test.go as the baseline):
//
//	go test ./auditlog -run '^$' -bench BenchmarkVerify -benchtime 5x -count 3
func BenchmarkVerify(b *testing.B) {
	c := newBenchChain(b)
	const total = 100_000
	for start := 0; start < total; start += 5000 {
		recs := make([]auditlog.Record, 5000)
		for i := range recs {
			recs[i] = sample(start + i)
			recs[i].RecordID = [16]byte{}
		}
		if _, err := c.w.Append(context.Background(), "acme", recs); err != nil {
			b.Fatal(err)
		}
	}
	for _, path := range []struct {
		name   string
		verify func(context.Context, *chstore.Store, string, uint64, string) (auditlog.Report, error)
	}{{"read=streamed", auditlog.Verify}, {"read=rowwise-before", auditlog.VerifyV0}} {
		b.Run(path.name, func(b *testing.B) {
			for range b.N {
				rep, err := path.verify(context.Background(), c.st, "acme", 1, c.verify)
				if err != nil || !rep.OK() || rep.Records != total {
					b.Fatalf("%v %+v", err, rep)
				}
			}
			b.ReportMetric(float64(b.N*total)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

func newBenchChain(b *testing.B) *chain { return newChain(b, 0, 1000) }
