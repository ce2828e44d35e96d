package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/engine"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/sdk"
)

// IngestConfig configures the ingest benchmark.
type IngestConfig struct {
	Dir     string
	LibPath string
	Tenants int // default 4
	Events  int // per tenant (default 50,000)
	// LatencyFor is how long the half-load latency phase publishes (default 5s).
	LatencyFor time.Duration
	// BatchedEvents is how many events per tenant the SDK publishes in
	// batches (default 250,000; negative skips the phase).
	BatchedEvents int
	// BatchSize and BatchAge are the collector's batching (0: the
	// collector's defaults, as serve runs it).
	BatchSize int
	BatchAge  time.Duration
}

// IngestResult is what the ingest benchmark measured.
type IngestResult struct {
	Tenants, Events int
	PayloadBytes    int
	EndToEndPerSec  float64 // publish -> stored in ClickHouse
	BusOnlyPerSec   float64 // publish + pull + ack, no processing
	Ratio           float64
	// SuiteBusPerSec is the bus alone as it was measured before tenant
	// accounts: published from the suite's account, acked in bulk (AckAll).
	SuiteBusPerSec float64
	// BatchedEvents per tenant went through the SDK in batch messages;
	// BatchedPerSec is their end-to-end rate, BatchedMessages how many
	// messages carried them.
	BatchedEvents   int
	BatchedPerSec   float64
	BatchedMessages uint64
	// BatchedPublishSeconds is how long publishing them took (until
	// JetStream acknowledged the last).
	BatchedPublishSeconds float64
	// Stages is where the collector's time went (its metrics).
	Stages                 string
	HalfLoadPerSec         float64
	LatencyP50, LatencyP99 time.Duration
	RSSMiB                 float64
	// AcksLost and AcksForeign count the load generator's publishes whose
	// acknowledgement never came or named another stream, published again
	// (see republisher).
	AcksLost, AcksForeign int64
}

// payload is the JSON of event i, sent at sent (291 bytes). It is built
// with strconv rather than fmt: the load generator shares the
// machine's cores with the suite, and fmt.Appendf took 6 % of the process's
// CPU in bench ingest's SDK phase (TestPayloadIsUnchanged holds it to the
// fmt version).
func payload(i int, sent time.Time) []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"time":"`...)
	b = sent.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","actor":{"id":"user-`...)
	b = strconv.AppendInt(b, int64(i%997), 10)
	b = append(b, `","type":"user"},"entity":"order-`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","amount":`...)
	b = strconv.AppendInt(b, int64(i%10000), 10)
	b = append(b, '.', byte('0'+i%100/10), byte('0'+i%10))
	b = append(b, `,"currency":"EUR","items":[{"sku":"A-`...)
	b = strconv.AppendInt(b, int64(i%50), 10)
	b = append(b, `","qty":`...)
	b = strconv.AppendInt(b, int64(i%7+1), 10)
	b = append(b, `}],"note":"`...)
	b = append(b, payloadNote...)
	return append(b, `"}`...)
}

var payloadNote = strings.Repeat("x", 120)

