package ui

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantscope/tenantscope/config"
	"github.com/tenantscope/tenantscope/identity"
	"github.com/tenantscope/tenantscope/retention"
)

// RetentionView is the retention page's data.
type RetentionView struct {
	Tenant    string
	Manage    bool
	Policies  []retention.Policy
	Bounds    map[string][2]int
	Holds     []retention.Hold
	Erasures  []retention.Erasure
	Runs      []retention.Receipt
	NextPurge string
	Residency retention.Residency
	// Moves are the tenant's region moves, newest first; Targets the
	// regions it may move to.
	Moves   []retention.Move
	Targets []string
	// Refresh reloads the page every this many seconds while a move runs.
	Refresh int
	Message string
	Failed  bool
}

func (u *UI) retentionView(r *http.Request, s *Session, tenant string) (RetentionView, error) {
	v := RetentionView{Tenant: tenant, Manage: can(s, identity.ManageRetention, tenant), Bounds: map[string][2]int{}}
	ctx := r.Context()
	pols, err := u.Retention.Policies(ctx, tenant)
	if err != nil {
		return v, err
	}
	for _, sig := range config.Signals {
		v.Policies = append(v.Policies, pols[sig])
		v.Bounds[sig] = [2]int{u.retentionCfg.Minimum[sig], u.retentionCfg.Maximum[sig]}
	}
	if v.Runs, err = u.Retention.PurgeRuns(ctx, tenant, 10); err != nil {
		return v, err
	}
	v.NextPurge = "at the next scheduled run"
	if len(v.Runs) > 0 {
		v.NextPurge = u.Retention.NextPurge(v.Runs[0].Finished).UTC().Format("2006-01-02 15:04 MST")
	}
	if v.Residency, err = u.Retention.Residency(ctx, tenant); err != nil {
		return v, err
	}
	if v.Moves, err = u.Retention.Moves(ctx, tenant); err != nil {
		return v, err
	}
	for _, r := range u.regions {
		if r != v.Residency.Pinned {
			v.Targets = append(v.Targets, r)
		}
	}
	if len(v.Moves) > 0 && (v.Moves[0].State == retention.MoveCopying || v.Moves[0].State == retention.MoveDeleting) {
		v.Refresh = 3
	}
	if v.Manage {
		if v.Holds, err = u.Retention.Holds(ctx, tenant); err != nil {
			return v, err
		}
		if v.Erasures, err = u.Retention.Erasures(ctx, tenant); err != nil {
			return v, err
		}
	}
	return v, nil
}

func (u *UI) retentionPage(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, _, ok := u.allow(w, r, s, identity.ReadRetention, "see retention")
	if !ok {
		return
	}
	if tenant == config.PlatformTenant {
		u.render(w, r, http.StatusOK, platformRetentionPage(s, tenant, u.regions[0], platformAuditDays))
		return
	}
	if !u.needRetention(w, r, s) {
		return
	}
	u.renderRetention(w, r, s, tenant, http.StatusOK, "", nil)
}

// platformAuditDays is the retention the audit writer gives the platform
// chain's records (fixed; the chain has no policy).
const platformAuditDays = 2555

// notForPlatform refuses retention changes of the platform chain.
func (u *UI) notForPlatform(w http.ResponseWriter, r *http.Request, s *Session, tenant string) bool {
	if tenant != config.PlatformTenant {
		return true
	}
	u.render(w, r, http.StatusNotFound, errorPage(s, http.StatusNotFound, "The platform chain has no retention policy, holds or erasures of its own."))
	return false
}

func (u *UI) needRetention(w http.ResponseWriter, r *http.Request, s *Session) bool {
	if u.Retention == nil {
		u.render(w, r, http.StatusServiceUnavailable, errorPage(s, http.StatusServiceUnavailable, "The retention engine is not running in this process."))
		return false
	}
	return true
}

