// Package csvcell writes CSV that a spreadsheet opens as text, never as a
// formula. Every CSV the suite writes (audit trails, cost reports, the CLI's
// reports) goes through Writer.
//
// As OWASP advises against CSV injection, a cell that starts with '=', '+',
// '-', '@', a tab or a carriage return gets a leading apostrophe, which
// spreadsheets read as "this cell is text" and do not show. A cell that is
// a plain decimal number ("-12.5", "+3", "1e-3") is left alone: it cannot be
// a formula, and money and quantities stay numbers. A reader that wants the
// original text removes one leading apostrophe before one of those
// characters.
package csvcell

import (
	"encoding/csv"
	"io"
	"regexp"
)

// Escape returns s neutralized for a CSV cell.
func Escape(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		if decimal.MatchString(s) {
			return s
		}
		return "'" + s
	}
	return s
}

var decimal = regexp.MustCompile(`^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$`)

// Writer is a csv.Writer that escapes every cell it writes.
type Writer struct {
	*csv.Writer
	row []string
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{Writer: csv.NewWriter(w)} }

// Write writes one record, each cell escaped.
func (w *Writer) Write(record []string) error {
	w.row = w.row[:0]
	for _, c := range record {
		w.row = append(w.row, Escape(c))
	}
	return w.Writer.Write(w.row)
}

// WriteAll writes records, each cell escaped, and flushes.
func (w *Writer) WriteAll(records [][]string) error {
	for _, r := range records {
		if err := w.Write(r); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}
