package otlp_test

import (
	"io"
	"net/http"
)

func io_copy(w io.Writer, res *http.Response) (int64, error) { return io.Copy(w, res.Body) }
