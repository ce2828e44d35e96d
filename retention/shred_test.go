package retention_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/rs/zerolog"
	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/collector/collectortest"
	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/export"
	"github.com/tenantscope/tenantscope/retention"
)

// Personal fields are encrypted at ingest with a key per subject; reads
// decrypt them; destroying the key (an erasure) makes every copy read as
// erased — the rows in the store and an export made before — while the
// audit chain still verifies; rotating the tenant key rewrites no data.
func TestCryptoShredding(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) {
		c.Tenants[0].Shred = config.Shred{Subject: "customer.id", Fields: []string{"customer.email", "customer.name"}}
		c.Retention.Identifiers["events"] = []string{"payload.customer.id"}
	}, "acme", "globex")
	ctx := context.Background()
	js, err := jetstream.New(p.TenantConn(t, "acme"))
	require.NoError(t, err)
	for _, who := range []string{"c-1", "c-2"} {
		m := nats.NewMsg("tenant.acme.crm.contact_created")
		m.Header.Set("Tenant-Id", "acme")
		m.Data = []byte(`{"actor":"agent-7","customer":{"id":"` + who + `","email":"` + who + `@example.com","name":"Ann ` + who + `","plan":"pro"}}`)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return p.Count(t, "SELECT count() FROM events") == 2 }, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, p.Count(t, "SELECT count() FROM events WHERE payload LIKE '%example.com%' OR payload LIKE '%Ann %'"), "no personal field is stored in clear")
	require.EqualValues(t, 2, p.Count(t, "SELECT count() FROM events WHERE JSONExtractString(payload, 'customer', 'email') LIKE 'enc:v1:%' AND JSONExtractString(payload, 'customer', 'plan') = 'pro'"))

	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	svc := retention.New(p.Config, p.Placement, map[string]*chstore.Store{"default": p.Store}, nil, nil, skey, zerolog.Nop())
	svc.Shred = p.Shredder
	read := func() string {
		evs, err := svc.Events(ctx, "acme", "", 10)
		require.NoError(t, err)
		var b strings.Builder
		for _, e := range evs {
			b.Write(e.Payload)
		}
		return b.String()
	}
	require.Contains(t, read(), `"email":"c-1@example.com"`)
	require.Contains(t, read(), `"email":"c-2@example.com"`)

	// Rotating the tenant key rewraps subject keys; the data is untouched and reads.
	before := p.Count(t, "SELECT sum(cityHash64(payload)) FROM events")
	v, n, err := p.Shredder.Keys.Rotate(ctx, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 2, v)
	require.Equal(t, 2, n)
	require.Equal(t, before, p.Count(t, "SELECT sum(cityHash64(payload)) FROM events"))
	fresh := retention.NewShredder(mustKeyring(t, p), p.Config) // a restarted process
	svc.Shred = fresh
	require.Contains(t, read(), `"email":"c-1@example.com"`)

	// An export made now holds ciphertext only.
	var bundle bytes.Buffer
	_, err = export.Write(ctx, p.Store, "acme", skey, vkey, &bundle, io.Discard)
	require.NoError(t, err)
	exported := eventsOf(t, bundle.Bytes())
	require.NotContains(t, exported, "c-1@example.com")

	// Destroy c-1's key: its fields read as erased, here and in the export; c-2's still read.
	_, err = fresh.Keys.Destroy(ctx, "acme", "c-1", "carol")
	require.NoError(t, err)
	out := read()
	require.Contains(t, out, `"email":"[erased]"`)
	require.NotContains(t, out, "c-1@example.com")
	require.Contains(t, out, "c-2@example.com")
	c1 := lineWith(exported, "c-1")
	require.NotEmpty(t, c1)
	v1, err := fresh.Keys.Open(ctx, "acme", firstToken(c1))
	require.NoError(t, err)
	require.Equal(t, retention.Erased, v1, "the export made before reads as erased too")
	v2, err := fresh.Keys.Open(ctx, "acme", firstToken(lineWith(exported, "c-2")))
	require.NoError(t, err)
	require.Equal(t, `"c-2@example.com"`, v2)
	_, err = fresh.Keys.Destroy(ctx, "acme", "c-1", "carol")
	require.ErrorIs(t, err, retention.ErrConflict, "a destroyed key cannot be destroyed again")
	_, err = fresh.Keys.Seal(ctx, "acme", "c-1", []byte(`"x"`))
	require.ErrorIs(t, err, retention.ErrConflict, "nor used again")
	// An erasure destroys the subject's key as well, and says so in its certificate.
	e, err := svc.Erase(ctx, "acme", "c-2", false, "carol")
	require.NoError(t, err)
	require.Equal(t, "completed", e.Status, e.Detail)
	cert, err := retention.VerifyCertificate(e.Certificate, vkey)
	require.NoError(t, err)
	require.NotEmpty(t, cert.KeyDestroyed)
	v2, err = fresh.Keys.Open(ctx, "acme", firstToken(lineWith(exported, "c-2")))
	require.NoError(t, err)
	require.Equal(t, retention.Erased, v2, "its copy in the earlier export is unreadable now")
	// Another tenant's reader cannot open acme's values.
	other, err := fresh.Keys.Open(ctx, "globex", firstToken(exported))
	require.NoError(t, err)
	require.Equal(t, retention.Erased, other)

	// The collector keeps its decoded copy of a payload the shredder
	// returns as it went (collector.Config.ShredEvent): the shredder never
	// writes into the payload, and returns a new one when it encrypts.
	in := []byte(`{"actor":"agent-7","customer":{"id":"c-3","email":"c-3@example.com"}}`)
	orig := bytes.Clone(in)
	sealed, err := fresh.Event(ctx, "acme", "agent-7", in)
	require.NoError(t, err)
	require.Equal(t, orig, in, "the payload handed in is left as it was")
	require.NotContains(t, string(sealed), "c-3@example.com")
	same, err := fresh.Event(ctx, "globex", "agent-7", in)
	require.NoError(t, err)
	require.True(t, len(same) == len(in) && &same[0] == &in[0], "a tenant without personal fields gets its payload itself back")
}

