package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/mail/mailtest"
	"github.com/wardvpn/ward/internal/store"
)

// settingsForm is the settings form as the page fills it, from st.
func settingsForm(st core.Settings) url.Values { return settingsValues(st) }

func TestSettingsPageSavesAndValidates(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		b.login("admin", adminPassword)
		p := b.get("/settings", false)
		wantStatus(t, "settings", p, http.StatusOK)
		wantContains(t, "settings", p, `name="lockout_threshold" inputmode="numeric" required value="5"`, `value="43200"`, "Now: 12 h.",
			`id="users_can_manage_devices" name="users_can_manage_devices" type="checkbox" checked`, `<option value="starttls" selected>`,
			"(not set)", `for="smtp_password"`, `action="/settings/test-mail"`, `value="admin@`)
		admWantNot(t, "settings", p, "smtp_password_remove")

		def, err := core.LoadSettings(u.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		// Numbers that are not numbers: every one marked, values kept.
		form := settingsForm(def)
		form.Set("lockout_threshold", "many")
		form.Set("smtp_port", "")
		form.Set("smtp_host", "mail.example.com")
		form.Set("smtp_password", "Hunter-2-secret")
		bad := b.post("/settings", form)
		wantStatus(t, "not numbers", bad, http.StatusBadRequest)
		wantContains(t, "not numbers", bad, "2 values are not valid", `value="many"`, `value="mail.example.com"`, "Must be a whole number.")
		admWantDescribed(t, "not numbers", bad, "lockout_threshold")
		admWantDescribed(t, "not numbers", bad, "smtp_port")
		admWantNot(t, "not numbers", bad, "Hunter-2-secret")

		// The domain's range checks, at their fields.
		for _, tc := range []struct{ field, value, msg string }{
			{"session_lifetime_seconds", "10", "Must be between 300 and 7776000"},
			{"min_password_length", "4", "Must be between 8 and 128"},
			{"smtp_tls", "ssl", "Must be"},
			{"smtp_from", "not an address", "Must be an e-mail address"},
			{"proxy_public_url", "ftp://x", "Must be an http:// or https:// URL"},
			{"instance_name", "", "Must be 1 to 64 characters"},
		} {
			f := settingsForm(def)
			f.Set("lockout_threshold", "7")
			f.Set(tc.field, tc.value)
			p := b.post("/settings", f)
			wantStatus(t, tc.field, p, http.StatusBadRequest)
			wantContains(t, tc.field, p, tc.msg, `value="7"`)
			admWantDescribed(t, tc.field, p, tc.field)
		}
		if st, _ := core.LoadSettings(u.ctx, db); st.LockoutThreshold != def.LockoutThreshold {
			t.Fatalf("a refused form changed settings: %+v", st)
		}
		wantStatus(t, "save without csrf", b.post("/settings", func() url.Values { f := settingsForm(def); f.Set("csrf_token", "x"); return f }()),
			http.StatusForbidden)

		// Save everything, with an SMTP password.
		const secret = "Smtp-Secret-7"
		form = settingsForm(def)
		for k, v := range map[string]string{"instance_name": "Acme VPN", "lockout_threshold": "3", "lockout_window_seconds": "600",
			"lockout_duration_seconds": "1800", "session_lifetime_seconds": "3600", "min_password_length": "14", "smtp_host": "mail.example.com",
			"smtp_port": "465", "smtp_tls": "tls", "smtp_from": "Acme <vpn@example.com>", "smtp_username": "vpn", "smtp_password": secret,
			"proxy_public_url": "https://vpn.example.com/", "enrollment_token_lifetime_seconds": "7200"} {
			form.Set(k, v)
		}
		form.Del("users_can_manage_devices")
		admRedirect(t, "save", b.post("/settings", form), "/settings?done=saved")
		st, err := core.LoadSettings(u.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if st.InstanceName != "Acme VPN" || st.LockoutThreshold != 3 || st.LockoutWindowSeconds != 600 || st.LockoutDurationSeconds != 1800 ||
			st.SessionLifetimeSeconds != 3600 || st.MinPasswordLength != 14 || st.SMTPHost != "mail.example.com" || st.SMTPPort != 465 ||
			st.SMTPTLS != "tls" || st.SMTPFrom != "Acme <vpn@example.com>" || st.SMTPUsername != "vpn" || string(st.SMTPPassword) != secret ||
			st.ProxyPublicURL != "https://vpn.example.com" || st.EnrollmentTokenLifetimeSeconds != 7200 || st.UsersCanManageDevices {
			t.Fatalf("saved: %+v", st)
		}
		saved := b.get("/settings?done=saved", false)
		wantContains(t, "saved", saved, "Saved.", "(set)", `value="Acme VPN"`, `<option value="tls" selected>`, "Now: 2 h.", "smtp_password_remove")
		admWantNot(t, "saved", saved, secret, `id="users_can_manage_devices" name="users_can_manage_devices" type="checkbox" checked`)

		// The password is write-only: an empty field keeps it ...
		form.Set("smtp_password", "")
		form.Set("lockout_threshold", "4")
		admRedirect(t, "save without password", b.post("/settings", form), "/settings?done=saved")
		if st, _ = core.LoadSettings(u.ctx, db); string(st.SMTPPassword) != secret || st.LockoutThreshold != 4 {
			t.Fatalf("password not kept: set=%v threshold=%d", st.SMTPPasswordSet, st.LockoutThreshold)
		}
		// ... and the box removes it.
		form.Set("smtp_password_remove", "on")
		admRedirect(t, "remove password", b.post("/settings", form), "/settings?done=saved")
		if st, _ = core.LoadSettings(u.ctx, db); st.SMTPPasswordSet {
			t.Fatal("password not removed")
		}
		// The audit log says the password changed, never what to.
		entries, _, err := core.ListAudit(u.ctx, db, core.AuditFilter{Action: "settings.update", Limit: 10})
		if err != nil || len(entries) != 3 {
			t.Fatalf("audit: %d entries, %v", len(entries), err)
		}
		if raw, _ := json.Marshal(entries); strings.Contains(string(raw), secret) {
			t.Fatal("the SMTP password is in the audit log")
		}
	})
}

