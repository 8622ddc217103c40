package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
)

// userRoutes registers the user administration pages.
func (s *Server) userRoutes() []route {
	return []route{
		{pattern: "GET /users", admin: true, handle: s.users},
		{pattern: "GET /users/rows", admin: true, handle: s.userRows},
		{pattern: "GET /users/new", admin: true, handle: s.newUserPage},
		{pattern: "POST /users", admin: true, handle: s.createUser},
		{pattern: "GET /users/{id}", admin: true, handle: s.userPage},
		{pattern: "POST /users/{id}", admin: true, handle: s.updateUser},
		{pattern: "POST /users/{id}/disable", admin: true, handle: s.setUserActive(false)},
		{pattern: "POST /users/{id}/enable", admin: true, handle: s.setUserActive(true)},
		{pattern: "POST /users/{id}/delete", admin: true, handle: s.deleteUser},
		{pattern: "POST /users/{id}/enrollment", admin: true, handle: s.startEnrollment},
		{pattern: "POST /users/{id}/mfa-reset", admin: true, handle: s.resetUserMFA},
	}
}

// Shared by the admin lists (users, groups, audit).

// adminPageSize is the length of every admin list page.
const adminPageSize = 50

// adminMaxPage bounds the page number so offsets never overflow.
const adminMaxPage = 1_000_000

// adminPager is one page of a list: where it is and how to reach its
// neighbours with the same filters.
type adminPager struct {
	Page, Pages, Total int
	path               string
	query              url.Values
}

// adminPageParam reads ?page= (1-based); anything unusable is page 1.
func adminPageParam(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || n < 1 {
		return 1
	}
	return min(n, adminMaxPage)
}

// adminList fetches the requested page of a list; a page past the end
// shows the last page instead (one more query, only in that case).
func adminList[T any](r *http.Request, path string, query url.Values, fetch func(limit, offset int) ([]T, int, error)) ([]T, adminPager, error) {
	page := adminPageParam(r)
	items, total, err := fetch(adminPageSize, (page-1)*adminPageSize)
	if err != nil {
		return nil, adminPager{}, err
	}
	pages := max(1, (total+adminPageSize-1)/adminPageSize)
	if page > pages {
		page = pages
		if items, total, err = fetch(adminPageSize, (page-1)*adminPageSize); err != nil {
			return nil, adminPager{}, err
		}
		pages = max(1, (total+adminPageSize-1)/adminPageSize)
	}
	return items, adminPager{Page: page, Pages: pages, Total: total, path: path, query: query}, nil
}

// pagedSlice pages a list that a service returns whole.
func pagedSlice[T any](r *http.Request, path string, query url.Values, all []T) ([]T, adminPager) {
	items, pg, _ := adminList(r, path, query, func(limit, offset int) ([]T, int, error) {
		if offset >= len(all) {
			return nil, len(all), nil
		}
		return all[offset:min(len(all), offset+limit)], len(all), nil
	})
	return items, pg
}

// First and Last number the rows shown (1-based; 0 when empty).
func (p adminPager) First() int {
	if p.Total == 0 {
		return 0
	}
	return (p.Page-1)*adminPageSize + 1
}

func (p adminPager) Last() int { return min(p.Total, p.Page*adminPageSize) }

func (p adminPager) HasPrev() bool { return p.Page > 1 }
func (p adminPager) HasNext() bool { return p.Page < p.Pages }

// URL links to page n with the list's filters.
func (p adminPager) URL(n int) string {
	q := url.Values{}
	for k, v := range p.query {
		if len(v) > 0 && v[0] != "" {
			q[k] = v
		}
	}
	if n > 1 {
		q.Set("page", strconv.Itoa(n))
	}
	if len(q) == 0 {
		return p.path
	}
	return p.path + "?" + q.Encode()
}

func (p adminPager) PrevURL() string { return p.URL(p.Page - 1) }
func (p adminPager) NextURL() string { return p.URL(p.Page + 1) }

// adminForm holds the values a form shows: the stored ones, or what was
// submitted when the submission failed. Pages with several forms use it
// instead of Page.Form, which holds only the failed form's values.
type adminForm url.Values

func (f adminForm) Get(name string) string { return url.Values(f).Get(name) }

// Checked tells whether a checkbox is on.
func (f adminForm) Checked(name string) bool {
	v := url.Values(f).Get(name)
	return v != "" && v != "false" && v != "0"
}

// adminNotices are the messages a redirect after a change can ask for
// (?done=...); fixed texts, so a link cannot put words in the page.
var adminNotices = map[string]string{
	"created":       "Created.",
	"saved":         "Saved.",
	"deleted":       "Deleted.",
	"enabled":       "The user is enabled.",
	"disabled":      "The user is disabled and was logged out everywhere.",
	"mfa_reset":     "TOTP, recovery codes and security keys were removed; the user logs in with the password alone until they set up a second factor again.",
	"member_added":  "Member added.",
	"member_remove": "Member removed.",
}

