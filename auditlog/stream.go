package auditlog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/export/csvcell"
	"github.com/tenantscope/tenantscope/identity"
)

// streamPage is how many records one query reads while streaming.
const streamPage = 1000

// Stream calls fn for every record matching f, in f's order, reading a page
// at a time (constant memory whatever the trail's size).
func Stream(ctx context.Context, st *chstore.Store, tenant string, f Filter, fn func(map[string]any) error) (int, error) {
	f.Limit = streamPage
	n := 0
	for {
		page, next, err := List(ctx, st, tenant, f)
		if err != nil {
			return n, err
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return n, err
			}
			n++
		}
		if f.Progress != nil {
			f.Progress(n)
		}
		if next == "" {
			return n, nil
		}
		if f.After, err = decodeCursor(next); err != nil {
			return n, err
		}
	}
}

// WriteTrail streams the filtered trail to w as "csv", "jsonl" or "parquet".
func WriteTrail(ctx context.Context, st *chstore.Store, tenant string, f Filter, format string, w io.Writer) (int, error) {
	return WriteTrailProgress(ctx, st, tenant, f, format, w, nil)
}

// WriteTrailProgress is WriteTrail calling progress (when set) with the
// number of records written so far after every page.
func WriteTrailProgress(ctx context.Context, st *chstore.Store, tenant string, f Filter, format string, w io.Writer, progress func(int)) (int, error) {
	if !contains(TrailFormats, format) {
		return 0, fmt.Errorf("%w: format %q is not one of %s", ErrBadRequest, format, strings.Join(TrailFormats, ", "))
	}
	f.Progress = progress
	fields := f.Fields
	if len(fields) == 0 {
		fields = Fields
	}
	f.Fields = fields
	switch format {
	case "jsonl":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return Stream(ctx, st, tenant, f, func(r map[string]any) error { return enc.Encode(r) })
	case "csv":
		// Cells a spreadsheet would run as formulas are neutralized (OWASP).
		cw := csvcell.NewWriter(w)
		if err := cw.Write(fields); err != nil {
			return 0, err
		}
		n, err := Stream(ctx, st, tenant, f, func(r map[string]any) error {
			rec := make([]string, len(fields))
			for i, k := range fields {
				switch v := r[k].(type) {
				case nil:
				case string:
					rec[i] = v
				case float64:
					rec[i] = fmt.Sprint(uint64(v))
				default:
					b, _ := json.Marshal(v) //nolint:errcheck // decoded JSON marshals
					rec[i] = string(b)
				}
			}
			return cw.Write(rec)
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return n, err
	default: // parquet
		return writeParquet(ctx, st, tenant, f, w)
	}
}

// TrailFormats are the formats of a trail export.
var TrailFormats = []string{"csv", "jsonl", "parquet"}

// TrailContentType is the media type of a trail export format.
func TrailContentType(format string) string {
	return map[string]string{"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}[format]
}

// parquetRowGroup bounds the rows a Parquet writer buffers before it writes
// a row group, so an export's memory does not grow with the trail.
const parquetRowGroup = 10000

// writeParquet writes the selected fields as a Parquet file: seq as INT64,
// every other field an optional UTF-8 string (changes and metadata as JSON,
// time as RFC 3339), zstd-compressed, in row groups of parquetRowGroup rows.
func writeParquet(ctx context.Context, st *chstore.Store, tenant string, f Filter, w io.Writer) (int, error) {
	group := parquet.Group{}
	for _, k := range f.Fields {
		if k == "seq" {
			group[k] = parquet.Int(64)
		} else {
			group[k] = parquet.Optional(parquet.String())
		}
	}
	schema := parquet.NewSchema("audit_record", group)
	cols := make([]string, 0, len(f.Fields))
	for _, fl := range schema.Fields() {
		cols = append(cols, fl.Name())
	}
	pw := parquet.NewWriter(w, schema, parquet.Compression(&parquet.Zstd), parquet.MaxRowsPerRowGroup(parquetRowGroup),
		parquet.KeyValueMetadata("tenantscope.tenant", tenant))
	row := make(parquet.Row, len(cols))
	n, err := Stream(ctx, st, tenant, f, func(r map[string]any) error {
		for i, k := range cols {
			v, def := parquetValue(k, r[k]), 1
			if k == "seq" || v.IsNull() {
				def = 0
			}
			row[i] = v.Level(0, def, i)
		}
		_, err := pw.WriteRows([]parquet.Row{row})
		return err
	})
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func parquetValue(field string, v any) parquet.Value {
	switch v := v.(type) {
	case nil:
		return parquet.NullValue()
	case string:
		return parquet.ByteArrayValue([]byte(v))
	case float64:
		if field == "seq" {
			return parquet.Int64Value(int64(v))
		}
		return parquet.ByteArrayValue([]byte(fmt.Sprint(uint64(v))))
	default:
		b, _ := json.Marshal(v) //nolint:errcheck // decoded JSON marshals
		return parquet.ByteArrayValue(b)
	}
}

// exportTrail serves GET …/audit-events/export?format=csv|jsonl&<filters>.
func (a *API) exportTrail(w http.ResponseWriter, r *http.Request) {
	p, tenant, st, ok := a.authorize(w, r, identity.ReadAudit)
	if !ok {
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	if !contains(TrailFormats, format) {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", "format must be one of "+strings.Join(TrailFormats, ", "))
		return
	}
	delete(q, "format")
	f, err := ParseFilter(q)
	if err != nil {
		identity.WriteError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	f.Open = a.Open
	w.Header().Set("Content-Type", TrailContentType(format))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-audit-%s.%s"`, tenant, time.Now().UTC().Format("20060102-150405"), format))
	n, err := WriteTrail(r.Context(), st, tenant, f, format, w)
	if err != nil {
		a.log.Error().Err(err).Str("tenant_id", tenant).Str("correlation_id", identity.CorrelationID(r.Context())).Msg("audit export")
	}
	if a.pub == nil {
		return
	}
	rec := Record{TenantID: tenant, Time: time.Now().UTC(), Actor: Actor{Type: "api_key", ID: p.Name, Name: p.Role, UserAgent: r.UserAgent()},
		Action: "audit.exported", Target: Target{Type: "audit_trail", ID: tenant}, Outcome: "success", SourceService: "tenantscope",
		CorrelationID: identity.CorrelationID(r.Context()), Metadata: map[string]string{"format": format, "records": fmt.Sprint(n), "query": r.URL.RawQuery}}
	if err != nil {
		rec.Outcome, rec.Reason = "failure", err.Error()
	}
	if err := a.pub.Record(r.Context(), rec); err != nil {
		a.log.Warn().Err(err).Str("tenant_id", tenant).Msg("could not audit an audit export")
	}
}
