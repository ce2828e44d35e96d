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
