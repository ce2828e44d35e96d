package metering

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"

	"github.com/tenantscope/tenantscope/chstore"
	"github.com/tenantscope/tenantscope/config"
)

// RateCard is the versioned price list (YAML). Each version is in effect
// from EffectiveFrom (inclusive) to EffectiveTo (exclusive, open if empty);
// a period is priced by the version in effect on its first day.
type RateCard struct {
	Versions []Version `yaml:"versions"`
	// Source is the file's text and SHA256 its hash, as loaded.
	Source string `yaml:"-"`
	SHA256 string `yaml:"-"`
}

// Version is one rate card version.
type Version struct {
	Version       string                    `yaml:"version"`
	EffectiveFrom string                    `yaml:"effective_from"`
	EffectiveTo   string                    `yaml:"effective_to"`
	Currency      string                    `yaml:"currency"`
	Prices        []Price                   `yaml:"prices"`
	Shared        []Shared                  `yaml:"shared"`
	Tenants       map[string]TenantOverride `yaml:"tenants"`
	Line          int                       `yaml:"-"`
	from, to      time.Time
}

// Price prices a meter per Unit units: one Price, or graduated Tiers (each
// tier's units at its price; the last tier has no UpTo).
type Price struct {
	Meter string `yaml:"meter"`
	Unit  Dec    `yaml:"unit"`
	Price Dec    `yaml:"price"`
	Tiers []Tier `yaml:"tiers"`
	Line  int    `yaml:"-"`
}

// Tier is one step of a graduated price; UpTo counts priced units (after
// dividing by Unit), 0 for the last tier.
type Tier struct {
	UpTo  Dec `yaml:"up_to"`
	Price Dec `yaml:"price"`
	Line  int `yaml:"-"`
}

// Shared is a platform cost split between tenants: evenly, or by their
// share of Meter ("usage_share").
type Shared struct {
	Name   string `yaml:"name"`
	Amount Dec    `yaml:"amount"`
	Split  string `yaml:"split"`
	Meter  string `yaml:"meter"`
	Line   int    `yaml:"-"`
}

// TenantOverride replaces prices by meter and discounts a tenant's bill.
type TenantOverride struct {
	DiscountPercent Dec     `yaml:"discount_percent"`
	Prices          []Price `yaml:"prices"`
	Line            int     `yaml:"-"`
}

// UnmarshalYAML records the line of each element, for error messages.
func (v *Version) UnmarshalYAML(n *yaml.Node) error {
	type plain Version
	if err := strict(n, plain{}); err != nil {
		return err
	}
	if err := n.Decode((*plain)(v)); err != nil {
		return err
	}
	v.Line = n.Line
	return nil
}

// UnmarshalYAML records the line.
func (p *Price) UnmarshalYAML(n *yaml.Node) error {
	type plain Price
	if err := strict(n, plain{}); err != nil {
		return err
	}
	if err := n.Decode((*plain)(p)); err != nil {
		return err
	}
	p.Line = n.Line
	return nil
}

// UnmarshalYAML records the line.
func (t *Tier) UnmarshalYAML(n *yaml.Node) error {
	type plain Tier
	if err := strict(n, plain{}); err != nil {
		return err
	}
	if err := n.Decode((*plain)(t)); err != nil {
		return err
	}
	t.Line = n.Line
	return nil
}

// UnmarshalYAML records the line.
func (s *Shared) UnmarshalYAML(n *yaml.Node) error {
	type plain Shared
	if err := strict(n, plain{}); err != nil {
		return err
	}
	if err := n.Decode((*plain)(s)); err != nil {
		return err
	}
	s.Line = n.Line
	return nil
}

// UnmarshalYAML records the line.
func (o *TenantOverride) UnmarshalYAML(n *yaml.Node) error {
	type plain TenantOverride
	if err := strict(n, plain{}); err != nil {
		return err
	}
	if err := n.Decode((*plain)(o)); err != nil {
		return err
	}
	o.Line = n.Line
	return nil
}

