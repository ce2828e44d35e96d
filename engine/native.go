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
// framing the HTTP client asked for with client_protocol_version. Blocks are
// decoded and encoded with clickhouse-go's own column codecs, so every type
// that client can read is framed the way it expects. Input may arrive in
// chunks that split a block; the remainder waits for the next chunk.
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
	off := 0
	for off < len(data) {
		ctx := n.ctx
		b := proto.Block{ServerContext: &ctx}
		if err := b.Decode(r, 0); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return nil, fmt.Errorf("reframe native block: %w", err)
		}
		if err := b.Encode(&n.out, n.revision); err != nil {
			return nil, fmt.Errorf("reframe native block: %w", err)
		}
		off = cr.n - bf.Buffered()
	}
	n.pending = append(n.pending[:0], data[off:]...)
	return n.out.Buf, nil
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