func mustKeyring(t *testing.T, p *collectortest.Pipeline) *retention.Keyring {
	b, err := config.LoadBootstrap(p.Config.Data)
	require.NoError(t, err)
	k, err := retention.NewKeyring(b.ShredKEK, func(string) (*chstore.Store, error) { return p.Store, nil })
	require.NoError(t, err)
	return k
}

// eventsOf returns events.ndjson of a bundle.
func eventsOf(t *testing.T, bundle []byte) string {
	gz, err := gzip.NewReader(bytes.NewReader(bundle))
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		require.NoError(t, err)
		if h.Name == "events.ndjson" {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			return string(b)
		}
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

func firstToken(s string) string {
	i := strings.Index(s, "enc:v1:")
	j := strings.IndexAny(s[i:], `"\`)
	return s[i : i+j]
}

// A shredding tenant's audit records carry their actor's personal fields
// encrypted: the chain commits to the ciphertext, reads decrypt, and after
// the actor's key is destroyed they read as erased while the chain verifies.
func TestCryptoShreddedAuditRecordsStayVerifiable(t *testing.T) {
	p := collectortest.Start(t, func(c *config.Config) {
		c.Tenants[0].Shred = config.Shred{Subject: "customer.id", Fields: []string{"customer.email"}}
	}, "acme", "globex")
	ctx := context.Background()
	skey, vkey, err := auditlog.GenerateKey()
	require.NoError(t, err)
	w, err := auditlog.NewWriter(func(string) (*chstore.Store, error) { return p.Store, nil }, skey, 10)
	require.NoError(t, err)
	w.Seal = p.Shredder.SealAudit
	for _, tenant := range []string{"acme", "globex"} {
		_, err = w.Append(ctx, tenant, []auditlog.Record{{TenantID: tenant, Actor: auditlog.Actor{Type: "user", ID: "c-3", Name: "Cleo Three", IP: "10.1.2.3", UserAgent: "Firefox"},
			Action: "profile.viewed", Outcome: "success"}})
		require.NoError(t, err)
	}
	require.NoError(t, w.Checkpoint(ctx, "acme"))
	require.Zero(t, p.Count(t, "SELECT count() FROM audit_records WHERE tenant_id = 'acme' AND (actor_name LIKE '%Cleo%' OR actor_ip = '10.1.2.3')"), "stored encrypted")
	require.EqualValues(t, 1, p.Count(t, "SELECT count() FROM audit_records WHERE tenant_id = 'globex' AND actor_ip = '10.1.2.3'"), "a tenant that does not shred stores as sent")
	list := func() map[string]any {
		rows, _, err := auditlog.List(ctx, p.Store, "acme", auditlog.Filter{Desc: true, Limit: 10, Open: p.Shredder.Keys.Open})
		require.NoError(t, err)
		require.Len(t, rows, 1)
		return rows[0]
	}
	require.Equal(t, "Cleo Three", list()["actor_name"])
	require.Equal(t, "10.1.2.3", list()["actor_ip"])
	require.Equal(t, "c-3", list()["actor_id"], "the actor id stays, as a pseudonym the trail is filtered by")

	_, err = p.Shredder.Keys.Destroy(ctx, "acme", "c-3", "carol")
	require.NoError(t, err)
	require.Equal(t, retention.Erased, list()["actor_name"])
	require.Equal(t, retention.Erased, list()["actor_ip"])
	rep, err := auditlog.Verify(ctx, p.Store, "acme", 1, vkey)
	require.NoError(t, err)
	require.True(t, rep.OK(), "the chain commits to the ciphertext: %v", rep.Problem)
	// A later record of the erased actor is still chained, its fields erased.
	_, err = w.Append(ctx, "acme", []auditlog.Record{{TenantID: "acme", Actor: auditlog.Actor{Type: "user", ID: "c-3", IP: "10.9.9.9"}, Action: "x", Outcome: "success"}})
	require.NoError(t, err)
	require.Zero(t, p.Count(t, "SELECT count() FROM audit_records WHERE actor_ip = '10.9.9.9'"))
}
