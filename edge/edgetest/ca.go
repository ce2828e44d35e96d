// Package edgetest makes a certificate authority and certificates for TLS
// tests: every listener of the suite is tested over TLS with these.
package edgetest

import (
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/tenantscope/tenantscope/edge"
)

// CA is a test certificate authority.
type CA struct {
	ca *edge.LocalCA
	// Pool trusts the CA; File is its certificate as PEM on disk.
	Pool *x509.CertPool
	File string
}

// NewCA makes a CA valid for an hour, its files written under dir.
func NewCA(t testing.TB, dir string) *CA {
	t.Helper()
	ca, err := edge.NewLocalCA(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{ca: ca, Pool: ca.Pool, File: ca.File}
}

// Issue writes a certificate for 127.0.0.1 and localhost (server and client
// use) and its key under dir as name.crt and name.key. The serial number
// is random; id only names the certificate's subject.
func (c *CA) Issue(t testing.TB, dir, name string, id int64) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := c.ca.Issue(dir, name, []string{"127.0.0.1", "localhost", fmt.Sprintf("cert-%d.test", id)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