// RunIngest measures N tenants x M events through JetStream into ClickHouse,
// and in the same run the bus alone (publish, pull, ack of the same messages).
func RunIngest(ctx context.Context, cfg IngestConfig, progress io.Writer) (IngestResult, error) {
	if cfg.Tenants == 0 {
		cfg.Tenants = 4
	}
	if cfg.Events == 0 {
		cfg.Events = 50_000
	}
	if cfg.LatencyFor == 0 {
		cfg.LatencyFor = 5 * time.Second
	}
	if cfg.BatchedEvents == 0 {
		cfg.BatchedEvents = 250_000
	}
	res := IngestResult{Tenants: cfg.Tenants, Events: cfg.Events, PayloadBytes: len(payload(0, time.Now())), BatchedEvents: max(cfg.BatchedEvents, 0)}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tenantscope-bench-ingest-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	total := cfg.Tenants * cfg.Events
	step := func(format string, a ...any) { fmt.Fprintf(progress, "bench ingest: "+format+"\n", a...) }

	// The pipeline, in this process: engine, NATS, one region, a collector.
	local, err := engine.StartLocal(engine.Config{Dir: filepath.Join(cfg.Dir, "engine"), LibPath: cfg.LibPath, Logger: zerolog.Nop()}, benchServerConfig(), "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer local.Close(context.Background()) //nolint:errcheck // benchmark teardown

	sc := config.Default()
	sc.Data = cfg.Dir
	sc.NATS.Listen = "127.0.0.1:0"
	// Work-queue streams hold only what waits: 512 MiB a tenant is plenty, and
	// the whole reservation (about 4 GiB) fits a machine with a few GB free.
	sc.NATS.Stream.MaxBytes = 512 << 20
	sc.Quotas = config.Quota{EventsPerSecond: 1e7, BytesPerSecond: 1e10}
	sc.Regions = []config.Region{{Name: "bench", Database: "bench"}}
	// Tenants t00… take the end-to-end load, b00… the bus-only load (their
	// streams and consumers are the same, nothing else reads them).
	for _, prefix := range []string{"t", "b"} {
		for i := range cfg.Tenants {
			id := fmt.Sprintf("%s%02d", prefix, i)
			sc.Tenants = append(sc.Tenants, config.Tenant{ID: id, Region: "bench", NATS: config.Credentials{User: id}})
		}
	}
	p, closePipeline, err := startPipeline(ctx, local, &sc)
	if err != nil {
		return res, err
	}
	defer closePipeline()
	st, ns, nc, js := p.st, p.ns, p.nc, p.js

	b, err := config.LoadBootstrap(sc.Data)
	if err != nil {
		return res, err
	}
	asTenant := func(id string) (*nats.Conn, error) {
		return nats.Connect(ns.ClientURL(), nats.UserInfo(id, b.NATS[id]), nats.Name("bench-"+id))
	}

	// 1. The bus alone: the same messages, published as tenants through
	//    their accounts into their streams, pulled by the collector's
	//    durable consumer and acked one by one as the collector acks,
	//    nothing else done.
	step("bus only: %d tenants x %d messages of %d bytes, through the tenants' accounts", cfg.Tenants, cfg.Events, res.PayloadBytes)
	var acks lostAcks
	took, err := phase(ctx, func(ctx context.Context) error {
		return publishAll(ctx, nc, cfg, "b", func(t int) string { return fmt.Sprintf("tenant.b%02d.orders.order_created", t) }, asTenant, &acks)
	}, func(ctx context.Context) error { return consumeTenants(ctx, js, "b", cfg.Tenants, total, progress) })
	if err != nil {
		return res, err
	}
	res.BusOnlyPerSec = float64(total) / took.Seconds()

	// 1b. For reference, the bus as measured before tenant accounts: a
	//     scratch stream in the suite's account, acked in bulk.
	step("bus only, suite account and AckAll (reference)")
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: benchBusStream, Subjects: []string{"benchbus.>"}, Storage: jetstream.FileStorage, MaxBytes: 1 << 30}); err != nil {
		return res, err
	}
	took, err = phase(ctx, func(ctx context.Context) error {
		return publishAll(ctx, nc, cfg, "t", func(t int) string { return fmt.Sprintf("benchbus.t%02d.orders.order_created", t) }, nil, &acks)
	}, func(ctx context.Context) error { return consumeAll(ctx, js, benchBusStream, total, progress) })
	if err != nil {
		return res, err
	}
	res.SuiteBusPerSec = float64(total) / took.Seconds()
	if err := js.DeleteStream(ctx, benchBusStream); err != nil {
		return res, err
	}

	// 2. End to end: publish as the tenants, the collector stores in ClickHouse.
	reg := prometheus.NewRegistry()
	col, err := collector.New(collector.Config{BatchSize: cfg.BatchSize, BatchAge: cfg.BatchAge},
		js, sc, placement.New(), map[string]*chstore.Store{"bench": st}, zerolog.Nop(), reg, nil)
	if err != nil {
		return res, err
	}
	colCtx, stopCol := context.WithCancel(ctx)
	colDone := make(chan error, 1)
	go func() { colDone <- col.Run(colCtx) }()
	defer func() { stopCol(); <-colDone }()

	step("end to end: %d tenants x %d events -> ClickHouse", cfg.Tenants, cfg.Events)
	took, err = phase(ctx, func(ctx context.Context) error {
		return publishAll(ctx, nc, cfg, "t", func(t int) string { return fmt.Sprintf("tenant.t%02d.orders.order_created", t) }, asTenant, &acks)
	}, func(ctx context.Context) error { return waitRows(ctx, st, uint64(total), progress) })
	if err != nil {
		return res, err
	}
	res.EndToEndPerSec = float64(total) / took.Seconds()
	res.Ratio = res.EndToEndPerSec / res.BusOnlyPerSec
	stored := uint64(total)

	// 2b. End to end with the SDK's batches (its defaults), as services
	//     publish with it.
	if cfg.BatchedEvents > 0 {
		step("end to end, SDK batches: %d tenants x %d events -> ClickHouse", cfg.Tenants, cfg.BatchedEvents)
		before, err := streamMessages(ctx, js, sc.Tenants[:cfg.Tenants])
		if err != nil {
			return res, err
		}
		start := time.Now()
		stored += uint64(cfg.Tenants * cfg.BatchedEvents)
		took, err := phase(ctx, func(ctx context.Context) error {
			ids := make([]string, cfg.Tenants)
			for i, t := range sc.Tenants[:cfg.Tenants] {
				ids[i] = t.ID
			}
			err := publishSDK(ctx, ns.ClientURL(), b, ids, func(id string) string { return id }, cfg.BatchedEvents)
			res.BatchedPublishSeconds = time.Since(start).Seconds()
			return err
		}, func(ctx context.Context) error { return waitRows(ctx, st, stored, progress) })
		if err != nil {
			return res, err
		}
		res.BatchedPerSec = float64(cfg.Tenants*cfg.BatchedEvents) / took.Seconds()
		after, err := streamMessages(ctx, js, sc.Tenants[:cfg.Tenants])
		if err != nil {
			return res, err
		}
		res.BatchedMessages = after - before
		res.Stages = stageTimes(reg)
	}

	// 3. Latency at half the end-to-end rate: every event carries its
	//    publish time; ClickHouse stamps received_at when it stores the row.
	res.HalfLoadPerSec = res.EndToEndPerSec / 2
	step("latency at half load: %.0f events/s for %s", res.HalfLoadPerSec, cfg.LatencyFor)
	paced, err := publishPaced(ctx, nc, sc.Tenants[:cfg.Tenants], res.HalfLoadPerSec, cfg.LatencyFor, &acks)
	if err != nil {
		return res, err
	}
	// Every paced event was acknowledged by JetStream: wait for all of them.
	if err := waitRows(ctx, st, stored+paced, progress); err != nil {
		return res, err
	}
	time.Sleep(time.Second)
	var q []float64
	if err := st.QueryRow(ctx, []any{&q}, "SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', time, received_at)) FROM events WHERE service = 'paced'"); err != nil {
		return res, err
	}
	if len(q) == 2 {
		res.LatencyP50 = time.Duration(q[0] * float64(time.Millisecond))
		res.LatencyP99 = time.Duration(q[1] * float64(time.Millisecond))
	}
	res.RSSMiB = rssMiB()
	res.AcksLost, res.AcksForeign = acks.Lost.Load(), acks.Foreign.Load()
	return res, nil
}

