package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
)

// auditRoutes registers the audit log page.
func (s *Server) auditRoutes() []route {
	return []route{{pattern: "GET /audit", admin: true, handle: s.audit}}
}

// auditActionPrefixes are offered as suggestions for the action filter.
var auditActionPrefixes = []string{"auth.", "user.", "group.", "token.", "mfa.", "enrollment.", "password_reset.", "device.",
	"location.", "gateway.", "proxy.", "peer.", "vpn_mfa.", "vpn_session.", "settings."}

type auditRow struct {
	core.AuditEntry
	// DetailsJSON is the details as compact JSON ("" when none).
	DetailsJSON string
}

type auditData struct {
	// Filter holds the filters as given (they stay in the URL).
	Filter   adminForm
	Rows     []auditRow
	Pager    adminPager
	Prefixes []string
	// Invalid: a filter could not be read, so nothing was listed.
	Invalid bool
}

// auditFilterNames are the query parameters of the filters.
var auditFilterNames = []string{"action", "actor", "target", "from", "to"}

// parseAuditTime reads a date (YYYY-MM-DD, UTC) or an RFC 3339 time; a date
// used as the end of a range includes that whole day.
func parseAuditTime(v string, end bool) (int64, bool) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t.UnixMilli(), true
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UnixMilli(), true
	}
	return 0, false
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	q := r.URL.Query()
	kept := url.Values{}
	for _, name := range auditFilterNames {
		if v := strings.TrimSpace(q.Get(name)); v != "" {
			kept.Set(name, v)
		}
	}
	d := auditData{Filter: adminForm(kept), Prefixes: auditActionPrefixes}
	f := core.AuditFilter{Action: kept.Get("action"), TargetID: kept.Get("target")}
	fieldErrors := map[string]string{}
	if v := kept.Get("from"); v != "" {
		ms, ok := parseAuditTime(v, false)
		if !ok {
			fieldErrors["from"] = "Must be a date (YYYY-MM-DD)."
		}
		f.From = ms
	}
	if v := kept.Get("to"); v != "" {
		ms, ok := parseAuditTime(v, true)
		if !ok {
			fieldErrors["to"] = "Must be a date (YYYY-MM-DD)."
		}
		f.To = ms
	}
	if actor := kept.Get("actor"); actor != "" {
		// A username names its user; anything else is taken as a user id
		// (entries of deleted users keep the id).
		f.ActorID = actor
		name := identity.NormalizeUsername(actor)
		users, _, err := s.o.Identity.ListUsers(ctx, c.actor(), identity.ListParams{Search: name, Limit: adminPageSize})
		if err != nil {
			return err
		}
		for _, u := range users {
			if u.Username == name {
				f.ActorID = u.ID
				break
			}
		}
	}
	p := s.page(c, "Audit log", "audit", nil)
	if len(fieldErrors) > 0 {
		d.Invalid = true
		d.Pager = adminPager{Page: 1, Pages: 1, path: "/audit", query: kept}
		p.Data = d
		p.FieldErrors = fieldErrors
		p.Error = "A filter is not valid; see the marked field."
		s.render(w, http.StatusBadRequest, "audit.html", p)
		return nil
	}
	entries, pg, err := adminList(r, "/audit", kept, func(limit, offset int) ([]core.AuditEntry, int, error) {
		f.Limit, f.Offset = limit, offset
		return core.ListAudit(ctx, s.o.DB, f)
	})
	if err != nil {
		return err
	}
	d.Pager = pg
	d.Rows = make([]auditRow, len(entries))
	for i, e := range entries {
		d.Rows[i].AuditEntry = e
		if len(e.Details) > 0 {
			if raw, err := json.Marshal(e.Details); err == nil {
				d.Rows[i].DetailsJSON = string(raw)
			}
		}
	}
	p.Data = d
	s.render(w, http.StatusOK, "audit.html", p)
	return nil
}

// ShortTarget abbreviates a long target id for the table (the link's
// title has all of it).
func (r auditRow) ShortTarget() string {
	if len(r.TargetID) > 13 {
		return r.TargetID[:8] + "…"
	}
	return r.TargetID
}

// FilterURL links to the log filtered by one more value (keeping the
// others), from the first page.
func (d auditData) FilterURL(name, value string) string {
	q := url.Values{}
	for k, v := range d.Filter {
		q[k] = v
	}
	q.Set(name, value)
	return "/audit?" + q.Encode()
}

// Filtered tells whether any filter is set.
func (d auditData) Filtered() bool { return len(d.Filter) > 0 }