// renderRetention shows the page with the outcome of an action.
func (u *UI) renderRetention(w http.ResponseWriter, r *http.Request, s *Session, tenant string, status int, msg string, actionErr error) {
	v, err := u.retentionView(r, s, tenant)
	if err != nil {
		u.log.Error().Err(err).Str("tenant_id", tenant).Msg("retention page")
		u.render(w, r, http.StatusInternalServerError, errorPage(s, http.StatusInternalServerError, "The retention state could not be read."))
		return
	}
	v.Message = msg
	if actionErr != nil {
		v.Message, v.Failed = actionErr.Error(), true
		switch {
		case errors.Is(actionErr, retention.ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(actionErr, retention.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(actionErr, retention.ErrConflict):
			status = http.StatusConflict
		default:
			u.log.Error().Err(actionErr).Str("tenant_id", tenant).Msg("retention action")
			status, v.Message = http.StatusInternalServerError, "The action failed; see the logs."
		}
	}
	u.render(w, r, status, retentionPage(s, v))
}

// manage checks a compliance form post (role, tenant, CSRF).
func (u *UI) manage(w http.ResponseWriter, r *http.Request, s *Session) (string, bool) {
	tenant, _, ok := u.allow(w, r, s, identity.ManageRetention, "change retention, holds or erasures")
	if !ok || !u.needRetention(w, r, s) || !u.checkCSRF(w, r, s) || !u.notForPlatform(w, r, s, tenant) {
		return "", false
	}
	return tenant, true
}

func (u *UI) setPolicy(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	days, err := strconv.Atoi(r.PostFormValue("days"))
	if err != nil {
		u.renderRetention(w, r, s, tenant, 0, "", errors.Join(retention.ErrInvalid, errors.New("days must be a whole number")))
		return
	}
	p, err := u.Retention.SetPolicy(r.Context(), tenant, r.PostFormValue("signal"), days, s.actor(r), r.PostFormValue("reason"))
	u.renderRetention(w, r, s, tenant, http.StatusOK, "Policy for "+p.Signal+" is now "+strconv.Itoa(p.Days)+" days (version "+strconv.Itoa(int(p.Version))+"), applied to stored data.", err)
}

func parseDay(v string) *time.Time {
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return nil
	}
	return &t
}

func (u *UI) placeHold(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	h, err := u.Retention.PlaceHold(r.Context(), tenant, r.PostFormValue("kind"), r.PostFormValue("subject"),
		parseDay(r.PostFormValue("from")), parseDay(r.PostFormValue("to")), r.PostFormValue("reason"), s.actor(r))
	u.renderRetention(w, r, s, tenant, http.StatusCreated, "Hold "+h.ID+" placed.", err)
}

func (u *UI) liftHold(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	h, err := u.Retention.LiftHold(r.Context(), tenant, r.PathValue("holdId"), r.PostFormValue("reason"), s.actor(r))
	u.renderRetention(w, r, s, tenant, http.StatusOK, "Hold "+h.ID+" lifted.", err)
}

func (u *UI) erase(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	e, err := u.Retention.Erase(r.Context(), tenant, r.PostFormValue("subject"), r.PostFormValue("dry_run") != "", s.User)
	status, msg := http.StatusOK, "Erasure "+e.ID+": "+e.Status+"."
	if err == nil && e.Status == "blocked_by_hold" {
		status, msg = http.StatusConflict, "Erasure "+e.ID+" is blocked: "+e.Detail
	}
	u.renderRetention(w, r, s, tenant, status, msg, err)
}

func (u *UI) purgeNow(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	_, err := u.Retention.Purge(r.Context(), tenant, "on demand", s.actor(r))
	u.renderRetention(w, r, s, tenant, http.StatusOK, "Purge run done; its receipt is below and in the audit trail.", err)
}

// moveTenant starts a region move; the page shows its state as it goes.
func (u *UI) moveTenant(w http.ResponseWriter, r *http.Request, s *Session) {
	tenant, ok := u.manage(w, r, s)
	if !ok {
		return
	}
	m, err := u.Retention.StartMove(r.Context(), tenant, r.PostFormValue("region"), s.actor(r), r.PostFormValue("reason"))
	u.renderRetention(w, r, s, tenant, http.StatusAccepted, "Move "+m.ID+" to "+m.To+" started: the tenant is paused while its data is copied and verified. Reload to follow it.", err)
}

func holdRange(h retention.Hold) string {
	if h.From == nil || h.To == nil {
		return ""
	}
	return h.From.UTC().Format(time.DateOnly) + " .. " + h.To.UTC().Format(time.DateOnly)
}

func erasureClass(status string) string {
	if status == "blocked_by_hold" || status == "failed" {
		return "failure"
	}
	return ""
}

// countsText writes counts as "events 3, logs 2" in a fixed order.
func countsText(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + " " + strconv.FormatUint(m[k], 10))
	}
	return b.String()
}

// movedText summarises a move's verified tables: how many, and the rows of
// those that had any.
func movedText(ts []retention.MovedTable) string {
	if len(ts) == 0 {
		return ""
	}
	rows := map[string]uint64{}
	for _, t := range ts {
		if t.Rows > 0 {
			rows[t.Table] = t.Rows
		}
	}
	return strconv.Itoa(len(ts)) + " tables: " + countsText(rows)
}
