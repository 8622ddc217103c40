package public_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

func wantPage(t *testing.T, what string, r resp, status int, contains ...string) {
	t.Helper()
	want(t, what, r, status)
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	if !strings.HasPrefix(r.body, "<!doctype html>") || !strings.Contains(r.body, "</html>") {
		t.Fatalf("%s: not a whole page: %.200s", what, r.body)
	}
	for _, c := range contains {
		if !strings.Contains(r.body, c) {
			t.Fatalf("%s: page lacks %q:\n%s", what, c, r.body)
		}
	}
}

func TestEnrollmentPages(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db, nil)
		f.settings(core.SettingsPatch{InstanceName: ptr("Acme VPN")})
		// The first name is shown, escaped.
		u := f.pendingUser("wanda", `<script>alert(1)</script>`)
		st := f.start(u.ID)
		page := "/enroll/" + st.Token

		r := f.do("GET", page, "", nil, nil)
		wantPage(t, "overview", r, 200, "Set up your account", "<b>wanda</b>", "&lt;script&gt;", "Acme VPN", `name="action" value="password"`,
			`value="totp"`, "You can register a device once your password is set.")
		if strings.Contains(r.body, "<script>") {
			t.Fatal("unescaped user input on the page")
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("CSP %q", csp)
		}
		if r.header.Get("Referrer-Policy") != "no-referrer" || r.header.Get("Cache-Control") != "no-store" {
			t.Fatal("a token page may leak through Referer or caches")
		}

		// Password: mismatch, weak, then good (POST-redirect-GET).
		r = f.form(page, url.Values{"action": {"password"}, "password": {"Wanda-password-1"}, "password2": {"Wanda-password-2"}})
		wantPage(t, "mismatch", r, 400, "The two passwords differ.", `value="password"`)
		r = f.form(page, url.Values{"action": {"password"}, "password": {"short"}, "password2": {"short"}})
		wantPage(t, "weak", r, 400, "at least 12 characters")
		r = f.form(page, url.Values{"action": {"password"}, "password": {"Wanda-password-1"}, "password2": {"Wanda-password-1"}})
		want(t, "password", r, 303)
		if loc := r.header.Get("Location"); loc != page {
			t.Fatalf("redirect to %q, want %q", loc, page)
		}
		r = f.do("GET", page, "", nil, nil)
		wantPage(t, "after password", r, 200, "✓ done", `value="device"`, `value="complete"`)
		if strings.Contains(r.body, `value="password"`) {
			t.Fatal("the password form is still offered")
		}

		// TOTP: setup shows a QR code; a wrong code shows it again.
		r = f.form(page, url.Values{"action": {"totp"}})
		wantPage(t, "totp setup", r, 200, `<img src="data:image/png;base64,iVBOR`, `name="otpauth_url"`)
		secret := regexp.MustCompile(`<code>([A-Z2-7]{32})</code>`).FindStringSubmatch(r.body)
		otpURL := regexp.MustCompile(`name="otpauth_url" value="([^"]+)"`).FindStringSubmatch(r.body)
		if secret == nil || otpURL == nil {
			t.Fatalf("no secret or otpauth URL on the page:\n%s", r.body)
		}
		otpauth := strings.ReplaceAll(otpURL[1], "&amp;", "&")
		r = f.form(page, url.Values{"action": {"totp_confirm"}, "code": {"000000"}, "otpauth_url": {otpauth}})
		wantPage(t, "wrong code", r, 400, "wrong or expired code", `<img src="data:image/png;base64,`, secret[1])
		code, _ := mfa.GenerateCode(secret[1], time.Now())
		r = f.form(page, url.Values{"action": {"totp_confirm"}, "code": {code}, "otpauth_url": {otpauth}})
		wantPage(t, "codes", r, 200, "recovery codes")
		if n := len(regexp.MustCompile(`(?m)^[a-z2-9]{5}-[a-z2-9]{5}$`).FindAllString(r.body, -1)); n != 10 {
			t.Fatalf("%d recovery codes on the page, want 10", n)
		}
		wantPage(t, "overview with totp", f.do("GET", page, "", nil, nil), 200, "Your authenticator app is set up.")

		// Device: a bad key keeps the form filled in.
		r = f.form(page, url.Values{"action": {"device"}, "name": {"my laptop"}, "public_key": {"not-a-key"}})
		wantPage(t, "bad key", r, 400, "not a WireGuard public key", `value="my laptop"`, `value="not-a-key"`)
		key := newKey(t)
		r = f.form(page, url.Values{"action": {"device"}, "name": {"my laptop"}, "public_key": {key}})
		wantPage(t, "device", r, 201, "Client sync token", "wardc_", `Location “office”`, "PrivateKey = "+vpn.PrivateKeyPlaceholder,
			"Endpoint = vpn.example.com:51820", "# ward-endpoints = vpn.example.com:51820, vpn2.example.com:51820")

		// Unknown action, then finish.
		wantPage(t, "unknown action", f.form(page, url.Values{"action": {"dance"}}), 400, "Unknown action.")
		r = f.form(page, url.Values{"action": {"complete"}})
		wantPage(t, "done", r, 200, "All set", "<b>wanda</b> is ready and active")
		wantPage(t, "used link", f.do("GET", page, "", nil, nil), 404, "this link was already used")
		wantPage(t, "used link, post", f.form(page, url.Values{"action": {"complete"}}), 404, "this link was already used")
		if _, err := f.ident.Login(f.ctx, "wanda", "Wanda-password-1", "", ""); err != nil {
			t.Fatalf("login after enrollment through the pages: %v", err)
		}
		wantPage(t, "unknown link", f.do("GET", "/enroll/whatever", "", nil, nil), 404, "this link is not valid")
		wantPage(t, "index", f.do("GET", "/", "", nil, nil), 200, "Forgot your password?")
		wantPage(t, "elsewhere", f.do("GET", "/wp-admin", "", nil, nil), 404, "Not found")
	})
}

