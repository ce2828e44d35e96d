package retention_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/natsbus"
	"github.com/tenantscope/tenantscope/placement"
	"github.com/tenantscope/tenantscope/retention"
)

// The proof under load: a service publishes steadily with JetStream acks
// while a compliance officer flips the events policy, places and lifts holds,
// purges and erases, through the Service API in this process and through
// the same calls the CLI makes in another process. Afterwards every
// acknowledged id is looked up in the store; an id may be missing only when
// a policy or an erasure legitimately removed it.
//
// TENANTSCOPE_LOAD_RATE (events/s, default 500) and TENANTSCOPE_LOAD_SECONDS
// (default 20) size it.

// event classes, chosen per published event.
const (
	classHeld   = "held"   // the held subject's (a subject hold for the whole run), now or 75 days old
	classNormal = "normal" // another subject's, now
	classPerm   = "perm"   // 75 days old, inside a time-range hold for the whole run
	classFlap   = "flap"   // 65 days old, inside a time-range hold placed and lifted: removable at 60 days
	classErase  = "erase"  // a subject erased during the run
)

type published struct {
	class   string
	subject string
	acked   time.Time
}

type loadRun struct {
	mu       sync.Mutex
	sent     int
	acks     map[uuid.UUID]published
	erasedAt map[string]time.Time // subject -> when its erasure ended
	errs     []error
	ops      map[string]int
	// events rows the purge receipts and the erasure certificates report deleted
	purged, erased uint64
}

