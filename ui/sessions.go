package ui

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/identity/sessions"
)

// SessionsView is the compliance sessions page's data.
type SessionsView struct {
	User     string // the filter ("" for everyone)
	Sessions []sessions.Session
	Idle     time.Duration
	Current  string // the viewer's own session id
	Message  string
}

// allowSessions lets compliance (identity.ManageSessions) through.
func (u *UI) allowSessions(w http.ResponseWriter, r *http.Request, s *Session) bool {
	if can(s, identity.ManageSessions, "") {
		return true
	}
	u.render(w, r, http.StatusForbidden, errorPage(s, http.StatusForbidden, "Your role may not see or end sessions."))
	return false
}

// sessionsPage lists the live sessions, of one user with ?user=.
func (u *UI) sessionsPage(w http.ResponseWriter, r *http.Request, s *Session) {
	if !u.allowSessions(w, r, s) {
		return
	}
	u.renderSessions(w, r, s, http.StatusOK, SessionsView{User: strings.TrimSpace(r.URL.Query().Get("user"))})
}

func (u *UI) renderSessions(w http.ResponseWriter, r *http.Request, s *Session, status int, v SessionsView) {
	list, err := u.sessions.List(r.Context(), v.User)
	if err != nil {
		u.log.Error().Err(err).Msg("list sessions")
		u.render(w, r, http.StatusServiceUnavailable, errorPage(s, http.StatusServiceUnavailable, "The sessions could not be read."))
		return
	}
	v.Sessions, v.Idle, v.Current = list, u.sessions.Idle(), s.ID
	w.Header().Set("Cache-Control", "no-store")
	u.render(w, r, status, sessionsPage(s, v))
}

// endSession ends one session (compliance), audited in its user's chain.
func (u *UI) endSession(w http.ResponseWriter, r *http.Request, s *Session) {
	if !u.allowSessions(w, r, s) || !u.checkCSRF(w, r, s) {
		return
	}
	id := r.PathValue("sessionId")
	var target *sessions.Session
	list, err := u.sessions.List(r.Context(), "")
	if err == nil {
		for i := range list {
			if list[i].ID == id {
				target = &list[i]
			}
		}
		if target == nil {
			err = sessions.ErrNoSession
		} else {
			err = u.sessions.EndID(r.Context(), id)
		}
	}
	back := SessionsView{User: strings.TrimSpace(r.PostFormValue("user"))}
	switch {
	case errors.Is(err, sessions.ErrNoSession):
		back.Message = "That session has already ended."
		u.renderSessions(w, r, s, http.StatusNotFound, back)
	case err != nil:
		u.log.Error().Err(err).Msg("end a session")
		u.render(w, r, http.StatusServiceUnavailable, errorPage(s, http.StatusServiceUnavailable, "The session could not be ended."))
	default:
		u.auditEnded(r, s, target.User, target.Tenant, 1, map[string]string{"session": id[:16]})
		back.Message = fmt.Sprintf("Session %s… of %s is ended.", id[:12], target.User)
		u.renderSessions(w, r, s, http.StatusOK, back)
	}
}

// endUserSessions ends every session of the posted user (compliance).
func (u *UI) endUserSessions(w http.ResponseWriter, r *http.Request, s *Session) {
	if !u.allowSessions(w, r, s) || !u.checkCSRF(w, r, s) {
		return
	}
	user := r.PostFormValue("user")
	if user == "" || !identity.ValidName(user) {
		u.renderSessions(w, r, s, http.StatusBadRequest, SessionsView{Message: "Name the user whose sessions to end."})
		return
	}
	list, err := u.sessions.List(r.Context(), user)
	var n int
	if err == nil {
		n, err = u.sessions.EndUser(r.Context(), user)
	}
	if err != nil {
		u.log.Error().Err(err).Str("user", identity.Clip(user)).Msg("end a user's sessions")
		u.render(w, r, http.StatusServiceUnavailable, errorPage(s, http.StatusServiceUnavailable, "The sessions could not be ended."))
		return
	}
	if n > 0 {
		tenant := list[0].Tenant
		if usr, ok := u.users[user]; ok {
			tenant = usr.Tenant
		}
		u.auditEnded(r, s, user, tenant, n, nil)
	}
	u.renderSessions(w, r, s, http.StatusOK, SessionsView{User: user, Message: fmt.Sprintf("%d session(s) of %s ended.", n, user)})
}

// auditEnded records that s ended n sessions of user, in the user's chain.
func (u *UI) auditEnded(r *http.Request, s *Session, user, tenant string, n int, meta map[string]string) {
	if meta == nil {
		meta = map[string]string{}
	}
	meta["sessions"] = fmt.Sprint(n)
	meta["reason"] = "ended by compliance"
	rec := auditRecord(chainOf(tenant), s.actor(r), "ui.session_ended", "user", identity.Clip(user), meta)
	u.publish(r, rec)
}

// endsBy is when x ends unless it is used again.
func endsBy(x sessions.Session, idle time.Duration) time.Time {
	if t := x.IdleUntil(idle); t.Before(x.Expires) {
		return t
	}
	return x.Expires
}

// tenantOf is " of tenant", or nothing for platform users.
func tenantOf(tenant string) string {
	if tenant == "" {
		return ""
	}
	return " of " + tenant
}
