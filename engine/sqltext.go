package engine

import (
	"strings"
)

// The HTTP interface needs three facts about a statement before it runs it:
// its kind (first keyword), its FORMAT clause, and for INSERT where the
// inline data starts. sqlScanner finds them with a small lexer that skips
// string literals, quoted identifiers and comments; the engine parses the SQL
// for real.

type token struct {
	start, end int
	depth      int
}

// scanWords calls fn for each bare word (identifier or keyword) outside
// literals and comments, with the parenthesis depth; fn returns false to stop.
func scanWords(s string, fn func(t token) bool) {
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '-' && i+1 < len(s) && s[i+1] == '-', c == '#' && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '!'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return
			}
			i += j + 4
		case c == '\'' || c == '"' || c == '`':
			i++
			for i < len(s) && s[i] != c {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case c == '(' || c == '[' || c == '{':
			depth++
			i++
		case c == ')' || c == ']' || c == '}':
			depth--
			i++
		case isWordStart(c):
			j := i + 1
			for j < len(s) && isWordChar(s[j]) {
				j++
			}
			if !fn(token{start: i, end: j, depth: depth}) {
				return
			}
			i = j
		case c >= '0' && c <= '9':
			for i < len(s) && (isWordChar(s[i]) || s[i] == '.') {
				i++
			}
		default:
			i++
		}
	}
}

func isWordStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isWordChar(c byte) bool { return isWordStart(c) || (c >= '0' && c <= '9') }

// statementKind returns the first keyword in upper case ("SELECT", "INSERT",
// ...), or "" if there is none.
func statementKind(s string) string {
	kind := ""
	scanWords(s, func(t token) bool {
		kind = strings.ToUpper(s[t.start:t.end])
		return false
	})
	return kind
}

// formatClause finds the top-level "FORMAT <name>" clause. For INSERT the
// first one counts (data follows it); otherwise the last. It returns the
// clause start, the end of the name, and the name; ok is false without one.
func formatClause(s string, insert bool) (start, end int, name string, ok bool) {
	var prev *token
	var found bool
	scanWords(s, func(t token) bool {
		if prev != nil && t.depth == 0 && strings.EqualFold(s[prev.start:prev.end], "FORMAT") && onlySpace(s[prev.end:t.start]) {
			start, end, name, found = prev.start, t.end, s[t.start:t.end], true
			if insert {
				return false
			}
		}
		tt := t
		prev = &tt
		return true
	})
	return start, end, name, found
}

// valuesClause finds a top-level VALUES keyword in an INSERT.
func valuesClause(s string) (start, end int, ok bool) {
	scanWords(s, func(t token) bool {
		w := s[t.start:t.end]
		if t.depth == 0 && strings.EqualFold(w, "VALUES") {
			start, end, ok = t.start, t.end, true
			return false
		}
		if t.depth == 0 && (strings.EqualFold(w, "SELECT") || strings.EqualFold(w, "WITH") || strings.EqualFold(w, "FORMAT")) {
			return false
		}
		return true
	})
	return start, end, ok
}

func onlySpace(s string) bool {
	return strings.TrimLeft(s, " \t\r\n") == ""
}

// insertDataStart is where inline data begins after "FORMAT <name>" that
// ends at end: ClickHouse skips spaces up to and including one newline.
func insertDataStart(s string, end int) int {
	i := end
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i < len(s) && s[i] == '\r' {
		i++
	}
	if i < len(s) && s[i] == '\n' {
		i++
	}
	return i
}

// streamable reports whether the engine can stream the statement's output.
func streamable(kind string) bool { return kind == "SELECT" || kind == "WITH" }
