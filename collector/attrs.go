package collector

import (
	"reflect"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// boxedAttrs is an attribute map as clickhouse-go's Map column takes it
// without reflection: its keys and values boxed once. clickhouse-go appends
// a map[string]string by reflection, boxing every key and value of every
// row; a resource's map is shared by all the rows of the resource (hundreds
// of spans of an OTLP request), so resourceColumn boxes it once a batch.
type boxedAttrs struct{ kv []any }

func (b *boxedAttrs) Put(k, v any) { b.kv = append(b.kv, k, v) }

func (b *boxedAttrs) Iterator() column.MapIterator { return &boxedIter{kv: b.kv, i: -2} }

type boxedIter struct {
	kv []any
	i  int
}

func (it *boxedIter) Next() bool { it.i += 2; return it.i < len(it.kv) }
func (it *boxedIter) Key() any   { return it.kv[it.i] }
func (it *boxedIter) Value() any { return it.kv[it.i+1] }

// resourceColumn is a Map column's values for clickhouse-go, each distinct
// map (by identity) boxed once.
func resourceColumn(n int, at func(i int) map[string]string) []any {
	out := make([]any, n)
	boxed := map[uintptr]*boxedAttrs{}
	for i := range n {
		m := at(i)
		p := reflect.ValueOf(m).Pointer()
		b, ok := boxed[p]
		if !ok {
			b = &boxedAttrs{kv: make([]any, 0, 2*len(m))}
			for k, v := range m {
				b.Put(k, v)
			}
			boxed[p] = b
		}
		out[i] = b
	}
	return out
}

// flatAttrs is one row's attribute map as clickhouse-go's Map column takes
// it: keys boxed (shared by the batch), values as pointers into the batch's
// array of values, which boxes nothing.
type flatAttrs struct {
	keys []any
	vals []string
	i    int
}

func (f *flatAttrs) Put(k, v any) {} // only appended, never scanned into

func (f *flatAttrs) Iterator() column.MapIterator { f.i = -1; return f }
func (f *flatAttrs) Next() bool                   { f.i++; return f.i < len(f.keys) }
func (f *flatAttrs) Key() any                     { return f.keys[f.i] }
func (f *flatAttrs) Value() any                   { return &f.vals[f.i] }

// attrsColumn is a Map column's values for clickhouse-go, a map per row.
// clickhouse-go appends a map[string]string by reflection and boxes every
// key and value; here each distinct key is boxed once a batch (keys repeat
// from row to row) and values are not boxed at all.
func attrsColumn(n int, at func(i int) map[string]string) []any {
	total := 0
	for i := range n {
		total += len(at(i))
	}
	keys := make([]any, 0, total)
	vals := make([]string, 0, total)
	rows := make([]flatAttrs, n)
	out := make([]any, n)
	boxed := map[string]any{}
	for i := range n {
		start := len(keys)
		for k, v := range at(i) {
			b, ok := boxed[k]
			if !ok {
				b = k
				boxed[k] = b
			}
			keys = append(keys, b)
			vals = append(vals, v)
		}
		// keys and vals were made with room for every entry: the rows'
		// slices of them stay where they are.
		rows[i] = flatAttrs{keys: keys[start:len(keys):len(keys)], vals: vals[start:len(vals):len(vals)]}
		out[i] = &rows[i]
	}
	return out
}