func adminNotice(r *http.Request) string { return adminNotices[r.URL.Query().Get("done")] }

// renameField moves a domain error to the field the form calls it.
func renameField(err error, from, to string) error {
	if de, ok := core.AsError(err); ok && de.Field == from {
		e := *de
		e.Field = to
		return &e
	}
	return err
}

// enrollmentQR is a PNG (base64) of the QR code of a link, with the quiet
// zone of four modules that scanners need and whole pixels per module.
func enrollmentQR(link string) (string, error) {
	code, err := qr.Encode(link, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	const quiet = 4
	modules := code.Bounds().Dx()
	px := max(1, 256/(modules+2*quiet))
	scaled, err := barcode.Scale(code, modules*px, modules*px)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	side := (modules + 2*quiet) * px
	img := image.NewGray(image.Rect(0, 0, side, side))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(quiet*px, quiet*px, side-quiet*px, side-quiet*px), scaled, image.Point{}, draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// Users list.

type userRow struct {
	identity.User
	TOTP    bool
	Devices int
}

type usersData struct {
	Search string
	Rows   []userRow
	Pager  adminPager
}

func (s *Server) usersData(r *http.Request, c *reqCtx) (usersData, error) {
	search := strings.TrimSpace(r.URL.Query().Get("search"))
	if r := []rune(search); len(r) > 200 {
		search = string(r[:200])
	}
	ctx := r.Context()
	users, pg, err := adminList(r, "/users", url.Values{"search": {search}}, func(limit, offset int) ([]identity.User, int, error) {
		return s.o.Identity.ListUsers(ctx, c.actor(), identity.ListParams{Search: search, Limit: limit, Offset: offset})
	})
	if err != nil {
		return usersData{}, err
	}
	d := usersData{Search: search, Pager: pg, Rows: make([]userRow, len(users))}
	ids := make([]string, len(users))
	for i, u := range users {
		d.Rows[i].User = u
		ids[i] = u.ID
	}
	// One query each for the whole page, never one per row.
	on, err := s.o.MFA.TOTPEnabled(ctx, ids)
	if err != nil {
		return usersData{}, err
	}
	counts, err := s.o.VPN.DeviceCounts(ctx, c.actor(), ids)
	if err != nil {
		return usersData{}, err
	}
	for i := range d.Rows {
		d.Rows[i].TOTP, d.Rows[i].Devices = on[d.Rows[i].ID], counts[d.Rows[i].ID]
	}
	return d, nil
}

func (s *Server) users(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.usersData(r, c)
	if err != nil {
		return err
	}
	p := s.page(c, "Users", "users", d)
	p.Notice = adminNotice(r)
	s.render(w, http.StatusOK, "users.html", p)
	return nil
}

// userRows is the search fragment: the table and its pager. The address
// bar follows the search (a shareable /users URL); without htmx the
// address is the full page.
func (s *Server) userRows(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if r.Header.Get("HX-Request") == "" {
		target := "/users"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		redirect(w, r, target)
		return nil
	}
	d, err := s.usersData(r, c)
	if err != nil {
		return err
	}
	w.Header().Set("HX-Replace-Url", d.Pager.URL(d.Pager.Page))
	s.render(w, http.StatusOK, "users.html#rows", s.page(c, "Users", "users", d))
	return nil
}

// Group choices (users' group membership).

// maxGroupChoices bounds the groups offered as checkboxes; a user's own
// groups are always offered, so saving never drops a membership.
const maxGroupChoices = 500

type groupChoice struct {
	Name    string
	IsAdmin bool
	Checked bool
}

type groupChoices struct {
	Items []groupChoice
	// More: there are more groups than offered.
	More bool
}

func (s *Server) groupChoices(ctx context.Context, c *reqCtx, selected []string) (groupChoices, error) {
	gs, total, err := s.o.Identity.ListGroups(ctx, c.actor(), identity.ListParams{Limit: maxGroupChoices})
	if err != nil {
		return groupChoices{}, err
	}
	sel := map[string]bool{}
	for _, n := range selected {
		sel[n] = true
	}
	out := groupChoices{More: total > len(gs)}
	seen := map[string]bool{}
	for _, g := range gs {
		out.Items = append(out.Items, groupChoice{Name: g.Name, IsAdmin: g.IsAdmin, Checked: sel[g.Name]})
		seen[g.Name] = true
	}
	for _, n := range selected {
		if !seen[n] && n != "" {
			out.Items = append(out.Items, groupChoice{Name: n, Checked: true})
			seen[n] = true
		}
	}
	return out, nil
}

// New user.

type newUserData struct {
	Values adminForm
	Groups groupChoices
	// MailReady: enrollment links can be mailed.
	MailReady bool
}

func (s *Server) newUserData(ctx context.Context, c *reqCtx, values url.Values) (newUserData, error) {
	gc, err := s.groupChoices(ctx, c, values["groups"])
	if err != nil {
		return newUserData{}, err
	}
	st, err := core.LoadSettings(ctx, s.o.DB)
	if err != nil {
		return newUserData{}, err
	}
	return newUserData{Values: adminForm(values), Groups: gc, MailReady: st.MailConfigured()}, nil
}

func (s *Server) newUserPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.newUserData(r.Context(), c, url.Values{"active": {"on"}, "start_enrollment": {"on"}})
	if err != nil {
		return err
	}
	if d.MailReady {
		d.Values["send_email"] = []string{"on"}
	}
	s.render(w, http.StatusOK, "users_new.html", s.page(c, "New user", "users", d))
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	active := f.Get("active") != ""
	in := identity.NewUser{Username: f.Get("username"), Email: f.Get("email"), FirstName: f.Get("first_name"), LastName: f.Get("last_name"),
		Phone: f.Get("phone"), Password: f.Get("password"), Active: &active, Groups: f["groups"]}
	enrollNow := f.Get("start_enrollment") != "" && in.Password == ""
	u, err := s.o.Identity.CreateUser(r.Context(), c.actor(), in)
	if err != nil {
		f.Del("password")
		d, derr := s.newUserData(r.Context(), c, f)
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "New user", "users", d), "users_new.html", err)
		return nil
	}
	if !enrollNow {
		redirect(w, r, "/users/"+u.ID+"?done=created")
		return nil
	}
	sendEmail := f.Get("send_email") != ""
	started, err := s.o.Enroll.Start(r.Context(), c.actor(), u.ID, enroll.StartInput{Kind: enroll.KindEnrollment, SendEmail: &sendEmail})
	d, derr := s.userData(r.Context(), c, u.ID)
	if derr != nil {
		return derr
	}
	p := s.userPageOf(c, d)
	if err != nil {
		p.Notice = "The user was created."
		s.formError(w, r, p, "users_detail.html", err)
		return nil
	}
	if err := s.showEnrollment(&d, started); err != nil {
		return err
	}
	p.Data = d
	p.Notice = "The user was created."
	s.render(w, http.StatusOK, "users_detail.html", p)
	return nil
}

