// Package export writes a tenant's data as a bundle the tenant can verify
// offline, and verifies such bundles.
//
// A bundle is a gzip'd tar of: events.ndjson, logs.ndjson, spans.ndjson (the
// tenant's rows, one JSON object a line), audit.ndjson (its audit chain),
// checkpoints.json (the signed checkpoints), verifier.key (the public key
// that signed them), manifest.json (tenant, time, each file's SHA-256 and
// row count) and manifest.sig (a note over the manifest's digest signed with
// the audit key). VerifyBundle needs only the bundle and the verifier key
// the tenant got out of band.
package export

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tenantscope/tenantscope/auditlog"
	"github.com/tenantscope/tenantscope/chstore"
)

// Format names the bundle layout.
const Format = "tenantscope-export/1"

// File is one file of a bundle.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Rows   int    `json:"rows"`
}

// Manifest describes a bundle.
type Manifest struct {
	Format    string    `json:"format"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"created_at"`
	Files     []File    `json:"files"`
}

// signedText is what manifest.sig signs.
func signedText(tenant string, manifest []byte) string {
	sum := sha256.Sum256(manifest)
	return Format + "\n" + tenant + "\n" + hex.EncodeToString(sum[:]) + "\n"
}

type bundle struct {
	tw       *tar.Writer
	manifest Manifest
	now      time.Time
}

func (b *bundle) add(name string, data []byte, rows int) error {
	if err := b.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: b.now}); err != nil {
		return err
	}
	if _, err := b.tw.Write(data); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	b.manifest.Files = append(b.manifest.Files, File{Name: name, SHA256: hex.EncodeToString(sum[:]), Rows: rows})
	return nil
}

// tableNDJSON reads the tenant's rows of table as NDJSON, through
// clickhouse-go, deduplicated (FINAL).
func tableNDJSON(ctx context.Context, st *chstore.Store, tenant, table, order string) ([]byte, int, error) {
	rows, err := st.Query(ctx, "SELECT * FROM "+table+" FINAL WHERE tenant_id = ? ORDER BY "+order, tenant)
	if err != nil {
		return nil, 0, fmt.Errorf("export %s: %w", table, err)
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	vals := make([]any, len(cols))
	for i, c := range cols {
		vals[i] = reflect.New(c.ScanType()).Interface()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	n := 0
	for rows.Next() {
		if err := rows.Scan(vals...); err != nil {
			return nil, 0, fmt.Errorf("export %s: %w", table, err)
		}
		m := make(map[string]any, len(cols))
		for i, c := range cols {
			m[c.Name()] = reflect.ValueOf(vals[i]).Elem().Interface()
		}
		if err := enc.Encode(m); err != nil {
			return nil, 0, err
		}
		n++
	}
	return buf.Bytes(), n, rows.Err()
}

// Write exports tenant's data from st to w, signing the manifest with the
// audit signer key; progress gets a line per file.
func Write(ctx context.Context, st *chstore.Store, tenant, signerKey, verifierKey string, w io.Writer, progress io.Writer) (Manifest, error) {
	signer, err := note.NewSigner(signerKey)
	if err != nil {
		return Manifest{}, fmt.Errorf("export signer: %w", err)
	}
	gz := gzip.NewWriter(w)
	b := &bundle{tw: tar.NewWriter(gz), now: time.Now().UTC().Truncate(time.Second)}
	b.manifest = Manifest{Format: Format, Tenant: tenant, CreatedAt: b.now}
	for _, t := range []struct{ table, order string }{{"events", "time, event_id"}, {"logs", "time, log_id"}, {"spans", "start_time, span_id"}} {
		data, n, err := tableNDJSON(ctx, st, tenant, t.table, t.order)
		if err != nil {
			return Manifest{}, err
		}
		if err := b.add(t.table+".ndjson", data, n); err != nil {
			return Manifest{}, err
		}
		fmt.Fprintf(progress, "export %s: %s %d rows\n", tenant, t.table, n)
	}
	recs, cps, err := auditlog.Load(ctx, st, tenant)
	if err != nil {
		return Manifest{}, err
	}
	var audit bytes.Buffer
	enc := json.NewEncoder(&audit)
	enc.SetEscapeHTML(false)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return Manifest{}, err
		}
	}
	if err := b.add("audit.ndjson", audit.Bytes(), len(recs)); err != nil {
		return Manifest{}, err
	}
	fmt.Fprintf(progress, "export %s: audit chain %d records, %d checkpoints\n", tenant, len(recs), len(cps))
	cpJSON, err := json.MarshalIndent(cps, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	if err := b.add("checkpoints.json", cpJSON, len(cps)); err != nil {
		return Manifest{}, err
	}
	if err := b.add("verifier.key", []byte(verifierKey+"\n"), 1); err != nil {
		return Manifest{}, err
	}
	manifest, err := json.MarshalIndent(b.manifest, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	sig, err := note.Sign(&note.Note{Text: signedText(tenant, manifest)}, signer)
	if err != nil {
		return Manifest{}, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {"manifest.sig", sig}} {
		if err := b.tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: b.now}); err != nil {
			return Manifest{}, err
		}
		if _, err := b.tw.Write(f.data); err != nil {
			return Manifest{}, err
		}
	}
	if err := b.tw.Close(); err != nil {
		return Manifest{}, err
	}
	return b.manifest, gz.Close()
}

