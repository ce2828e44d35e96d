package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Local is an engine served through its HTTP interface on one address.
type Local struct {
	Engine *Engine
	Server *Server
	Addr   string // the bound host:port
	// Served receives the HTTP server's error if it stops on its own.
	Served <-chan error
	hs     *http.Server
}

// StartLocal opens the engine and serves it on addr ("127.0.0.1:0" picks a
// free port); a non-loopback address needs configured users.
func StartLocal(cfg Config, scfg ServerConfig, addr string) (*Local, error) {
	eng, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	srv := NewServer(eng, scfg)
	ln, err := srv.Listen(addr)
	if err != nil {
		srv.Close()
		return nil, errors.Join(err, eng.Close(context.Background()))
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	if scfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(scfg.TLSCert, scfg.TLSKey)
		if err != nil {
			srv.Close()
			return nil, errors.Join(fmt.Errorf("engine tls: %w", err), ln.Close(), eng.Close(context.Background()))
		}
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	served := make(chan error, 1)
	go func() {
		serve := func() error { return hs.Serve(ln) }
		if hs.TLSConfig != nil {
			serve = func() error { return hs.ServeTLS(ln, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			served <- fmt.Errorf("engine http: %w", err)
		}
		close(served)
	}()
	return &Local{Engine: eng, Server: srv, Addr: ln.Addr().String(), Served: served, hs: hs}, nil
}

// Close stops serving (waiting for requests until ctx ends), ends the
// sessions, then closes the engine (killing what still runs).
func (l *Local) Close(ctx context.Context) error {
	shutdownErr := l.hs.Shutdown(ctx)
	l.Server.Close()
	return errors.Join(shutdownErr, l.Engine.Close(ctx))
}
