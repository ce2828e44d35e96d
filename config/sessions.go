package config

import (
	"errors"
	"fmt"
	"time"
)

// Sessions configures the UI's server-side sessions (identity/sessions).
type Sessions struct {
	// IdleTimeout ends a session not used for this long (default 30m).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// AbsoluteTimeout ends a session this long after sign-in, however
	// busy (default 8h; at most 7 days).
	AbsoluteTimeout Duration `yaml:"absolute_timeout"`
	// SecureCookies marks session cookies Secure even on plain HTTP
	// requests (behind a TLS-terminating proxy); a request that came over
	// TLS always gets Secure cookies.
	SecureCookies bool `yaml:"secure_cookies"`
}

// DefaultSessions are the session defaults.
func DefaultSessions() Sessions {
	return Sessions{IdleTimeout: Duration(30 * time.Minute), AbsoluteTimeout: Duration(8 * time.Hour)}
}

func (s Sessions) validate() error {
	idle, abs := time.Duration(s.IdleTimeout), time.Duration(s.AbsoluteTimeout)
	var errs []error
	if idle < time.Minute {
		errs = append(errs, fmt.Errorf("sessions.idle_timeout: %s is below 1m", idle))
	}
	if abs < idle {
		errs = append(errs, fmt.Errorf("sessions.absolute_timeout: %s is below the idle timeout %s", abs, idle))
	}
	if abs > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("sessions.absolute_timeout: %s is above 7 days", abs))
	}
	return errors.Join(errs...)
}
