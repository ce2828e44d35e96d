package suite

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/demo"
	"github.com/tenantscope/tenantscope/natsbus"
)

// runDemo publishes demo traffic as every tenant whose service password the
// bootstrap file holds (those generated at first start).
func runDemo(ctx context.Context, s *Suite, log zerolog.Logger) error {
	tenants, err := DemoTenants(s.cfg)
	if err != nil {
		return err
	}
	err = demo.Run(ctx, demo.Options{URL: s.nc.ConnectedUrl(), Tenants: tenants, NATS: natsbus.ClientTLS(s.cfg), Log: log})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// DemoTenants reads the tenants' generated service credentials.
func DemoTenants(cfg config.Config) ([]demo.Tenant, error) {
	b, err := config.LoadSecrets(cfg)
	if err != nil {
		return nil, err
	}
	var out []demo.Tenant
	for _, t := range cfg.Tenants {
		if pw, ok := b.NATS[t.NATS.User]; ok {
			out = append(out, demo.Tenant{ID: t.ID, User: t.NATS.User, Password: pw})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("demo: no tenant has a generated service password in " + config.SecretsPath(cfg) + "; configure tenants without nats.password_hash for the demo")
	}
	return out, nil
}
