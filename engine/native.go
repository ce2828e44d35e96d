package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// nativeReframer turns the engine's Native output (always written as for
// client revision 0: no BlockInfo, no custom-serialization flag) into the
// framing the HTTP client asked for with client_protocol_version. Only the
// framing changes: each column's data is copied byte for byte. clickhouse-go's
// column decoders are used to find where a column's data ends, never to
// re-encode it, because some of its encoders do not write what its decoders
// read (column.Nothing.Encode writes nothing, so Nullable(Nothing) lost a
// byte per row and clickhouse-go then read the next block, or EOF, as the
// rest of the column: SELECT 1, NULL came back as zero rows and no error).
// Input may arrive in chunks that split a block; the remainder waits for the
// next chunk.
type nativeReframer struct {
	revision uint64
	ctx      column.ServerContext
	pending  []byte
	out      chproto.Buffer
}

func newNativeReframer(revision, serverRevision uint64) *nativeReframer {
	return &nativeReframer{
		revision: revision,
		ctx:      column.ServerContext{Revision: serverRevision, Timezone: time.UTC},
	}
}

// Write consumes a chunk of engine output and returns the reframed bytes of
// every complete block in it. The returned slice is valid until the next call.
func (n *nativeReframer) Write(chunk []byte) ([]byte, error) {
	n.out.Reset()
	if n.revision == 0 {
		// The engine's framing is already what the client wants.
		n.out.Buf = append(n.out.Buf, chunk...)
		return n.out.Buf, nil
	}
	data := chunk
	if len(n.pending) > 0 {
		n.pending = append(n.pending, chunk...)
		data = n.pending
	}
	cr := &countingReader{r: bytes.NewReader(data)}
	// chproto.NewReader keeps a *bufio.Reader that is large enough as is, so
	// Buffered tells how far decoding really got.
	bf := bufio.NewReaderSize(cr, 1<<17)
	r := chproto.NewReader(bf)
	pos := func() int { return cr.n - bf.Buffered() }
	off := 0
	for off < len(data) {
		mark := len(n.out.Buf)
		if err := n.block(r, data, pos); err != nil {
			n.out.Buf = n.out.Buf[:mark]
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break // incomplete block; Finish reports it if no more comes
			}
			return nil, fmt.Errorf("reframe native block: %w", err)
		}
		off = pos()
	}
	n.pending = append(n.pending[:0], data[off:]...)
	return n.out.Buf, nil
}

// block reads one revision-0 block from r (positioned in data, pos telling
// where) and appends it to n.out with the client's framing.
func (n *nativeReframer) block(r *chproto.Reader, data []byte, pos func() int) error {
	numCols, err := r.UVarInt()
	if err != nil {
		return err
	}
	numRows, err := r.UVarInt()
	if err != nil {
		return err
	}
	if numRows > 1_000_000_000 {
		return fmt.Errorf("block of %d rows", numRows)
	}
	// BlockInfo, as clickhouse-go writes it: field 1 is_overflows = false,
	// field 2 bucket_num = -1, end.
	n.out.PutUVarInt(1)
	n.out.PutBool(false)
	n.out.PutUVarInt(2)
	n.out.PutInt32(-1)
	n.out.PutUVarInt(0)
	n.out.PutUVarInt(numCols)
	n.out.PutUVarInt(numRows)
	for range numCols {
		name, err := r.Str()
		if err != nil {
			return err
		}
		typ, err := r.Str()
		if err != nil {
			return err
		}
		n.out.PutString(name)
		n.out.PutString(typ)
		if n.revision >= proto.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION {
			n.out.PutBool(false) // the engine never writes sparse columns at revision 0
		}
		if numRows == 0 {
			continue
		}
		ctx := n.ctx
		c, err := column.Type(typ).Column(name, &ctx)
		if err != nil {
			return fmt.Errorf("column %s: %w", name, err)
		}
		start := pos()
		if cs, ok := c.(column.CustomSerialization); ok {
			if err := cs.ReadStatePrefix(r); err != nil {
				return fmt.Errorf("column %s: %w", name, err)
			}
		}
		if err := c.Decode(r, int(numRows)); err != nil {
			return fmt.Errorf("column %s: %w", name, err)
		}
		// clickhouse-go counts a block's rows from its columns; a type whose
		// decoded column disagrees would lose rows silently on the client.
		if got := c.Rows(); got != int(numRows) {
			return fmt.Errorf("column %s of type %s: clickhouse-go reads %d of %d rows", name, typ, got, numRows)
		}
		n.out.Buf = append(n.out.Buf, data[start:pos()]...)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += k
	return k, err
}

// Finish reports a trailing partial block.
func (n *nativeReframer) Finish() error {
	if len(n.pending) > 0 {
		return fmt.Errorf("native output ends inside a block (%d bytes left)", len(n.pending))
	}
	return nil
}