// phase publishes and waits for what it published to arrive side by side,
// and returns how long the arrival took: a publish acknowledgement that
// never came (published again after ackWait) does not count against the
// pipeline, which had what it needed long before. A publish error ends
// the wait; phase returns when both are done.
func phase(ctx context.Context, publish, arrived func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	published := make(chan error, 1)
	go func() {
		err := publish(ctx)
		if err != nil {
			cancel(err)
		}
		published <- err
	}()
	if err := arrived(ctx); err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, err) {
			return 0, cause
		}
		return 0, err
	}
	took := time.Since(start)
	return took, <-published
}

// publishAll publishes cfg.Events messages per tenant, one goroutine per
// tenant, asynchronously with a bounded number in flight. With asTenant set
// it connects as each tenant (through its own NATS account, as services
// do); otherwise it uses nc.
func publishAll(ctx context.Context, nc *nats.Conn, cfg IngestConfig, prefix string, subject func(int) string, asTenant func(id string) (*nats.Conn, error), acks *lostAcks) error {
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Tenants)
	for t := range cfg.Tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := nc
			if asTenant != nil {
				c, err := asTenant(fmt.Sprintf("%s%02d", prefix, t))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				conn = c
			}
			rp, err := newRepublisher(conn, streamOf, acks, ackWait)
			if err != nil {
				errs <- err
				return
			}
			subj := subject(t)
			tenant := fmt.Sprintf("%s%02d", prefix, t)
			for i := range cfg.Events {
				m := nats.NewMsg(subj)
				m.Header.Set("Tenant-Id", tenant)
				m.Header.Set(nats.MsgIdHdr, uuid.NewString())
				m.Data = payload(i, time.Now())
				if err := rp.publish(m); err != nil {
					errs <- err
					return
				}
			}
			if err := rp.complete(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// publishSDK publishes events per tenant with the SDK (batched, its
// defaults), as each tenant (its NATS user user(tenant), whose password
// is in b), one goroutine per tenant, and flushes.
func publishSDK(ctx context.Context, url string, b *config.Bootstrap, tenants []string, user func(tenant string) string, events int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(tenants))
	for _, id := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub, err := sdk.New(sdk.Config{URL: url, Tenant: id, User: user(id), Password: b.NATS[user(id)], StallWait: time.Minute})
			if err != nil {
				errs <- err
				return
			}
			for i := range events {
				if err := pub.Event(ctx, "orders", "order_created", json.RawMessage(payload(i, time.Now()))); err != nil {
					errs <- err
					break
				}
			}
			if err := pub.Close(ctx); err != nil {
				errs <- err
			}
			if _, failed, lastErr := pub.Stats(); failed > 0 {
				errs <- fmt.Errorf("tenant %s: %d events failed: %w", id, failed, lastErr)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// streamMessages is how many messages the tenants' streams have taken.
func streamMessages(ctx context.Context, js jetstream.JetStream, tenants []config.Tenant) (uint64, error) {
	var n uint64
	for _, t := range tenants {
		st, err := js.Stream(ctx, natsbus.IngestStream(t.ID))
		if err != nil {
			return 0, err
		}
		n += st.CachedInfo().State.LastSeq
	}
	return n, nil
}

// consumeTenants pulls total messages from the streams of tenants
// prefix00… with the collector's durable consumer, acking each.
func consumeTenants(ctx context.Context, js jetstream.JetStream, prefix string, tenants, total int, progress io.Writer) error {
	var got atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, tenants)
	for t := range tenants {
		cons, err := js.Consumer(ctx, natsbus.IngestStream(fmt.Sprintf("%s%02d", prefix, t)), natsbus.CollectorDurable)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(got.Load()) < total && ctx.Err() == nil {
				batch, err := cons.Fetch(5000, jetstream.FetchMaxWait(200*time.Millisecond))
				if err != nil {
					errs <- err
					return
				}
				for m := range batch.Messages() {
					if err := m.Ack(); err != nil {
						errs <- err
						return
					}
					got.Add(1)
				}
				if t == 0 {
					bar(progress, "bus", int(got.Load()), total)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintln(progress)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// stageTimes sums the collector's batch metrics: batches, messages per
// batch, seconds storing.
func stageTimes(reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		return err.Error()
	}
	values := map[string]float64{}
	var redelivered float64
	for _, mf := range mfs {
		if name, ok := strings.CutPrefix(mf.GetName(), "tenantscope_collector_"); ok && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetHistogram() != nil {
			h := mf.GetMetric()[0].GetHistogram()
			values[name+"_count"], values[name+"_sum"] = float64(h.GetSampleCount()), h.GetSampleSum()
		}
		if mf.GetName() == "tenantscope_collector_redelivered_total" {
			for _, m := range mf.GetMetric() {
				redelivered += m.GetCounter().GetValue()
			}
		}
	}
	// A redelivered message waited out the ack wait (or a failed insert's
	// delay): a stall of seconds in the phase it fell in.
	return fmt.Sprintf("%s; messages redelivered: %.0f", formatStages(values), redelivered)
}

// formatStages prints the collector's three batch histograms from their
// _count and _sum values (by name without the tenantscope_collector_
// prefix).
func formatStages(values map[string]float64) string {
	var out []string
	for _, h := range []string{"batch_age_seconds", "batch_messages", "insert_seconds"} {
		out = append(out, fmt.Sprintf("%s: %.0f, sum %.1f", h, values[h+"_count"], values[h+"_sum"]))
	}
	return strings.Join(out, "; ")
}

func consumeAll(ctx context.Context, js jetstream.JetStream, stream string, total int, progress io.Writer) error {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "bench", AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 50000})
	if err != nil {
		return err
	}
	got := 0
	for got < total {
		batch, err := cons.Fetch(5000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		var last jetstream.Msg
		for m := range batch.Messages() {
			last = m
			got++
		}
		if last != nil {
			if err := last.Ack(); err != nil {
				return err
			}
		}
		bar(progress, "bus", got, total)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	fmt.Fprintln(progress)
	return nil
}

func waitRows(ctx context.Context, st *chstore.Store, want uint64, progress io.Writer) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var n uint64
		if err := st.QueryRow(ctx, []any{&n}, "SELECT count() FROM events"); err != nil {
			return err
		}
		bar(progress, "stored", int(min(n, want)), int(want))
		if n >= want {
			fmt.Fprintln(progress)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d rows stored after 10 minutes", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishPaced publishes at rate events/s spread over the tenants for d
// (fewer when ticks are missed) and says how many it published.
func publishPaced(ctx context.Context, nc *nats.Conn, tenants []config.Tenant, rate float64, d time.Duration, acks *lostAcks) (uint64, error) {
	rp, err := newRepublisher(nc, streamOf, acks, ackWait)
	if err != nil {
		return 0, err
	}
	interval := time.Duration(float64(time.Second) / rate * 100) // 100 events per tick
	tick := time.NewTicker(max(interval, time.Millisecond))
	defer tick.Stop()
	end := time.Now().Add(d)
	var i atomic.Int64
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
		for range 100 {
			k := int(i.Add(1))
			t := tenants[k%len(tenants)].ID
			m := nats.NewMsg("tenant." + t + ".paced.order_created")
			m.Header.Set("Tenant-Id", t)
			m.Header.Set(nats.MsgIdHdr, uuid.NewString())
			m.Data = payload(k, time.Now())
			if err := rp.publish(m); err != nil {
				return 0, err
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := rp.complete(wctx); err != nil {
		return 0, fmt.Errorf("paced publishes: %w", err)
	}
	return uint64(i.Load()), nil
}

func bar(w io.Writer, label string, done, total int) {
	const width = 30
	filled := width * done / max(total, 1)
	fmt.Fprintf(w, "\r  %-7s [%s%s] %3d%% %d/%d", label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*done/max(total, 1), done, total)
}

// Table prints the result.
func (r IngestResult) Table(w io.Writer) {
	fmt.Fprintf(w, "| ingest (%d tenants x %d events, %d-byte payloads) | value |\n|---|---|\n", r.Tenants, r.Events, r.PayloadBytes)
	fmt.Fprintf(w, "| end to end: publish -> stored in ClickHouse (goal >= 100,000/s) | %.0f events/s |\n", r.EndToEndPerSec)
	fmt.Fprintf(w, "| bus only: publish as the tenants + pull + ack each, same messages | %.0f msgs/s |\n", r.BusOnlyPerSec)
	fmt.Fprintf(w, "| ratio end to end / bus only (goal >= 0.70) | %.2f |\n", r.Ratio)
	fmt.Fprintf(w, "| bus only from the suite's account, acked in bulk (reference, as measured before tenant accounts) | %.0f msgs/s |\n", r.SuiteBusPerSec)
	if r.BatchedEvents > 0 {
		fmt.Fprintf(w, "| end to end with the SDK's batches, %d tenants x %d events (goal >= 150,000/s) | %.0f events/s |\n", r.Tenants, r.BatchedEvents, r.BatchedPerSec)
		fmt.Fprintf(w, "| messages that carried them | %d (%.0f events each) |\n", r.BatchedMessages, float64(r.Tenants*r.BatchedEvents)/max(float64(r.BatchedMessages), 1))
		fmt.Fprintf(w, "| publishing them took (until JetStream acknowledged the last) | %.1f s of %.1f s |\n", r.BatchedPublishSeconds, float64(r.Tenants*r.BatchedEvents)/max(r.BatchedPerSec, 1))
		fmt.Fprintf(w, "| collector batches (all phases) | %s |\n", r.Stages)
	}
	fmt.Fprintf(w, "| publish -> queryable at half load (%.0f/s), p50 | %v |\n", r.HalfLoadPerSec, r.LatencyP50)
	fmt.Fprintf(w, "| publish -> queryable at half load, p99 (goal < 2s) | %v |\n", r.LatencyP99)
	fmt.Fprintf(w, "| process RSS (collector, NATS and engine in one process) | %.0f MiB |\n", r.RSSMiB)
	fmt.Fprintf(w, "| publish acknowledgements that never came / that named another stream (both published again) | %d / %d |\n", r.AcksLost, r.AcksForeign)
}
