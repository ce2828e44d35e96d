package jsoncheck

import (
	"encoding/json"
	"testing"
)

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	for _, b := range []string{
		`{"a":"x"}`, "{\"a\":\"\x00\"}", "{\"a\":\"\n\"}", "{\"a\":\"\t\"}", "{\n\t\"a\": 1\r\n}", "{\"\":\"\x00\\b0000\"}",
		`{"a":`, `{"a":1} {"b":2}`, `[1, 2]`, ``, `"\u0000"`,
	} {
		if got, want := Valid([]byte(b)) == nil, json.Valid([]byte(b)); got != want {
			t.Errorf("%q: Valid %v, encoding/json %v", b, got, want)
		}
	}
}

// FuzzValidAgreesWithEncodingJSON: what Valid accepts, encoding/json
// accepts, and the other way round.
func FuzzValidAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":"x"}`, "{\"a\":\"\x01\"}", `[1,{"b":null}]`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b) == nil, json.Valid(b); got != want {
			t.Fatalf("%q: Valid %v, encoding/json %v", b, got, want)
		}
	})
}
