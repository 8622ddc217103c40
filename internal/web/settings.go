package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/wardvpn/ward/internal/core"
)

// settingsRoutes registers the instance settings page.
func (s *Server) settingsRoutes() []route {
	return []route{
		{pattern: "GET /settings", admin: true, handle: s.settingsPage},
		{pattern: "POST /settings", admin: true, handle: s.updateSettings},
		{pattern: "POST /settings/test-mail", admin: true, handle: s.testMail},
	}
}

// settingsInts are the whole-number settings, by their API names.
var settingsInts = []string{"lockout_threshold", "lockout_window_seconds", "lockout_duration_seconds", "session_lifetime_seconds",
	"min_password_length", "smtp_port", "enrollment_token_lifetime_seconds"}

type settingsData struct {
	Settings core.Settings
	// Values fill the settings form.
	Values adminForm
	// To fills the test-mail form.
	To string
	// TLSModes are the choices for smtp_tls.
	TLSModes []string
	// page is the page showing the data, for the field errors.
	page *Page
}

// numberField is one whole-number input of the settings form.
type numberField struct {
	Name, Label, Hint, Value, Error, Human string
}

// Number describes the whole-number setting name for the form.
func (d *settingsData) Number(name, label, hint string) numberField {
	f := numberField{Name: name, Label: label, Hint: hint, Value: d.Values.Get(name)}
	if strings.HasSuffix(name, "_seconds") {
		f.Human = humanSeconds(f.Value)
	}
	if d.page != nil {
		f.Error = d.page.FieldError(name)
	}
	return f
}

// humanSeconds describes a number of seconds for people ("12 h 30 min").
func humanSeconds(seconds string) string {
	n, err := strconv.Atoi(strings.TrimSpace(seconds))
	if err != nil || n <= 0 {
		return ""
	}
	var parts []string
	for _, u := range []struct {
		secs int
		name string
	}{{86400, "d"}, {3600, "h"}, {60, "min"}, {1, "s"}} {
		if n >= u.secs {
			parts = append(parts, fmt.Sprintf("%d %s", n/u.secs, u.name))
			n %= u.secs
		}
	}
	return strings.Join(parts, " ")
}

func settingsValues(st core.Settings) url.Values {
	v := url.Values{
		"instance_name": {st.InstanceName}, "smtp_host": {st.SMTPHost}, "smtp_username": {st.SMTPUsername}, "smtp_from": {st.SMTPFrom},
		"smtp_tls": {st.SMTPTLS}, "proxy_public_url": {st.ProxyPublicURL},
	}
	for name, n := range map[string]int{"lockout_threshold": st.LockoutThreshold, "lockout_window_seconds": st.LockoutWindowSeconds,
		"lockout_duration_seconds": st.LockoutDurationSeconds, "session_lifetime_seconds": st.SessionLifetimeSeconds,
		"min_password_length": st.MinPasswordLength, "smtp_port": st.SMTPPort,
		"enrollment_token_lifetime_seconds": st.EnrollmentTokenLifetimeSeconds} {
		v.Set(name, strconv.Itoa(n))
	}
	if st.UsersCanManageDevices {
		v.Set("users_can_manage_devices", "on")
	}
	return v
}

func (s *Server) settingsData(r *http.Request, c *reqCtx) (settingsData, error) {
	st, err := core.LoadSettings(r.Context(), s.o.DB)
	if err != nil {
		return settingsData{}, err
	}
	d := settingsData{Settings: st, Values: adminForm(settingsValues(st)), TLSModes: []string{core.SMTPTLSStartTLS, core.SMTPTLSImplicit, core.SMTPTLSNone}}
	// The test mail goes to the admin by default.
	if u, err := s.o.Identity.GetUser(r.Context(), c.actor(), c.principal.UserID); err == nil {
		d.To = u.Email
	}
	return d, nil
}

