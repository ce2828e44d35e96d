package metering

import (
	"fmt"

	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"
)

// Money and quantities are exact decimals (shopspring/decimal), never
// float64:
//   - counts and bytes are whole numbers; stored_bytes is rounded down to a
//     whole byte once per table (storedBytes);
//   - compute_seconds is exact to the nanosecond; user-defined sum, max and
//     latest meters (Float64 in ClickHouse) are rounded half away from zero
//     to MeterScale decimal places when read;
//   - every line item's amount is rounded half away from zero to
//     AmountScale decimal places, once, where it is computed; totals are
//     exact sums of the rounded lines (they need no rounding);
//   - CSV amounts are written with exactly AmountScale decimal places,
//     quantities and prices as their exact decimal text.
const (
	AmountScale = 4
	MeterScale  = 6
	// unitScale is the precision of a tiered meter's units (quantity ÷
	// unit) before tiers are priced.
	unitScale = 12
)

// Dec is a rate card number: read from YAML as an exact decimal (the
// number's text, never through float64), written back as the YAML number
// earlier releases wrote, so a stored version's hash does not change.
type Dec struct{ decimal.Decimal }

// D makes a Dec (for rate cards built in code).
func D(s string) Dec { return Dec{decimal.RequireFromString(s)} }

// UnmarshalYAML reads an int or float scalar exactly.
func (d *Dec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return fmt.Errorf("line %d: %q is not a number", n.Line, n.Value)
	}
	v, err := decimal.NewFromString(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a decimal number", n.Line, n.Value)
	}
	d.Decimal = v
	return nil
}

// MarshalYAML writes the number as a float64 did (the hash of a version
// is over this form).
func (d Dec) MarshalYAML() (any, error) { return d.InexactFloat64(), nil }

// amount rounds a computed amount to AmountScale places (half away from
// zero): the one rounding of a line item.
func amount(v decimal.Decimal) decimal.Decimal { return v.Round(AmountScale) }

// fixed writes an amount with exactly AmountScale decimal places.
func fixed(v decimal.Decimal) string { return v.StringFixed(AmountScale) }