func TestSettingsTestMail(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		b.login("admin", adminPassword)

		notConfigured := b.post("/settings/test-mail", url.Values{"to": {"ops@example.com"}})
		wantStatus(t, "without SMTP", notConfigured, http.StatusConflict)
		wantContains(t, "without SMTP", notConfigured, "No SMTP server is configured", `value="ops@example.com"`)

		sink := mailtest.NewSink(t)
		def, _ := core.LoadSettings(u.ctx, db)
		form := settingsForm(def)
		form.Set("smtp_host", sink.Host)
		form.Set("smtp_port", strconv.Itoa(sink.Port))
		form.Set("smtp_tls", "none")
		form.Set("smtp_from", "ward@example.com")
		admRedirect(t, "save SMTP", b.post("/settings", form), "/settings?done=saved")

		bad := b.post("/settings/test-mail", url.Values{"to": {"nope"}})
		wantStatus(t, "bad address", bad, http.StatusBadRequest)
		wantContains(t, "bad address", bad, `value="nope"`, `value="`+sink.Host+`"`)
		admWantDescribed(t, "bad address", bad, "to")
		wantStatus(t, "test mail without csrf", b.post("/settings/test-mail", url.Values{"to": {"ops@example.com"}, "csrf_token": {"x"}}), http.StatusForbidden)

		ok := b.post("/settings/test-mail", url.Values{"to": {"ops@example.com"}})
		wantStatus(t, "test mail", ok, http.StatusOK)
		wantContains(t, "test mail", ok, "A test mail was handed to the SMTP server for ops@example.com.", `value="`+sink.Host+`"`)
		if msgs := sink.Messages(); len(msgs) != 1 || msgs[0].To[0] != "ops@example.com" || !strings.Contains(msgs[0].Data, "test mail") {
			t.Fatalf("sink: %+v", msgs)
		}

		// An SMTP server that does not answer: its error is shown.
		form.Set("smtp_port", "1")
		admRedirect(t, "save a dead port", b.post("/settings", form), "/settings?done=saved")
		failed := b.post("/settings/test-mail", url.Values{"to": {"ops@example.com"}})
		wantStatus(t, "SMTP failure", failed, http.StatusServiceUnavailable)
		wantContains(t, "SMTP failure", failed, "Sending the test mail failed:", `class="error" role="alert"`)
	})
}
