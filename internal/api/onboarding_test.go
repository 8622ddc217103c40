package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/mail/mailtest"
	"github.com/wardvpn/ward/internal/public"
	"github.com/wardvpn/ward/internal/store"
)

func TestStartEnrollmentAPI(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		sink := mailtest.NewSink(t)
		f.createUser("member")
		member := f.login("member", userPassword)
		var pending struct {
			ID string `json:"id"`
		}
		f.admin.mustDo(http.StatusCreated, "POST", v1+"/users", map[string]any{"username": "newbie", "email": "newbie@example.com", "active": false}).decode(t, &pending)
		path := v1 + "/users/" + pending.ID + "/enrollment"

		expectError(t, member.do("POST", path, map[string]any{}), http.StatusForbidden, "forbidden", "")
		expectError(t, f.admin.do("POST", v1+"/users/nope/enrollment", map[string]any{}), http.StatusNotFound, "not_found", "")
		expectError(t, f.admin.do("POST", path, map[string]any{"kind": "vip"}), http.StatusBadRequest, "invalid_kind", "kind")
		expectError(t, f.admin.do("POST", path, map[string]any{"send_email": "yes"}), http.StatusBadRequest, "invalid_json", "send_email")
		expectError(t, f.admin.do("POST", path, nil), http.StatusUnsupportedMediaType, "unsupported_media_type", "")
		expectError(t, f.admin.do("POST", path, ""), http.StatusBadRequest, "invalid_json", "")
		expectError(t, f.admin.do("POST", v1+"/users/"+f.userID("member")+"/enrollment", map[string]any{}), http.StatusConflict, "already_enrolled", "kind")

		// Without SMTP: the link, and why no mail went out.
		var st enroll.Started
		f.admin.mustDo(http.StatusCreated, "POST", path, map[string]any{}).decode(t, &st)
		if st.Kind != "enrollment" || st.Token == "" || st.URL != "/enroll/"+st.Token || st.EmailSent || !strings.Contains(st.EmailError, "SMTP") {
			t.Fatalf("started = %+v", st)
		}

		// With SMTP and the proxy URL: mailed.
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"smtp_host": "127.0.0.1", "smtp_port": sink.Port, "smtp_tls": "none",
			"smtp_from": "ward@example.com", "proxy_public_url": "https://vpn.example.com"})
		f.admin.mustDo(http.StatusCreated, "POST", path, map[string]any{"send_email": true}).decode(t, &st)
		if !st.EmailSent || st.URL != "https://vpn.example.com/enroll/"+st.Token {
			t.Fatalf("started = %+v", st)
		}
		msgs := sink.Messages()
		if len(msgs) != 1 || msgs[0].To[0] != "newbie@example.com" || !strings.Contains(msgs[0].Data, st.Token) {
			t.Fatalf("mails: %+v", msgs)
		}
		var quiet enroll.Started
		f.admin.mustDo(http.StatusCreated, "POST", path, map[string]any{"send_email": false}).decode(t, &quiet)
		if quiet.EmailSent || quiet.EmailError != "" || len(sink.Messages()) != 1 {
			t.Fatalf("send_email=false: %+v", quiet)
		}

		// The newest link works on the public side (another service on the
		// same database, as on another replica); the earlier one does not.
		pub := httptest.NewServer(public.New(enroll.New(db, f.inst, f.vpn, mfa.New(db, f.inst, nil), enroll.Options{PasswordParams: cheapArgon}), public.Options{}))
		defer pub.Close()
		anon := newClient(t, pub.URL)
		expectError(t, anon.do("GET", public.Prefix+"/enrollment/"+st.Token, nil), http.StatusNotFound, "token_used", "")
		anon.mustDo(http.StatusOK, "GET", public.Prefix+"/enrollment/"+quiet.Token, nil)
		anon.mustDo(http.StatusNoContent, "POST", public.Prefix+"/enrollment/"+quiet.Token+"/password", map[string]any{"password": "Newbie-password-1"})
		anon.mustDo(http.StatusOK, "POST", public.Prefix+"/enrollment/"+quiet.Token+"/complete", nil)
		f.login("newbie", "Newbie-password-1")

		// A new-client link for the now active user.
		var nc enroll.Started
		f.admin.mustDo(http.StatusCreated, "POST", path, map[string]any{"kind": "new_client", "send_email": false}).decode(t, &nc)
		if nc.Kind != "new_client" {
			t.Fatalf("new client: %+v", nc)
		}
		var audit struct {
			Total int `json:"total"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/audit?action=enrollment.start&target_id="+pending.ID, nil).decode(t, &audit)
		if audit.Total != 4 {
			t.Fatalf("enrollment.start audited %d times, want 4", audit.Total)
		}
	})
}

// userID looks a user up by name.
func (f *fixture) userID(username string) string {
	f.t.Helper()
	var id string
	if err := f.db.QueryRowContext(f.ctx, `SELECT id FROM users WHERE username = $1`, username).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func TestMyTOTPAPI(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.createUser("tina")
		tina := f.login("tina", userPassword)

		var me struct {
			TOTPEnabled       bool `json:"totp_enabled"`
			RecoveryCodesLeft int  `json:"recovery_codes_left"`
		}
		tina.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		if me.TOTPEnabled {
			t.Fatal("TOTP enabled from the start")
		}
		expectError(t, tina.do("POST", v1+"/me/totp", nil, noHeader("X-CSRF-Token")), http.StatusForbidden, "csrf_failed", "")
		expectError(t, tina.do("POST", v1+"/me/totp/confirm", map[string]any{"code": "123456"}), http.StatusConflict, "totp_not_set_up", "")
		expectError(t, tina.do("DELETE", v1+"/me/totp", map[string]any{"code": "123456"}), http.StatusConflict, "totp_not_enabled", "")
		expectError(t, tina.do("POST", v1+"/me/recovery-codes", map[string]any{"code": "123456"}), http.StatusConflict, "totp_not_enabled", "")

		var setup mfa.Setup
		tina.mustDo(http.StatusOK, "POST", v1+"/me/totp", nil).decode(t, &setup)
		if setup.Secret == "" || !strings.Contains(setup.URL, "tina") || setup.QRPNG == "" {
			t.Fatalf("setup = %+v", setup)
		}
		expectError(t, tina.do("POST", v1+"/me/totp/confirm", map[string]any{"code": "000000"}), http.StatusBadRequest, "invalid_code", "code")
		expectError(t, tina.do("POST", v1+"/me/totp/confirm", map[string]any{"code": "1", "x": 1}), http.StatusBadRequest, "unknown_field", "x")
		code, _ := mfa.GenerateCode(setup.Secret, time.Now())
		var rc mfa.RecoveryCodes
		tina.mustDo(http.StatusOK, "POST", v1+"/me/totp/confirm", map[string]any{"code": code}).decode(t, &rc)
		if len(rc.Codes) != 10 {
			t.Fatalf("codes = %v", rc)
		}
		tina.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		if !me.TOTPEnabled || me.RecoveryCodesLeft != 10 {
			t.Fatalf("me = %+v", me)
		}
		expectError(t, tina.do("POST", v1+"/me/totp", nil), http.StatusConflict, "totp_enabled", "")
		// Replacing the recovery codes and disabling need proof.
		expectError(t, tina.do("POST", v1+"/me/recovery-codes", map[string]any{"code": code}), http.StatusBadRequest, "code_used", "code")
		expectError(t, tina.do("DELETE", v1+"/me/totp", map[string]any{"code": "zzzzz-zzzzz"}), http.StatusBadRequest, "invalid_code", "code")
		var fresh mfa.RecoveryCodes
		tina.mustDo(http.StatusOK, "POST", v1+"/me/recovery-codes", map[string]any{"code": rc.Codes[0]}).decode(t, &fresh)
		expectError(t, tina.do("DELETE", v1+"/me/totp", map[string]any{"code": rc.Codes[1]}), http.StatusBadRequest, "invalid_code", "code")

		// Admin reset, for a user who lost the phone.
		expectError(t, tina.do("DELETE", v1+"/users/"+u.ID+"/totp", nil), http.StatusForbidden, "forbidden", "")
		f.admin.mustDo(http.StatusNoContent, "DELETE", v1+"/users/"+u.ID+"/totp", nil)
		expectError(t, f.admin.do("DELETE", v1+"/users/"+u.ID+"/totp", nil), http.StatusNotFound, "not_found", "")
		tina.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		if me.TOTPEnabled || me.RecoveryCodesLeft != 0 {
			t.Fatalf("after reset: %+v", me)
		}
		// Set up again and disable with a recovery code.
		tina.mustDo(http.StatusOK, "POST", v1+"/me/totp", nil).decode(t, &setup)
		code, _ = mfa.GenerateCode(setup.Secret, time.Now())
		tina.mustDo(http.StatusOK, "POST", v1+"/me/totp/confirm", map[string]any{"code": code}).decode(t, &rc)
		tina.mustDo(http.StatusNoContent, "DELETE", v1+"/me/totp", map[string]any{"code": rc.Codes[9]})
		// Lockout after too many wrong codes: 429 with Retry-After.
		tina.mustDo(http.StatusOK, "POST", v1+"/me/totp", nil)
		var last *response
		for range 5 {
			last = tina.do("POST", v1+"/me/totp/confirm", map[string]any{"code": "000000"})
		}
		expectError(t, last, http.StatusTooManyRequests, "mfa_locked", "")
		if last.Header.Get("Retry-After") == "" {
			t.Error("no Retry-After on a lockout")
		}
	})
}

func TestSettingsMailAPI(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.createUser("ulf")
		ulf := f.login("ulf", userPassword)
		sink := mailtest.NewSink(t)
		const secret = "Smtp-Secret-7"
		r := f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"smtp_host": "127.0.0.1", "smtp_port": sink.Port,
			"smtp_tls": "none", "smtp_from": "ward <ward@example.com>", "smtp_username": "ward", "smtp_password": secret})
		get := f.admin.mustDo(http.StatusOK, "GET", v1+"/settings", nil)
		for _, body := range [][]byte{r.Body, get.Body} {
			if strings.Contains(string(body), secret) || strings.Contains(string(body), `"smtp_password"`) || !strings.Contains(string(body), `"smtp_password_set":true`) {
				t.Fatalf("settings body: %s", body)
			}
		}
		audit := f.admin.mustDo(http.StatusOK, "GET", v1+"/audit?action=settings.update", nil)
		if strings.Contains(string(audit.Body), secret) {
			t.Fatal("the SMTP password is in the audit log")
		}
		expectError(t, f.admin.do("PATCH", v1+"/settings", map[string]any{"smtp_tls": "ssl"}), http.StatusBadRequest, "invalid_value", "smtp_tls")

		expectError(t, ulf.do("POST", v1+"/settings/test-mail", map[string]any{"to": "ops@example.com"}), http.StatusForbidden, "forbidden", "")
		expectError(t, f.admin.do("POST", v1+"/settings/test-mail", map[string]any{"to": "nope"}), http.StatusBadRequest, "invalid_email", "to")
		f.admin.mustDo(http.StatusNoContent, "POST", v1+"/settings/test-mail", map[string]any{"to": "ops@example.com"})
		if msgs := sink.Messages(); len(msgs) != 1 || msgs[0].To[0] != "ops@example.com" {
			t.Fatalf("sink: %+v", msgs)
		}
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"smtp_port": 1})
		expectError(t, f.admin.do("POST", v1+"/settings/test-mail", map[string]any{"to": "ops@example.com"}), http.StatusServiceUnavailable, "smtp_failed", "")
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"smtp_host": ""})
		expectError(t, f.admin.do("POST", v1+"/settings/test-mail", map[string]any{"to": "ops@example.com"}), http.StatusConflict, "smtp_not_configured", "")
	})
}
