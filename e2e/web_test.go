package e2e

// Acceptance tests of the web UI (issue #7) in headless chromium against
// real processes: the TOTP login, a gateway turning "disconnected" on the
// overview without a reload, and the screenshots in docs/screenshots.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp/kb"

	"github.com/wardvpn/ward/internal/core/mfa"
)

const webAdminPassword = "Web-e2e-Admin-7"

// enableTOTP sets up and confirms TOTP for the session's user through the
// REST API and returns the secret. The code used to confirm is spent:
// the next login needs one of a later time step.
func enableTOTP(t *testing.T, api *client) string {
	t.Helper()
	var setup mfa.Setup
	api.must("POST", "/api/v1/me/totp", nil, http.StatusOK, &setup)
	code, err := mfa.GenerateCode(setup.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var rc mfa.RecoveryCodes
	api.must("POST", "/api/v1/me/totp/confirm", map[string]string{"code": code}, http.StatusOK, &rc)
	if len(rc.Codes) == 0 {
		t.Fatalf("TOTP confirmed without recovery codes: %+v", rc)
	}
	return setup.Secret
}

// nextTOTP is a code of the time step after now: valid (core accepts one
// step of skew) and later than the step spent on confirming.
func nextTOTP(t *testing.T, secret string) string {
	t.Helper()
	code, err := mfa.GenerateCode(secret, time.Now().Add(mfa.Period*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wrongTOTP is a six-digit code that is not valid for any step near now.
func wrongTOTP(t *testing.T, secret string) string {
	t.Helper()
	var valid []string
	for d := -3; d <= 3; d++ {
		c, err := mfa.GenerateCode(secret, time.Now().Add(time.Duration(d*mfa.Period)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		valid = append(valid, c)
	}
	for n := 0; ; n++ {
		if c := fmt.Sprintf("%06d", n); !slices.Contains(valid, c) {
			return c
		}
	}
}

// TestWebLoginTOTP: an admin with TOTP logs in through the form, is held at
// the second-factor page (the overview redirects there), sees the error at
// the code field after a wrong code and lands on the overview with the
// right one.
func TestWebLoginTOTP(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	core := startCore(t, coreOpts{dataDir: filepath.Join(t.TempDir(), "data"), env: []string{"WARD_ADMIN_PASSWORD=" + webAdminPassword}})
	secret := enableTOTP(t, mustLogin(t, core.base, "admin", webAdminPassword))

	b := newBrowser(t, core.base)
	if st := b.open("/"); st != http.StatusOK || !strings.HasPrefix(b.path(), "/login?next=") {
		t.Fatalf("GET / without a session = %d at %s, want the login form", st, b.path())
	}
	b.fill("#username", "admin")
	b.fill("#password", webAdminPassword)
	if st := b.submit(`form[action="/login"] button[type=submit]`); st != http.StatusOK {
		t.Fatalf("password step answered %d", st)
	}
	if p := b.path(); !strings.HasPrefix(p, "/login/mfa") {
		t.Fatalf("after the password the browser is at %s, want /login/mfa", p)
	}
	b.waitText("main", "Logged in as admin")
	// Half logged in: the overview sends the browser back to the code.
	b.open("/")
	if p := b.path(); !strings.HasPrefix(p, "/login/mfa") {
		t.Fatalf("GET / with only the password done led to %s, want /login/mfa", p)
	}

	// A wrong code: the page stays, the message is at the field.
	b.fill("#code", wrongTOTP(t, secret))
	if st := b.submit(`form[action="/login/mfa"] button[type=submit]`); st != http.StatusBadRequest {
		t.Errorf("wrong code answered %d, want 400", st)
	}
	if p := b.path(); !strings.HasPrefix(p, "/login/mfa") {
		t.Fatalf("after a wrong code the browser is at %s", p)
	}
	if msg := b.text("#code-error"); !strings.Contains(strings.ToLower(msg), "wrong or expired code") {
		t.Errorf("field error after a wrong code = %q, want \"wrong or expired code\"", msg)
	}
	if inv, desc := b.attr("#code", "aria-invalid"), b.attr("#code", "aria-describedby"); inv != "true" || desc != "code-error" {
		t.Errorf("code input aria-invalid=%q aria-describedby=%q, want true and code-error", inv, desc)
	}
	if v := evalJS[string](b, `document.querySelector("#code").value`); v != "" {
		t.Errorf("the wrong code is still in the field: %q", v)
	}
	for _, msg := range b.consoleErrors() {
		// The browser logs the page's own 400 as a failed load.
		if !strings.Contains(msg, "status of 400") || !strings.Contains(msg, "/login/mfa") {
			t.Errorf("page error after the wrong code: %s", msg)
		}
	}

	// The right code, typed.
	b.fill("#code", nextTOTP(t, secret))
	start := time.Now()
	if st := b.submit(`form[action="/login/mfa"] button[type=submit]`); st != http.StatusOK {
		t.Fatalf("right code answered %d at %s", st, b.path())
	}
	if p := b.path(); p != "/" {
		t.Fatalf("after the right code the browser is at %s, want the overview /", p)
	}
	b.waitText("main h1", "Overview")
	if who := b.text("header .who"); who != "admin" {
		t.Errorf("header shows user %q, want admin", who)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors during the login:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("TOTP login through the form: code accepted and overview shown in %v", time.Since(start).Round(time.Millisecond))
}

// gatewayStateJS reads the state the overview shows for a gateway.
func gatewayStateJS(name string) string {
	return `document.querySelector('[data-gateway=` + jsString(name) + `] [data-state]')?.dataset.state ?? ""`
}

// TestWebGatewayGoesDisconnected: with the overview open, a gateway stopped
// with SIGTERM turns "disconnected" on the page by itself (the live region
// polls), within seconds and without a reload.
func TestWebGatewayGoesDisconnected(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	e := newGatewayEnv(t, false)
	b := newBrowser(t, "http://"+coreHTTPAddr, inNetns(e.coreNS))
	if st := b.login("admin", gwAdminPassword); st != http.StatusOK || b.path() != "/" {
		t.Fatalf("login = %d at %s, want the overview", st, b.path())
	}
	state := func() string { return evalJS[string](b, gatewayStateJS("gw1")) }
	if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
		if s := state(); s != "connected" {
			return fmt.Errorf("gw1 shows %q", s)
		}
		return nil
	}); err != nil {
		t.Fatalf("overview never showed gw1 connected: %v", err)
	}
	// A marker in the page's window: a reload or navigation loses it.
	origin := evalJS[float64](b, `window.__wardMarker = "kept"; performance.timeOrigin`)

	// core's own view, read from the API next to the page.
	hc := e.api(t).hc
	apiConnected := func() (bool, error) {
		resp, err := hc.Get("http://" + coreHTTPAddr + "/api/v1/locations/" + e.locID + "/gateways/" + e.gwID)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var g apiGateway
		if err := json.Unmarshal(body, &g); err != nil {
			return false, fmt.Errorf("%d %s: %v", resp.StatusCode, body, err)
		}
		return g.Status.Connected, nil
	}

	stopped := time.Now()
	if err := e.gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM gateway: %v", err)
	}
	var exited, apiSaw, uiSaw time.Duration
	const limit = 10 * time.Second
	for deadline := stopped.Add(30 * time.Second); time.Now().Before(deadline) && uiSaw == 0; time.Sleep(100 * time.Millisecond) {
		if exited == 0 && e.gw.exited() {
			exited = time.Since(stopped)
		}
		if apiSaw == 0 {
			if c, err := apiConnected(); err == nil && !c {
				apiSaw = time.Since(stopped)
			}
		}
		if s := state(); s == "disconnected" {
			uiSaw = time.Since(stopped)
		} else if s != "connected" {
			t.Fatalf("gw1 shows %q after the stop, want connected then disconnected", s)
		}
	}
	select {
	case <-e.gw.done:
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not exit within 20 s of SIGTERM")
	}
	if exited == 0 {
		exited = time.Since(stopped)
	}
	if uiSaw == 0 {
		t.Fatalf("overview still shows gw1 connected 30 s after SIGTERM (gateway exited after %v, API disconnected after %v; 0 = not seen)",
			exited.Round(time.Millisecond), apiSaw.Round(time.Millisecond))
	}
	if marker := evalJS[string](b, `window.__wardMarker ?? ""`); marker != "kept" {
		t.Errorf("the page was reloaded or navigated (window marker %q)", marker)
	}
	if o := evalJS[float64](b, `performance.timeOrigin`); o != origin {
		t.Errorf("performance.timeOrigin %v -> %v: the page was reloaded", origin, o)
	}
	if p := b.path(); p != "/" {
		t.Errorf("the tab is at %s, want still the overview", p)
	}
	t.Logf("gateway SIGTERM -> process exited %v, core API disconnected %v, overview row \"disconnected\" %v (no reload; live region polls every 2 s)",
		exited.Round(time.Millisecond), apiSaw.Round(time.Millisecond), uiSaw.Round(time.Millisecond))
	if uiSaw > limit {
		t.Errorf("overview showed gw1 disconnected %v after SIGTERM, want within %v", uiSaw.Round(time.Millisecond), limit)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors on the overview:\n%s", strings.Join(errs, "\n"))
	}
}

// webPages are the pages of the main navigation, by screenshot name.
var webPages = []struct{ name, path string }{
	{"overview", "/"},
	{"users", "/users"},
	{"groups", "/groups"},
	{"devices", "/devices"},
	{"locations", "/locations"},
	{"proxies", "/proxies"},
	{"settings", "/settings"},
	{"audit", "/audit"},
	{"account", "/account"},
}

// TestWebScreenshots seeds a small installation (a location with a real
// gateway and a client that sent traffic, a second location with a
// gateway that never joined, users, groups, devices, a proxy) and writes
// screenshots of the login, the second-factor page and every page of the
// navigation that exists, at desktop and phone widths, to docs/screenshots.
// It also checks the overview's skip link from the keyboard.
func TestWebScreenshots(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	e := newGatewayEnv(t, true)
	api := e.api(t)
	go serveSink(e.gwNS.listen(t, "tcp", "0.0.0.0:7001"))

	// Seed.
	api.must("PATCH", "/api/v1/locations/"+e.locID, map[string]any{"name": "Head office"}, http.StatusOK, nil)
	var branch struct {
		ID string `json:"id"`
	}
	api.must("POST", "/api/v1/locations", map[string]any{"name": "Branch", "addresses": []string{"10.78.0.0/24"},
		"endpoint": "vpn-branch.example.com", "mfa_mode": "internal"}, http.StatusCreated, &branch)
	api.must("POST", "/api/v1/locations/"+branch.ID+"/gateways", map[string]any{"name": "branch-gw", "control_address": "10.250.9.2:50066"},
		http.StatusCreated, nil)
	api.must("POST", "/api/v1/groups", map[string]any{"name": "staff", "description": "Everyone"}, http.StatusCreated, nil)
	api.must("POST", "/api/v1/groups", map[string]any{"name": "ops", "description": "Operations"}, http.StatusCreated, nil)
	const userPassword = "Screenshot-User-7"
	users := map[string]string{}
	for _, u := range []struct{ name, first, last string }{{"alice", "Alice", "Archer"}, {"bob", "Bob", "Baker"}, {"carol", "Carol", "Clark"}} {
		var created struct {
			ID string `json:"id"`
		}
		groups := []string{"staff"}
		if u.name == "bob" {
			groups = append(groups, "ops")
		}
		api.must("POST", "/api/v1/users", map[string]any{"username": u.name, "email": u.name + "@example.com", "first_name": u.first,
			"last_name": u.last, "password": userPassword, "groups": groups}, http.StatusCreated, &created)
		users[u.name] = created.ID
	}
	for _, d := range []struct{ name, user string }{{"alice-laptop", "alice"}, {"alice-phone", "alice"}, {"bob-laptop", "bob"}} {
		api.must("POST", "/api/v1/devices", map[string]any{"name": d.name, "generate_key": true, "user_id": users[d.user]}, http.StatusCreated, nil)
	}
	api.must("POST", "/api/v1/proxies", map[string]any{"name": "edge-proxy", "control_address": "10.250.8.2:50070"}, http.StatusCreated, nil)
	enableTOTP(t, mustLoginNS(t, e, "alice", userPassword)) // for the second-factor page
	// Traffic: the admin's laptop through the real gateway.
	devID, _, _, config := e.newDevice(t, "admin-laptop")
	wgQuickUp(t, e.t, e.clientNS, e.dir, "wq"+e.id, config)
	ctx := t.Context()
	if err := waitFor(20*time.Second, 200*time.Millisecond, func() error { return sendBytes(ctx, e.clientNS, sinkAddr, 3<<20) }); err != nil {
		t.Fatalf("send traffic through the tunnel: %v", err)
	}
	loc, _ := e.settledUsage(t, devID)
	t.Logf("seeded: 2 locations, 2 gateways, 4 users, 2 groups, 4 devices, 1 proxy; %d bytes up through the tunnel", loc.Up)

	b := newBrowser(t, "http://"+coreHTTPAddr, inNetns(e.coreNS))
	if st := b.open("/login"); st != http.StatusOK {
		t.Fatalf("GET /login = %d", st)
	}
	b.screenshots("login")
	if st := b.login("alice", userPassword); st != http.StatusOK || !strings.HasPrefix(b.path(), "/login/mfa") {
		t.Fatalf("alice's password step = %d at %s, want the second-factor page", st, b.path())
	}
	b.screenshots("login-mfa")
	if st := b.submit(`main form[action="/logout"] button[type=submit]`); st != http.StatusOK || !strings.HasPrefix(b.path(), "/login") {
		t.Fatalf("cancel on the second-factor page = %d at %s, want the login", st, b.path())
	}

	if st := b.login("admin", gwAdminPassword); st != http.StatusOK || b.path() != "/" {
		t.Fatalf("admin login = %d at %s", st, b.path())
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors on the login pages:\n%s", strings.Join(errs, "\n"))
	}
	var missing []string
	for _, p := range webPages {
		st := b.open(p.path)
		if st != http.StatusOK {
			missing = append(missing, fmt.Sprintf("%s (%d)", p.path, st))
			b.consoleErrors() // the 404 itself
			continue
		}
		if p.name == "overview" {
			if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
				if s := evalJS[string](b, gatewayStateJS("gw1")); s != "connected" {
					return fmt.Errorf("gw1 shows %q", s)
				}
				return nil
			}); err != nil {
				t.Errorf("overview: %v, want connected", err)
			}
		}
		b.screenshots(p.name)
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Errorf("page errors on %s:\n%s", p.path, strings.Join(errs, "\n"))
		}
	}
	if len(missing) > 0 {
		t.Logf("pages of the navigation that do not exist yet (no screenshot): %s", strings.Join(missing, ", "))
	}

	// Keyboard: from the top of the overview, Tab reaches the skip link
	// first, and following it moves the focus to the main content.
	b.open("/")
	b.settle()
	b.press(kb.Tab)
	if got := b.activeElement(); got != "a.skip" {
		t.Errorf("first Tab on the overview focuses %q, want the skip link a.skip", got)
	} else {
		if txt := b.text("a.skip"); txt != "Skip to content" {
			t.Errorf("skip link text %q", txt)
		}
		b.press(kb.Enter)
		if err := waitFor(5*time.Second, 50*time.Millisecond, func() error {
			if got := b.activeElement(); got != "main#main" {
				return fmt.Errorf("focus on %q", got)
			}
			return nil
		}); err != nil {
			t.Errorf("Enter on the skip link: %v, want main#main", err)
		} else {
			t.Logf("keyboard: the first Tab on the overview reaches the skip link, Enter moves the focus to main#main")
		}
	}
}

// mustLoginNS logs in to the API of the environment's core (in its
// namespace) as username, with a session of its own.
func mustLoginNS(t *testing.T, e *gwEnv, username, password string) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := e.coreNS.httpClient(30 * time.Second)
	hc.Jar = jar
	c := &client{t: t, base: "http://" + coreHTTPAddr, hc: hc}
	if st := c.login(username, password); st != http.StatusOK {
		t.Fatalf("API login as %s = %d", username, st)
	}
	return c
}