func (l *loadRun) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *loadRun) op(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[name]++
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestRewritesUnderLoadLoseNothing(t *testing.T) {
	perSecond := envInt("TENANTSCOPE_LOAD_RATE", 500)
	seconds := envInt("TENANTSCOPE_LOAD_SECONDS", 20)
	// Known credentials of the suite's own NATS user, for the other process.
	f := start(t, func(c *config.Config) { c.NATS.User, c.NATS.Password = "tenantscope", "load-test-"+uuid.NewString() })
	ctx := context.Background()
	now := time.Now().UTC()
	day := 24 * time.Hour
	permFrom, permTo := now.Add(-76*day), now.Add(-74*day)
	flapFrom, flapTo := now.Add(-66*day), now.Add(-64*day)
	_, err := f.svc.PlaceHold(ctx, "acme", "subject", "held-subject", nil, nil, "litigation", carol)
	require.NoError(t, err)
	_, err = f.svc.PlaceHold(ctx, "acme", "time_range", "", &permFrom, &permTo, "regulator inquiry", carol)
	require.NoError(t, err)

	run := &loadRun{acks: map[uuid.UUID]published{}, erasedAt: map[string]time.Time{}, ops: map[string]int{}}
	var eraseAPI, eraseCLI atomic.Int64
	loadCtx, stop := context.WithTimeout(ctx, time.Duration(seconds)*time.Second)
	defer stop()
	var wg sync.WaitGroup

	// The publisher: 4 connections' worth of synchronous, acknowledged publishes.
	js, err := jetstream.New(f.p.TenantConn(t, "acme"))
	require.NoError(t, err)
	limit := rate.NewLimiter(rate.Limit(perSecond), 1)
	var seq atomic.Int64
	for range 4 {
		wg.Go(func() {
			for limit.Wait(loadCtx) == nil {
				i := seq.Add(1)
				at, class, subject := time.Now().UTC(), classNormal, fmt.Sprintf("user-%d", i%50)
				switch r := i % 20; {
				case r < 8: // 40 %
					class, subject = classHeld, "held-subject"
					if r == 0 {
						at = now.Add(-75 * day).Add(time.Duration(i) * time.Millisecond)
					}
				case r < 10:
					class, at = classPerm, permFrom.Add(time.Hour).Add(time.Duration(i)*time.Millisecond)
				case r < 12:
					class, at = classFlap, flapFrom.Add(time.Hour).Add(time.Duration(i)*time.Millisecond)
				case r == 12:
					class, subject = classErase, fmt.Sprintf("erase-api-%d", eraseAPI.Load())
				case r == 13:
					class, subject = classErase, fmt.Sprintf("erase-cli-%d", eraseCLI.Load())
				}
				id := uuid.New()
				msg := nats.NewMsg("tenant.acme.crm.updated")
				msg.Header.Set("Tenant-Id", "acme")
				msg.Header.Set(nats.MsgIdHdr, id.String())
				msg.Data = fmt.Appendf(nil, `{"actor":%q,"time":%q,"customer":{"email":"%s@example.com"},"n":%d}`, subject, at.Format(time.RFC3339Nano), subject, i)
				_, err := js.PublishMsg(ctx, msg)
				run.mu.Lock()
				run.sent++
				if err == nil {
					run.acks[id] = published{class: class, subject: subject, acked: time.Now()}
				}
				run.mu.Unlock()
			}
		})
	}

	// The compliance officer, through the Service API.
	wg.Go(func() {
		var flap *retention.Hold
		for i := 0; loadCtx.Err() == nil; i++ {
			var err error
			switch i % 4 {
			case 0:
				days := []int{60, 90}[i/4%2]
				_, err = f.svc.SetPolicy(ctx, "acme", "events", days, carol, "policy flip")
				run.op("api set policy")
			case 1:
				if flap == nil {
					var h retention.Hold
					h, err = f.svc.PlaceHold(ctx, "acme", "time_range", "", &flapFrom, &flapTo, "flapping hold", carol)
					flap = &h
					run.op("api place hold")
				} else {
					_, err = f.svc.LiftHold(ctx, "acme", flap.ID, "done", carol)
					flap = nil
					run.op("api lift hold")
				}
			case 2:
				var rs []retention.Receipt
				rs, err = f.svc.Purge(ctx, "acme", "on demand", carol)
				for _, r := range rs {
					atomic.AddUint64(&run.purged, r.Deleted["events"])
				}
				run.op("api purge")
			case 3:
				subject := fmt.Sprintf("erase-api-%d", eraseAPI.Load())
				eraseAPI.Add(1)
				var e retention.Erasure
				e, err = f.svc.Erase(ctx, "acme", subject, false, "carol")
				if err == nil {
					run.mu.Lock()
					run.erasedAt[subject] = time.Now()
					run.mu.Unlock()
					c, cerr := retention.VerifyCertificate(e.Certificate, f.verifier)
					if cerr != nil {
						run.fail(cerr)
					}
					atomic.AddUint64(&run.erased, c.Deleted["events"])
				}
				run.op("api erase")
			}
			if err != nil && !errors.Is(err, retention.ErrNotFound) {
				run.fail(fmt.Errorf("api step %d: %w", i, err))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	// The CLI, in another process: purges, erasures and policy flips.
	spec := childSpec{Engine: f.p.EngineURL, Database: f.p.Config.Regions[0].Database, NATS: f.p.URL,
		User: f.p.Config.NATS.User, Password: f.p.Config.NATS.Password, Data: f.p.Config.Data, Tenants: []string{"acme", "globex"},
		Identifiers: f.p.Config.Retention.Identifiers, Tenant: "acme"}
	wg.Go(func() {
		for i := 0; loadCtx.Err() == nil; i++ {
			s := spec
			switch i % 3 {
			case 0:
				s.Op = "purge"
			case 1:
				s.Op, s.Subject = "erase", fmt.Sprintf("erase-cli-%d", eraseCLI.Load())
				eraseCLI.Add(1)
			case 2:
				s.Op, s.Days = "set", []int{90, 60}[i/3%2]
			}
			out, err := runChild(s)
			run.op("cli " + s.Op)
			if err != nil {
				run.fail(fmt.Errorf("cli %s: %w", s.Op, err))
				continue
			}
			if s.Op == "erase" && out.Erased {
				run.mu.Lock()
				run.erasedAt[s.Subject] = time.Now()
				run.mu.Unlock()
				atomic.AddUint64(&run.erased, out.Deleted)
			} else {
				atomic.AddUint64(&run.purged, out.Deleted)
			}
		}
	})
	wg.Wait()

	// Everything acknowledged is stored (or dead-lettered: none expected).
	cons, err := f.p.JS.Consumer(ctx, natsbus.IngestStream("acme"), natsbus.CollectorDurable)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 2*time.Minute, 200*time.Millisecond, "the collector did not catch up")

	var rows []struct {
		ID uuid.UUID `ch:"event_id"`
	}
	require.NoError(t, f.st.Select(ctx, &rows, "SELECT DISTINCT event_id FROM events WHERE tenant_id = 'acme'"))
	stored := map[uuid.UUID]bool{}
	for _, r := range rows {
		stored[r.ID] = true
	}
	var removed, lost int
	lostBy, removedBy := map[string]int{}, map[string]int{}
	for id, p := range run.acks {
		if stored[id] {
			continue
		}
		erasedAt, erased := run.erasedAt[p.subject]
		switch {
		case p.class == classFlap, p.class == classErase && erased && p.acked.Before(erasedAt):
			removed++
			removedBy[p.class]++
		default:
			lost++
			lostBy[p.class]++
		}
	}
	var fromRun int
	for id := range stored {
		if _, ok := run.acks[id]; ok {
			fromRun++
		}
	}
	t.Logf("load: published %d, acknowledged %d, stored %d, legitimately removed %d %v, lost %d %v; events rows deleted: %d by erasures (certificates), %d by purges (receipts; expired rows that TTL dropped are in neither); operations %v",
		run.sent, len(run.acks), fromRun, removed, removedBy, lost, lostBy, run.erased, run.purged, run.ops)
	require.Empty(t, run.errs, "operations failed")
	require.Zero(t, lost, "acknowledged events were deleted: %v", lostBy)
	require.Equal(t, len(run.acks), fromRun+removed)
	require.GreaterOrEqual(t, run.erased, uint64(removedBy[classErase]), "every erased event is in a certificate")

	// Rows got the right retention at ingest, or from the rewrite of the
	// change that came after them: held rows are held, the others carry the
	// policy in force now, with no purge run since the last change.
	pols, err := f.svc.Policies(ctx, "acme")
	require.NoError(t, err)
	wrong := f.count(t, `SELECT count() FROM events FINAL WHERE tenant_id = 'acme' AND
		if(actor = 'held-subject' OR (time >= fromUnixTimestamp64Milli(?, 'UTC') AND time < fromUnixTimestamp64Milli(?, 'UTC')), retention_days != 65535,
		   time > now() - toIntervalDay(10) AND retention_days != ?)`, permFrom.UnixMilli(), permTo.UnixMilli(), uint16(pols["events"].Days))
	require.Zero(t, wrong, "rows stored with a retention that is not theirs")
}

// childSpec is what the other process does: the calls the CLI makes
// (tenantscope purge | erase | retention set) against the running suite's
// engine and NATS.
type childSpec struct {
	Engine, Database, NATS, User, Password, Data string
	Tenants                                      []string
	Identifiers                                  map[string][]string
	Op, Tenant, Subject                          string
	Days                                         int
}

type childResult struct {
	Deleted uint64 `json:"deleted"`
	Erased  bool   `json:"erased"`
	Error   string `json:"error"`
}

const childEnv = "TENANTSCOPE_RETENTION_TEST_CHILD"

// runChild runs spec in a child process (the test binary again).
func runChild(spec childSpec) (childResult, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return childResult{}, err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return childResult{}, fmt.Errorf("%w: %s", err, stderr.String())
	}
	var r childResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, fmt.Errorf("child output %q: %w", stdout.String(), err)
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// serveChild runs the child's operation (when the test binary is one) and
// exits; it returns when it is not.
func serveChild() {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return
	}
	var r childResult
	if err := childOp(raw, &r); err != nil && !errors.Is(err, retention.ErrNotFound) {
		r.Error = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(2)
	}
	os.Exit(0)
}

// childOp opens the stores and NATS as cmd/tenantscope's openRetention does
// and runs one operation.
func childOp(raw string, r *childResult) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config.Default()
	cfg.Data = spec.Data
	cfg.Regions = []config.Region{{Name: "default", Database: spec.Database}}
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = spec.NATS, spec.User, spec.Password
	for _, id := range spec.Tenants {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, Name: id, Region: "default", NATS: config.Credentials{User: id + "-svc"}})
	}
	cfg.Retention.Identifiers = spec.Identifiers
	b, err := config.LoadBootstrap(cfg.Data)
	if err != nil {
		return err
	}
	st, err := chstore.Open(ctx, chstore.Options{DSN: spec.Engine, Database: spec.Database, Name: "default"})
	if err != nil {
		return err
	}
	defer st.Close()
	place := placement.New()
	if err := retention.LoadPlacement(ctx, cfg, place, st); err != nil {
		return err
	}
	nc, err := nats.Connect(spec.NATS, nats.UserInfo(spec.User, spec.Password), nats.Name("retention-test-cli"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	svc := retention.New(cfg, place, map[string]*chstore.Store{"default": st}, auditlog.JetStreamPublisher(js), js, b.AuditSignerKey, zerolog.Nop())
	by := auditlog.Actor{Type: "user", ID: "cli"}
	switch spec.Op {
	case "purge":
		rs, err := svc.Purge(ctx, spec.Tenant, "on demand (CLI)", by)
		for _, x := range rs {
			r.Deleted += x.Deleted["events"]
		}
		return err
	case "erase":
		e, err := svc.Erase(ctx, spec.Tenant, spec.Subject, false, "cli")
		if err != nil {
			return err
		}
		c, err := retention.VerifyCertificate(e.Certificate, b.AuditVerifierKey)
		if err != nil {
			return err
		}
		r.Deleted, r.Erased = c.Deleted["events"], true
		return nil
	case "set":
		_, err := svc.SetPolicy(ctx, spec.Tenant, "events", spec.Days, by, "policy flip (CLI)")
		return err
	}
	return fmt.Errorf("unknown operation %q", spec.Op)
}