func TestNewClientPage(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db, nil)
		u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: "xena", Email: "xena@example.com", Password: "Xena-password-1"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.enroll.Start(f.ctx, f.admin, u.ID, enrollStart("new_client"))
		if err != nil {
			t.Fatal(err)
		}
		page := "/enroll/" + st.Token
		r := f.do("GET", page, "", nil, nil)
		wantPage(t, "overview", r, 200, "Configure a new client", "Still to do: device.", `value="device"`)
		if strings.Contains(r.body, `value="password"`) {
			t.Fatal("a new-client link offers a password form")
		}
		wantPage(t, "complete early", f.form(page, url.Values{"action": {"complete"}}), 409, "finish these steps first: device")
		wantPage(t, "device", f.form(page, url.Values{"action": {"device"}, "name": {"tablet"}, "public_key": {newKey(t)}}), 201, "tablet")
		wantPage(t, "done", f.form(page, url.Values{"action": {"complete"}}), 200, "Your new client is set up.")
	})
}

func TestResetPages(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		box := &outbox{}
		f := newFixture(t, db, box)
		f.settings(core.SettingsPatch{SMTPHost: ptr("smtp.example.com"), SMTPFrom: ptr("ward@example.com"), ProxyPublicURL: ptr(f.ts.URL)})
		if _, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: "yuri", Email: "yuri@example.com", Password: "Yuri-password-1"}); err != nil {
			t.Fatal(err)
		}
		wantPage(t, "request form", f.do("GET", "/reset", "", nil, nil), 200, `name="login"`)
		unknown := f.form("/reset", url.Values{"login": {"nobody"}})
		known := f.form("/reset", url.Values{"login": {"yuri"}})
		wantPage(t, "unknown", unknown, 200, "Check your mail")
		if known.status != unknown.status || known.body != unknown.body {
			t.Fatal("the page differs for known and unknown accounts")
		}
		wantPage(t, "empty", f.form("/reset", url.Values{"login": {""}}), 400, "give your username")
		f.enroll.WaitMail()
		msgs := box.to("yuri@example.com")
		if len(msgs) != 1 {
			t.Fatalf("mails: %d", len(msgs))
		}
		link := regexp.MustCompile(`http://\S+/reset/\S+`).FindString(msgs[0].Text)
		path := strings.TrimPrefix(link, f.ts.URL)
		wantPage(t, "form", f.do("GET", path, "", nil, nil), 200, "Choose a new password for <b>yuri</b>")
		wantPage(t, "mismatch", f.form(path, url.Values{"password": {"Yuri-password-2"}, "password2": {"Yuri-password-3"}}), 400, "The two passwords differ.")
		wantPage(t, "weak", f.form(path, url.Values{"password": {"weak"}, "password2": {"weak"}}), 400, "at least 12 characters")
		wantPage(t, "reset", f.form(path, url.Values{"password": {"Yuri-password-2"}, "password2": {"Yuri-password-2"}}), 200, "Your password is changed")
		wantPage(t, "again", f.form(path, url.Values{"password": {"Yuri-password-3"}, "password2": {"Yuri-password-3"}}), 404, "already used")
		wantPage(t, "used link", f.do("GET", path, "", nil, nil), 404, "already used")
		if _, err := f.ident.Login(f.ctx, "yuri", "Yuri-password-2", "", ""); err != nil {
			t.Fatal(err)
		}
		// Too many requests from one address: the page says so.
		var last resp
		for range 11 {
			last = f.do("POST", "/reset", "application/x-www-form-urlencoded", []byte("login=ghost"), map[string]string{"X-Forwarded-For": "198.51.100.77"})
		}
		wantPage(t, "rate limited", last, 429, "too many password-reset requests")
		// An oversized form.
		wantPage(t, "huge form", f.do("POST", "/reset", "application/x-www-form-urlencoded", []byte("login="+strings.Repeat("a", 70<<10)), nil), 413, "too large")
	})
}

func enrollStart(kind string) enroll.StartInput {
	return enroll.StartInput{Kind: kind, SendEmail: ptr(false)}
}