// One user.

// shownEnrollment is a new enrollment link, shown in the answer that made
// it and never again.
type shownEnrollment struct {
	enroll.Started
	// QR is a PNG (base64) of the link; empty when the link is relative
	// (no proxy_public_url), which a phone could not open.
	QR string
}

type userData struct {
	User   identity.User
	Values adminForm
	Groups groupChoices
	MFA    mfa.Status
	// HasKeys: the user has security keys (WebAuthn).
	HasKeys bool
	// Devices are the user's first devices; DeviceTotal counts all.
	Devices     []vpn.Device
	DeviceTotal int
	Enrollment  *shownEnrollment
	// EnrollKind is the kind the enrollment form offers first.
	EnrollKind string
	// CanNewClient: a new-client link would be accepted.
	CanNewClient bool
	MailReady    bool
	// Self: the admin looks at their own account.
	Self bool
}

// userDevicesShown bounds the devices listed on a user's page.
const userDevicesShown = 20

func userValues(u identity.User) url.Values {
	v := url.Values{"email": {u.Email}, "first_name": {u.FirstName}, "last_name": {u.LastName}, "phone": {u.Phone}, "groups": u.Groups}
	if u.Active {
		v.Set("active", "on")
	}
	return v
}

func (s *Server) userData(ctx context.Context, c *reqCtx, id string) (userData, error) {
	u, err := s.o.Identity.GetUser(ctx, c.actor(), id)
	if err != nil {
		return userData{}, err
	}
	d := userData{User: u, Values: adminForm(userValues(u)), Self: u.ID == c.principal.UserID}
	if d.Groups, err = s.groupChoices(ctx, c, u.Groups); err != nil {
		return userData{}, err
	}
	if d.MFA, err = s.o.MFA.Status(ctx, u.ID); err != nil {
		return userData{}, err
	}
	if s.o.WebAuthn != nil {
		if d.HasKeys, err = s.o.WebAuthn.HasCredentials(ctx, u.ID); err != nil {
			return userData{}, err
		}
	}
	if d.Devices, d.DeviceTotal, err = s.o.VPN.ListDevices(ctx, c.actor(), vpn.DeviceFilter{UserID: u.ID, ListParams: vpn.ListParams{Limit: userDevicesShown}}); err != nil {
		return userData{}, err
	}
	st, err := core.LoadSettings(ctx, s.o.DB)
	if err != nil {
		return userData{}, err
	}
	d.MailReady = st.MailConfigured()
	d.CanNewClient = u.Active && st.UsersCanManageDevices
	d.EnrollKind = enroll.KindEnrollment
	if u.HasPassword {
		d.EnrollKind = enroll.KindNewClient
	}
	return d, nil
}

