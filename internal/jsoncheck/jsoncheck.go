// Package jsoncheck validates JSON as encoding/json does, at fastjson's
// speed: the collector's event decoder and the SDK check every payload with
// it.
package jsoncheck

import (
	"encoding/binary"
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
// one (nearly all) pay a scan more, eight bytes at a time.
func Valid(b []byte) error {
	if err := fastjson.ValidateBytes(b); err != nil {
		return err
	}
	if hasControl(b) && !json.Valid(b) {
		return ErrControlCharacter
	}
	return nil
}

// hasControl reports whether b holds a byte below 0x20. It tests eight
// bytes at once: (x - 0x20 in every byte) & ^x & the high bits is not 0
// exactly when a byte of x is below 0x20 (a borrow from a byte at or above
// 0x20 never sets a high bit the ^x keeps, unless a lower byte was below).
func hasControl(b []byte) bool {
	const (
		below = 0x2020202020202020
		high  = 0x8080808080808080
	)
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		if (x-below)&^x&high != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}
