package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/store"
)

func TestAccountPasswordAndTokens(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		other := u.browser()
		other.login("admin", adminPassword)
		b := u.browser()
		b.login("admin", adminPassword)
		acc := b.get("/account", false)
		wantStatus(t, "account", acc, http.StatusOK)
		wantContains(t, "account", acc, "Change password", "Set up an authenticator app", "Create token", "/account/security-keys")

		for _, tc := range []struct {
			name   string
			form   url.Values
			status int
			want   string
		}{
			{"wrong current password", url.Values{"current_password": {"nope"}, "new_password": {"New-Password-12"}, "confirm_password": {"New-Password-12"}},
				http.StatusBadRequest, `id="current_password-error" class="field-error">The current password is wrong`},
			{"weak new password", url.Values{"current_password": {adminPassword}, "new_password": {"short"}, "confirm_password": {"short"}},
				http.StatusBadRequest, `id="new_password-error" class="field-error">Password must be at least`},
			{"confirmation differs", url.Values{"current_password": {adminPassword}, "new_password": {"New-Password-12"}, "confirm_password": {"New-Password-13"}},
				http.StatusBadRequest, "The two new passwords differ"},
		} {
			p := b.post("/account/password", tc.form)
			wantStatus(t, tc.name, p, tc.status)
			wantContains(t, tc.name, p, tc.want)
			if strings.Contains(p.body, "New-Password-12") || strings.Contains(p.body, adminPassword) {
				t.Fatalf("%s: a password was echoed back", tc.name)
			}
		}
		ok := b.post("/account/password", url.Values{"current_password": {adminPassword}, "new_password": {"New-Password-12"}, "confirm_password": {"New-Password-12"}})
		if ok.status != http.StatusSeeOther || ok.location != "/account?done=password" {
			t.Fatalf("change password: %d to %q\n%s", ok.status, ok.location, ok.body)
		}
		wantContains(t, "after the change", b.get("/account?done=password", false), "other sessions were logged out")
		if p := other.get("/", false); p.status != http.StatusFound {
			t.Fatalf("the other session still works after a password change: %d", p.status)
		}
		u.browser().login("admin", "New-Password-12")

		// API tokens: shown once, listed, revoked.
		bad := b.post("/account/tokens", url.Values{"name": {""}, "expires_in_days": {"x"}})
		wantStatus(t, "token with bad days", bad, http.StatusBadRequest)
		created := b.post("/account/tokens", url.Values{"name": {"ci"}, "expires_in_days": {"30"}})
		wantStatus(t, "create token", created, http.StatusCreated)
		tok := regexp.MustCompile(`<code id="new-token-value">(ward_[A-Za-z0-9_-]+)</code>`).FindStringSubmatch(created.body)
		if tok == nil {
			t.Fatalf("no token shown:\n%s", created.body)
		}
		again := b.get("/account", false)
		if strings.Contains(again.body, tok[1]) {
			t.Fatal("the token is shown again after creation")
		}
		wantContains(t, "token listed", again, "<th scope=\"row\">ci</th>")
		id := regexp.MustCompile(`action="/account/tokens/([^/]+)/revoke"`).FindStringSubmatch(again.body)
		if id == nil {
			t.Fatal("no revoke form")
		}
		rv := b.post("/account/tokens/"+id[1]+"/revoke", nil)
		if rv.status != http.StatusSeeOther {
			t.Fatalf("revoke: %d", rv.status)
		}
		wantContains(t, "after revoke", b.get("/account?done=token-revoked", false), "No tokens.")
	})
}

func TestAccountTOTP(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		b.login("admin", adminPassword)
		setup := b.post("/account/totp", nil)
		wantStatus(t, "totp setup", setup, http.StatusOK)
		wantContains(t, "totp setup", setup, `alt="QR code for your authenticator app"`, `src="data:image/png;base64,`)
		secret := regexp.MustCompile(`<code id="totp-secret">([A-Z2-7]+)</code>`).FindStringSubmatch(setup.body)
		if secret == nil {
			t.Fatalf("no secret shown:\n%s", setup.body)
		}
		wrong := b.post("/account/totp/confirm", url.Values{"code": {"000000"}})
		wantStatus(t, "wrong confirm code", wrong, http.StatusBadRequest)
		code, err := mfa.GenerateCode(secret[1], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		on := b.post("/account/totp/confirm", url.Values{"code": {code}})
		wantStatus(t, "confirm", on, http.StatusOK)
		codes := regexp.MustCompile(`<li><code>([^<]+)</code></li>`).FindAllStringSubmatch(on.body, -1)
		if len(codes) != 10 {
			t.Fatalf("%d recovery codes shown, want 10", len(codes))
		}
		page := b.get("/account", false)
		wantContains(t, "with totp", page, "is <strong>on</strong>", "10 recovery codes left")
		if strings.Contains(page.body, codes[0][1]) {
			t.Fatal("recovery codes shown again")
		}
		// A new login now asks for the second factor.
		nb := u.browser()
		p := nb.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}})
		if p.location != "/login/mfa?next=%2F" {
			t.Fatalf("login with TOTP on: %d to %q", p.status, p.location)
		}
		// Turning it off needs a valid code (a recovery code here).
		bad := b.post("/account/totp/disable", url.Values{"code": {"123456"}})
		wantStatus(t, "disable with a wrong code", bad, http.StatusBadRequest)
		off := b.post("/account/totp/disable", url.Values{"code": {codes[1][1]}})
		if off.status != http.StatusSeeOther {
			t.Fatalf("disable: %d\n%s", off.status, off.body)
		}
		wantContains(t, "after disable", b.get("/account?done=totp-off", false), "is <strong>off</strong>")
	})
}