func (s *Server) userPageOf(c *reqCtx, d userData) *Page {
	return s.page(c, "User "+d.User.Username, "users", d)
}

func (s *Server) userPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.userData(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	p := s.userPageOf(c, d)
	p.Notice = adminNotice(r)
	s.render(w, http.StatusOK, "users_detail.html", p)
	return nil
}

// userFormError shows a failed action on the user's page.
func (s *Server) userFormError(w http.ResponseWriter, r *http.Request, c *reqCtx, err error, edit func(*userData)) error {
	d, derr := s.userData(r.Context(), c, r.PathValue("id"))
	if derr != nil {
		return derr
	}
	if edit != nil {
		edit(&d)
	}
	s.formError(w, r, s.userPageOf(c, d), "users_detail.html", err)
	return nil
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	f := r.PostForm
	str := func(name string) *string { v := f.Get(name); return &v }
	active := f.Get("active") != ""
	groups := f["groups"]
	if groups == nil {
		groups = []string{}
	}
	patch := identity.UserPatch{Email: str("email"), FirstName: str("first_name"), LastName: str("last_name"), Phone: str("phone"),
		Active: &active, Groups: &groups}
	if pw := f.Get("password"); pw != "" {
		patch.Password = &pw
	}
	if _, err := s.o.Identity.UpdateUser(r.Context(), c.actor(), id, patch); err != nil {
		f.Del("password")
		return s.userFormError(w, r, c, err, func(d *userData) {
			d.Values = adminForm(f)
			if gc, gerr := s.groupChoices(r.Context(), c, groups); gerr == nil {
				d.Groups = gc
			}
		})
	}
	redirect(w, r, "/users/"+id+"?done=saved")
	return nil
}

func (s *Server) setUserActive(active bool) func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
		id := r.PathValue("id")
		if _, err := s.o.Identity.UpdateUser(r.Context(), c.actor(), id, identity.UserPatch{Active: &active}); err != nil {
			return s.userFormError(w, r, c, err, nil)
		}
		if !active && id == c.principal.UserID {
			// Disabling oneself ends one's own sessions too.
			redirect(w, r, "/login")
			return nil
		}
		done := "enabled"
		if !active {
			done = "disabled"
		}
		redirect(w, r, "/users/"+id+"?done="+done)
		return nil
	}
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := s.o.Identity.DeleteUser(r.Context(), c.actor(), id); err != nil {
		return s.userFormError(w, r, c, err, nil)
	}
	if id == c.principal.UserID {
		redirect(w, r, "/login")
		return nil
	}
	redirect(w, r, "/users?done=deleted")
	return nil
}

func (s *Server) showEnrollment(d *userData, st enroll.Started) error {
	shown := &shownEnrollment{Started: st}
	if u, err := url.Parse(st.URL); err == nil && u.IsAbs() {
		qrPNG, err := enrollmentQR(st.URL)
		if err != nil {
			return err
		}
		shown.QR = qrPNG
	}
	d.Enrollment = shown
	d.EnrollKind = st.Kind
	return nil
}

// startEnrollment issues an enrollment or new-client link and shows it,
// with its QR code, in this answer only.
func (s *Server) startEnrollment(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	kind := r.PostFormValue("kind")
	sendEmail := r.PostFormValue("send_email") != ""
	st, err := s.o.Enroll.Start(r.Context(), c.actor(), id, enroll.StartInput{Kind: kind, SendEmail: &sendEmail})
	if err != nil {
		return s.userFormError(w, r, c, err, func(d *userData) {
			if kind != "" {
				d.EnrollKind = kind
			}
		})
	}
	d, err := s.userData(r.Context(), c, id)
	if err != nil {
		return err
	}
	if err := s.showEnrollment(&d, st); err != nil {
		return err
	}
	s.render(w, http.StatusOK, "users_detail.html", s.userPageOf(c, d))
	return nil
}

// resetUserMFA removes every second factor of a user: TOTP with its
// recovery codes, and security keys.
func (s *Server) resetUserMFA(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	totpErr := s.o.MFA.Reset(r.Context(), c.actor(), id)
	keys := 0
	if s.o.WebAuthn != nil {
		var err error
		if keys, err = s.o.WebAuthn.Reset(r.Context(), c.actor(), id); err != nil {
			return s.userFormError(w, r, c, err, nil)
		}
	}
	if totpErr != nil && !(errors.Is(totpErr, core.ErrNotFound) && keys > 0) {
		return s.userFormError(w, r, c, totpErr, nil)
	}
	redirect(w, r, "/users/"+id+"?done=mfa_reset")
	return nil
}
