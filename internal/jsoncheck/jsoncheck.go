// Package jsoncheck validates JSON as encoding/json does, at fastjson's
// speed: the collector's event decoder and the SDK check every payload with
// it.
package jsoncheck

import (
	"encoding/json"
	"errors"

	"github.com/valyala/fastjson"
)

// ErrControlCharacter is a raw control character (U+0000 to U+001F) inside
// a JSON string, which JSON forbids and fastjson lets through.
var ErrControlCharacter = errors.New("control character in a string")

// Valid reports whether b is one valid JSON value. fastjson decides, except
// that a body holding a control byte is also checked with encoding/json:
// fastjson accepts raw control characters inside strings. Bodies without
// one (nearly all) pay a byte scan more.
func Valid(b []byte) error {
	if err := fastjson.ValidateBytes(b); err != nil {
		return err
	}
	for _, c := range b {
		if c < 0x20 {
			if !json.Valid(b) {
				return ErrControlCharacter
			}
			return nil
		}
	}
	return nil
}
