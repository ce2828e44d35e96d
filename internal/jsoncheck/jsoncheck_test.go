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

// FuzzHasControlAgreesWithAScan holds the eight-bytes-at-a-time test to a
// byte by byte scan.
func FuzzHasControlAgreesWithAScan(f *testing.F) {
	for _, s := range []string{"", "abcdefgh", "abcdefg\x1f", "\x00", "\x7f\x80\xff\x20\x1f\x20\x20\x20\x20", "ABCDEFGHIJKLMNOP\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := false
		for _, c := range b {
			want = want || c < 0x20
		}
		if got := hasControl(b); got != want {
			t.Fatalf("%q: hasControl %v, a scan %v", b, got, want)
		}
	})
}