// Summary is what VerifyBundle found.
type Summary struct {
	Manifest Manifest
	Audit    auditlog.Report
}

// ErrBundle is any problem with a bundle.
var ErrBundle = errors.New("export bundle does not verify")

// VerifyBundle checks a bundle offline with the tenant's verifier key: the
// manifest signature, every file against the manifest, and the audit chain
// against its signed checkpoints.
func VerifyBundle(r io.Reader, verifierKey string) (Summary, error) {
	var sum Summary
	gz, err := gzip.NewReader(r)
	if err != nil {
		return sum, fmt.Errorf("%w: not gzip: %v", ErrBundle, err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sum, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		data, err := io.ReadAll(io.LimitReader(tr, 4<<30))
		if err != nil {
			return sum, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		files[h.Name] = data
	}
	manifest, sig := files["manifest.json"], files["manifest.sig"]
	if manifest == nil || sig == nil {
		return sum, fmt.Errorf("%w: manifest.json or manifest.sig missing", ErrBundle)
	}
	if err := json.Unmarshal(manifest, &sum.Manifest); err != nil {
		return sum, fmt.Errorf("%w: manifest: %v", ErrBundle, err)
	}
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return sum, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(sig, note.VerifierList(verifier))
	if err != nil {
		return sum, fmt.Errorf("%w: manifest signature: %v", ErrBundle, err)
	}
	if n.Text != signedText(sum.Manifest.Tenant, manifest) {
		return sum, fmt.Errorf("%w: the signature is not over this manifest", ErrBundle)
	}
	listed := map[string]bool{"manifest.json": true, "manifest.sig": true}
	for _, f := range sum.Manifest.Files {
		listed[f.Name] = true
		data, ok := files[f.Name]
		if !ok {
			return sum, fmt.Errorf("%w: %s is missing", ErrBundle, f.Name)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != f.SHA256 {
			return sum, fmt.Errorf("%w: %s was modified (SHA-256 differs from the signed manifest)", ErrBundle, f.Name)
		}
	}
	for name := range files {
		if !listed[name] {
			return sum, fmt.Errorf("%w: %s is not in the manifest", ErrBundle, name)
		}
	}
	var recs []auditlog.Record
	sc := bufio.NewScanner(bytes.NewReader(files["audit.ndjson"]))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r auditlog.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return sum, fmt.Errorf("%w: audit.ndjson: %v", ErrBundle, err)
		}
		recs = append(recs, r)
	}
	var cps []auditlog.SignedCheckpoint
	if err := json.Unmarshal(files["checkpoints.json"], &cps); err != nil {
		return sum, fmt.Errorf("%w: checkpoints.json: %v", ErrBundle, err)
	}
	if key := strings.TrimSpace(string(files["verifier.key"])); key != verifierKey {
		return sum, fmt.Errorf("%w: the bundle names another verifier key than the one given", ErrBundle)
	}
	sum.Audit, err = auditlog.VerifyRecords(sum.Manifest.Tenant, recs, cps, 1, verifierKey)
	if err != nil {
		return sum, err
	}
	if !sum.Audit.OK() {
		return sum, fmt.Errorf("%w: audit chain: %s", ErrBundle, sum.Audit.Problem)
	}
	return sum, nil
}