// strict refuses keys of mapping n that are not yaml fields of v (a custom
// UnmarshalYAML does not inherit the decoder's KnownFields).
func strict(n *yaml.Node, v any) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			known[name] = true
		}
	}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i]; !known[k.Value] {
			return fmt.Errorf("line %d: field %s not found in %s", k.Line, k.Value, strings.ToLower(t.Name()))
		}
	}
	return nil
}

// LoadRateCard reads and checks a rate card file.
func LoadRateCard(path string, cfg config.Config) (*RateCard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rate card: %w", err)
	}
	return ParseRateCard(b, cfg, path)
}

// ParseRateCard decodes and checks a rate card: every error names its line.
func ParseRateCard(b []byte, cfg config.Config, name string) (*RateCard, error) {
	var rc RateCard
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rc); err != nil {
		return nil, fmt.Errorf("rate card %s: %w", name, err)
	}
	sum := sha256.Sum256(b)
	rc.Source, rc.SHA256 = string(b), hex.EncodeToString(sum[:])
	if err := rc.check(cfg, name); err != nil {
		return nil, err
	}
	return &rc, nil
}

func (rc *RateCard) check(cfg config.Config, name string) error {
	var errs []error
	bad := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("rate card %s line %d: %s", name, line, fmt.Sprintf(format, a...)))
	}
	meters := slices.Clone(config.BuiltinMeters)
	for _, m := range cfg.Metering.Meters {
		meters = append(meters, m.Name)
	}
	tenants := map[string]bool{}
	for _, t := range cfg.Tenants {
		tenants[t.ID] = true
	}
	if len(rc.Versions) == 0 {
		errs = append(errs, fmt.Errorf("rate card %s: no versions", name))
	}
	seen := map[string]bool{}
	checkPrice := func(p Price) {
		if !slices.Contains(meters, p.Meter) {
			bad(p.Line, "unknown meter %q (built-in: %s; or one of metering.meters)", p.Meter, strings.Join(config.BuiltinMeters, ", "))
		}
		if p.Unit.IsNegative() {
			bad(p.Line, "unit %v is negative", p.Unit)
		}
		if p.Price.IsNegative() {
			bad(p.Line, "price %v is negative", p.Price)
		}
		if !p.Price.IsZero() && len(p.Tiers) > 0 {
			bad(p.Line, "give price or tiers, not both")
		}
		for i, t := range p.Tiers {
			if t.Price.IsNegative() {
				bad(t.Line, "price %v is negative", t.Price)
			}
			last := i == len(p.Tiers)-1
			if !last && (!t.UpTo.IsPositive() || (i > 0 && t.UpTo.LessThanOrEqual(p.Tiers[i-1].UpTo.Decimal))) {
				bad(t.Line, "up_to must grow from tier to tier")
			}
			if last && !t.UpTo.IsZero() {
				bad(t.Line, "the last tier has no up_to")
			}
		}
	}
	for i := range rc.Versions {
		v := &rc.Versions[i]
		if v.Version == "" || seen[v.Version] {
			bad(v.Line, "version %q is empty or given twice", v.Version)
		}
		seen[v.Version] = true
		var err error
		if v.from, err = time.Parse(time.DateOnly, v.EffectiveFrom); err != nil {
			bad(v.Line, "effective_from %q is not a date like 2026-11-01", v.EffectiveFrom)
		}
		if v.EffectiveTo != "" {
			if v.to, err = time.Parse(time.DateOnly, v.EffectiveTo); err != nil || !v.to.After(v.from) {
				bad(v.Line, "effective_to %q is not a date after effective_from", v.EffectiveTo)
			}
		}
		if len(v.Currency) != 3 || strings.ToUpper(v.Currency) != v.Currency {
			bad(v.Line, "currency %q is not an ISO 4217 code like EUR", v.Currency)
		}
		for _, p := range v.Prices {
			checkPrice(p)
		}
		for _, sh := range v.Shared {
			if sh.Amount.IsNegative() {
				bad(sh.Line, "amount %v is negative", sh.Amount)
			}
			switch sh.Split {
			case "evenly":
			case "usage_share":
				if !slices.Contains(meters, sh.Meter) {
					bad(sh.Line, "usage_share needs a known meter, not %q", sh.Meter)
				}
			default:
				bad(sh.Line, "split %q is not evenly or usage_share", sh.Split)
			}
		}
		for id, o := range v.Tenants {
			if !tenants[id] {
				bad(o.Line, "unknown tenant %q", id)
			}
			if o.DiscountPercent.IsNegative() || o.DiscountPercent.GreaterThan(decimal.NewFromInt(100)) {
				bad(o.Line, "discount_percent %v is not 0..100", o.DiscountPercent)
			}
			for _, p := range o.Prices {
				checkPrice(p)
			}
		}
	}
	// No two versions in effect on the same day.
	vs := slices.Clone(rc.Versions)
	sort.Slice(vs, func(i, j int) bool { return vs[i].from.Before(vs[j].from) })
	for i := 1; i < len(vs); i++ {
		prev := vs[i-1]
		if prev.to.IsZero() || prev.to.After(vs[i].from) {
			bad(vs[i].Line, "version %q (from %s) overlaps version %q on line %d", vs[i].Version, vs[i].EffectiveFrom, prev.Version, prev.Line)
		}
	}
	return errors.Join(errs...)
}

