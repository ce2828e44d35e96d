package collector

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/tenantscope/tenantscope/config"
)

// Redactor applies a tenant's PII rules to message bodies before anything is
// stored: values at field paths, or matches of patterns in any string, are
// masked, hashed (HMAC-SHA-256 with the tenant's salt, so equal values stay
// joinable without being readable) or dropped.
type Redactor struct {
	paths    []pathRule
	patterns []patternRule
	salt     []byte
}

type pathRule struct {
	path   []string
	action string
}

type patternRule struct {
	re     *regexp.Regexp
	action string
}

// Mask is what a masked value becomes.
const Mask = "[REDACTED]"

// NewRedactor compiles rules; nil when there are none.
func NewRedactor(rules []config.RedactRule, salt string) (*Redactor, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	r := &Redactor{salt: []byte(salt)}
	for _, rule := range rules {
		if rule.Path != "" {
			r.paths = append(r.paths, pathRule{path: strings.Split(rule.Path, "."), action: rule.Action})
			continue
		}
		re, err := regexp.Compile(rule.Pattern)
		if err != nil {
			return nil, fmt.Errorf("redact pattern %q: %w", rule.Pattern, err)
		}
		r.patterns = append(r.patterns, patternRule{re: re, action: rule.Action})
	}
	return r, nil
}

// Hash is the stored form of a hashed value.
func (r *Redactor) Hash(s string) string {
	m := hmac.New(sha256.New, r.salt)
	m.Write([]byte(s))
	return "h:" + hex.EncodeToString(m.Sum(nil))[:24]
}

// Apply returns the redacted body. Bodies that are not JSON objects are left
// to the decoder to reject.
func (r *Redactor) Apply(body []byte) ([]byte, error) {
	if r == nil {
		return body, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return body, nil //nolint:nilerr // invalid JSON is the decoder's to dead-letter, with its reason
	}
	obj, ok := root.(map[string]any)
	if !ok {
		return body, nil
	}
	for _, p := range r.paths {
		r.applyPath(obj, p.path, p.action)
	}
	var out any = obj
	if len(r.patterns) > 0 {
		out = r.applyPatterns(obj)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func (r *Redactor) applyPath(v any, path []string, action string) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			r.applyPath(e, path, action)
		}
	case map[string]any:
		keys := []string{path[0]}
		if path[0] == "*" {
			keys = keys[:0]
			for k := range x {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			child, ok := x[k]
			if !ok {
				continue
			}
			if len(path) > 1 {
				r.applyPath(child, path[1:], action)
				continue
			}
			switch action {
			case "drop":
				delete(x, k)
			case "mask":
				x[k] = Mask
			case "hash":
				s, isStr := child.(string)
				if !isStr {
					b, _ := json.Marshal(child) //nolint:errcheck // decoded JSON marshals
					s = string(b)
				}
				x[k] = r.Hash(s)
			}
		}
	}
}

func (r *Redactor) applyPatterns(v any) any {
	switch x := v.(type) {
	case string:
		for _, p := range r.patterns {
			x = p.re.ReplaceAllStringFunc(x, func(m string) string {
				switch p.action {
				case "drop":
					return ""
				case "hash":
					return r.Hash(m)
				}
				return Mask
			})
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = r.applyPatterns(e)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = r.applyPatterns(e)
		}
	}
	return v
}
