package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/store"
)

func TestLoginAndCSRF(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		p := b.get("/", false)
		if p.status != http.StatusFound || p.location != "/login?next=%2F" {
			t.Fatalf("anonymous overview: %d to %q", p.status, p.location)
		}
		// htmx fragments redirect the whole page.
		if p := b.get("/overview/live", true); p.status != http.StatusNoContent {
			t.Fatalf("anonymous fragment: %d", p.status)
		}
		wantStatus(t, "login page", b.get("/login", false), http.StatusOK)
		bad := b.post("/login", url.Values{"username": {"admin"}, "password": {"wrong password"}})
		wantStatus(t, "wrong password", bad, http.StatusUnauthorized)
		wantContains(t, "wrong password", bad, "Wrong username or password", `value="admin"`)
		if strings.Contains(bad.body, "wrong password") {
			t.Fatal("the submitted password was echoed back")
		}
		// Another site's page cannot post the login form (login CSRF).
		req, _ := http.NewRequest(http.MethodPost, b.base+"/login", strings.NewReader(url.Values{"username": {"admin"}, "password": {adminPassword}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		wantStatus(t, "cross-site login", b.do(req), http.StatusForbidden)
		// An open redirect in next is refused.
		off := b.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}, "next": {"//evil.example/x"}})
		if off.status != http.StatusSeeOther || off.location != "/" {
			t.Fatalf("login with an off-site next: %d to %q", off.status, off.location)
		}
		ov := b.get("/", false)
		wantStatus(t, "overview", ov, http.StatusOK)
		wantContains(t, "overview", ov, "Overview", "admin", `hx-get="/overview/live"`)
		wantStatus(t, "live fragment", b.get("/overview/live", true), http.StatusOK)
		// A state change without the CSRF token is refused.
		wantStatus(t, "logout without csrf", b.post("/logout", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		out := b.post("/logout", nil)
		if out.status != http.StatusSeeOther || out.location != "/login" {
			t.Fatalf("logout: %d to %q", out.status, out.location)
		}
		if p := b.get("/", false); p.status != http.StatusFound {
			t.Fatalf("overview after logout: %d", p.status)
		}
	})
}

func TestLoginWithTOTP(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		setup, err := u.mfa.Setup(u.ctx, u.admin, u.admin.UserID)
		if err != nil {
			t.Fatal(err)
		}
		code, err := mfa.GenerateCode(setup.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rc, err := u.mfa.Confirm(u.ctx, u.admin, u.admin.UserID, code)
		if err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		p := b.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}, "next": {"/devices"}})
		if p.status != http.StatusSeeOther || p.location != "/login/mfa?next=%2Fdevices" {
			t.Fatalf("password step: %d to %q", p.status, p.location)
		}
		// Until the second factor, every page sends back to it.
		if p := b.get("/", false); p.status != http.StatusFound || p.location != "/login/mfa" {
			t.Fatalf("overview with the second factor due: %d to %q", p.status, p.location)
		}
		step := b.get("/login/mfa?next=%2Fdevices", false)
		wantStatus(t, "second-factor page", step, http.StatusOK)
		wantContains(t, "second-factor page", step, "authenticator app", "recovery code", `name="code"`)
		wrong := b.post("/login/mfa", url.Values{"code": {"000000"}, "next": {"/devices"}})
		wantStatus(t, "wrong code", wrong, http.StatusBadRequest)
		wantContains(t, "wrong code", wrong, `aria-invalid="true"`, "Wrong or expired code")
		ok := b.post("/login/mfa", url.Values{"code": {rc.Codes[0]}, "next": {"/devices"}})
		if ok.status != http.StatusSeeOther || ok.location != "/devices" {
			t.Fatalf("recovery code: %d to %q\n%s", ok.status, ok.location, ok.body)
		}
		wantStatus(t, "overview after the second factor", b.get("/", false), http.StatusOK)
		if p := b.get("/login/mfa", false); p.status != http.StatusFound || p.location != "/" {
			t.Fatalf("second-factor page with a full session: %d to %q", p.status, p.location)
		}
	})
}

func TestOverviewShowsGatewaysAndTraffic(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		loc, err := u.vpn.CreateLocation(u.ctx, u.admin, vpnLocation("office"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.vpn.CreateGateway(u.ctx, u.admin, loc.ID, vpnComponent("gw-a", "10.0.0.1:50066")); err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("admin", adminPassword)
		live := b.get("/overview/live", true)
		wantStatus(t, "live", live, http.StatusOK)
		wantContains(t, "live", live, "office", "gw-a", `data-state="not adopted"`)
		tr := b.get("/overview/traffic/"+loc.ID+"?range=24h", true)
		wantStatus(t, "traffic", tr, http.StatusOK)
		wantContains(t, "traffic", tr, `data-points="[[],[],[]]"`, `aria-pressed="true"`)
		wantStatus(t, "traffic of an unknown location", b.get("/overview/traffic/nope", true), http.StatusNotFound)
	})
}
