// Package identitytest calls the HTTP API as a client with an API key, for
// tests.
package identitytest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// Call sends method url with body, authenticated by key (none when empty),
// and returns the status, body and headers of the answer.
func Call(t testing.TB, method, url, key, body string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, b, res.Header
}

// CallJSON is Call for an answer that must be a JSON object.
func CallJSON(t testing.TB, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	status, b, _ := Call(t, method, url, key, body)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out), string(b))
	return status, out
}
