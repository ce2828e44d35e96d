package retention

import (
	"context"
	"fmt"
	"sort"
)

// Location is where some of a tenant's data lives, as read from a store.
type Location struct {
	Region string `json:"region"`
	Table  string `json:"table"`
	Rows   uint64 `json:"rows"`
}

// Residency is a tenant's residency report.
type Residency struct {
	Tenant    string     `json:"tenant"`
	Pinned    string     `json:"pinned_region"`
	Locations []Location `json:"locations"`
	// OK: no row of the tenant lives outside its pinned region.
	OK bool `json:"ok"`
}

// Residency reads, from every region's store itself, where the tenant's
// rows are: every table with tenant rows (found in system.columns, as a
// region move copies them), not only the signals.
func (s *Service) Residency(ctx context.Context, tenant string) (Residency, error) {
	r, ok := s.place.RegionOf(s.cfg, tenant)
	if !ok {
		return Residency{}, fmt.Errorf("%w: unknown tenant %q", ErrNotFound, tenant)
	}
	rep := Residency{Tenant: tenant, Pinned: r.Name, OK: true}
	names := make([]string, 0, len(s.stores))
	for n := range s.stores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, region := range names {
		st := s.stores[region]
		tabs, err := tenantTables(ctx, st)
		if err != nil {
			return rep, fmt.Errorf("residency %s: %w", region, err)
		}
		held, err := rowCounts(ctx, st, tabs, tenant)
		if err != nil {
			return rep, fmt.Errorf("residency %s: %w", region, err)
		}
		for _, t := range held {
			rep.Locations = append(rep.Locations, Location{Region: region, Table: t.Table, Rows: t.Rows})
			if region != r.Name {
				rep.OK = false
			}
		}
	}
	return rep, nil
}