func (s *Server) settingsPageOf(c *reqCtx, d settingsData) *Page {
	p := s.page(c, "Settings", "settings", &d)
	d.page = p
	return p
}

func (s *Server) settingsPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.settingsData(r, c)
	if err != nil {
		return err
	}
	p := s.settingsPageOf(c, d)
	p.Notice = adminNotice(r)
	s.render(w, http.StatusOK, "settings.html", p)
	return nil
}

// settingsPatch reads the form into a patch of every setting; numbers that
// are not numbers are reported per field.
func settingsPatch(f url.Values) (core.SettingsPatch, map[string]string) {
	str := func(name string) *string { v := strings.TrimSpace(f.Get(name)); return &v }
	p := core.SettingsPatch{InstanceName: str("instance_name"), SMTPHost: str("smtp_host"), SMTPUsername: str("smtp_username"),
		SMTPFrom: str("smtp_from"), SMTPTLS: str("smtp_tls"), ProxyPublicURL: str("proxy_public_url")}
	manage := f.Get("users_can_manage_devices") != ""
	p.UsersCanManageDevices = &manage
	ints := map[string]**int{"lockout_threshold": &p.LockoutThreshold, "lockout_window_seconds": &p.LockoutWindowSeconds,
		"lockout_duration_seconds": &p.LockoutDurationSeconds, "session_lifetime_seconds": &p.SessionLifetimeSeconds,
		"min_password_length": &p.MinPasswordLength, "smtp_port": &p.SMTPPort,
		"enrollment_token_lifetime_seconds": &p.EnrollmentTokenLifetimeSeconds}
	bad := map[string]string{}
	for _, name := range settingsInts {
		n, err := strconv.Atoi(strings.TrimSpace(f.Get(name)))
		if err != nil {
			bad[name] = "Must be a whole number."
			continue
		}
		*ints[name] = &n
	}
	// The SMTP password is write-only: empty keeps the stored one.
	if f.Get("smtp_password_remove") != "" {
		empty := ""
		p.SMTPPassword = &empty
	} else if pw := f.Get("smtp_password"); pw != "" {
		p.SMTPPassword = &pw
	}
	return p, bad
}

func (s *Server) updateSettings(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	patch, bad := settingsPatch(f)
	var err error
	if len(bad) == 0 {
		if _, err = core.UpdateSettings(r.Context(), s.o.DB, c.actor(), patch); err == nil {
			redirect(w, r, "/settings?done=saved")
			return nil
		}
	}
	d, derr := s.settingsData(r, c)
	if derr != nil {
		return derr
	}
	f.Del("smtp_password")
	d.Values = adminForm(f)
	p := s.settingsPageOf(c, d)
	if len(bad) > 0 {
		p.FieldErrors = bad
		p.Error = fmt.Sprintf("%d values are not valid; see the marked fields.", len(bad))
		if len(bad) == 1 {
			p.Error = "A value is not valid; see the marked field."
		}
		p.Form = f
		s.render(w, http.StatusBadRequest, "settings.html", p)
		return nil
	}
	s.formError(w, r, p, "settings.html", err)
	return nil
}

// testMail sends a test mail with the saved SMTP settings and shows the
// outcome (the SMTP server's error when it fails) on the settings page.
func (s *Server) testMail(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	to := strings.TrimSpace(r.PostFormValue("to"))
	var err error = &core.Error{Kind: core.KindUnavailable, Code: "mail_unavailable", Message: "mail is not available in this core"}
	if s.o.Mail != nil {
		err = s.o.Mail.SendTest(r.Context(), c.actor(), to)
	}
	d, derr := s.settingsData(r, c)
	if derr != nil {
		return derr
	}
	d.To = to
	p := s.settingsPageOf(c, d)
	if err != nil {
		s.formError(w, r, p, "settings.html", err)
		return nil
	}
	p.Notice = "A test mail was handed to the SMTP server for " + to + "."
	s.render(w, http.StatusOK, "settings.html", p)
	return nil
}