// For is the version in effect on day, if any.
func (rc *RateCard) For(day time.Time) (*Version, bool) {
	if rc == nil {
		return nil, false
	}
	for i := range rc.Versions {
		v := &rc.Versions[i]
		if !day.Before(v.from) && (v.to.IsZero() || day.Before(v.to)) {
			return v, true
		}
	}
	return nil, false
}

// Store records the rate card's versions in ClickHouse (rate_cards), so
// reports say which version priced them. A version already stored for a
// closed period must not change: that is refused, naming the line.
func (rc *RateCard) Store(ctx context.Context, st *chstore.Store) error {
	var closed []struct {
		Period  string `ch:"period"`
		Version string `ch:"rate_card"`
		Hash    string `ch:"sha"`
	}
	if err := st.Select(ctx, &closed, `SELECT DISTINCT s.period AS period, s.rate_card AS rate_card, r.sha256 AS sha
		FROM cost_snapshots AS s FINAL LEFT JOIN (SELECT version, argMax(sha256, loaded_at) AS sha256 FROM rate_cards GROUP BY version) AS r ON r.version = s.rate_card`); err != nil {
		return fmt.Errorf("rate card: %w", err)
	}
	for _, v := range rc.Versions {
		vh := v.hash()
		for _, c := range closed {
			if c.Version == v.Version && c.Hash != "" && c.Hash != vh {
				return fmt.Errorf("rate card line %d: version %q priced the closed period %s and may not change (add a new version, or an adjustment)", v.Line, v.Version, c.Period)
			}
		}
	}
	for _, v := range rc.Versions {
		var to *time.Time
		if !v.to.IsZero() {
			to = &v.to
		}
		var stored uint64
		if err := st.QueryRow(ctx, []any{&stored}, "SELECT count() FROM rate_cards FINAL WHERE version = ? AND sha256 = ?", v.Version, v.hash()); err != nil {
			return err
		}
		if stored > 0 {
			continue
		}
		src, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		if err := st.Exec(ctx, "INSERT INTO rate_cards (version, effective_from, effective_to, currency, source, sha256) VALUES (?, ?, ?, ?, ?, ?)",
			v.Version, v.from, to, v.Currency, string(src), v.hash()); err != nil {
			return fmt.Errorf("rate card: %w", err)
		}
	}
	return nil
}

// hash identifies a version's contents (not its line numbers).
func (v Version) hash() string {
	b, _ := yaml.Marshal(v) //nolint:errcheck // plain struct
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
