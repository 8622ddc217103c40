package web

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/core/webauthn/webauthntest"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/store"
)

// waPublicURL is the relying party of these tests; the software
// authenticator plays a browser on it (the test server's own address does
// not matter to WebAuthn: only what the browser signs does).
const waPublicURL = "http://localhost:8000"

// newWebAuthnUI is newTestUI with security keys, wired as core wires them.
func newWebAuthnUI(t *testing.T, db *store.DB) (*testUI, *webauthn.Service) {
	t.Helper()
	u := newTestUI(t, db)
	wa, err := webauthn.New(db, webauthn.Config{PublicURL: waPublicURL})
	if err != nil {
		t.Fatal(err)
	}
	u.mfa.AddSecondFactors(wa)
	srv, err := New(Options{DB: db, Identity: u.ident, VPN: u.vpn, Stats: stats.New(db), MFA: u.mfa, Mail: mail.New(db, nil),
		Cluster: lease.NewRegistry(db, "", ""), WebAuthn: wa, Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	u.srv = srv
	u.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(u.ts.Close)
	return u, wa
}

// waBrowser is a browser of the WebAuthn test server.
func waBrowser(u *testUI) *browser {
	b := u.browser()
	b.base = u.ts.URL
	return b
}

// postJSON posts JSON as webauthn.js does (csrf: the X-CSRF-Token header)
// and decodes the JSON answer.
func (b *browser) postJSON(path, csrf string, body any) (int, waAnswer, http.Header) {
	b.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		b.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, b.base+path, bytes.NewReader(raw))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var a waAnswer
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		if err := json.Unmarshal(data, &a); err != nil {
			b.t.Fatalf("%s: answer %s: %v", path, data, err)
		}
	} else {
		a.Error = "not JSON: " + string(data)
	}
	return resp.StatusCode, a, resp.Header
}

func waOptions(t *testing.T, a waAnswer) []byte {
	t.Helper()
	raw, err := json.Marshal(a.Options)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// waRegister adds a key through the pages, as webauthn.js does.
func waRegister(t *testing.T, b *browser, key *webauthntest.Authenticator, name string) string {
	t.Helper()
	st, begin, _ := b.postJSON("/account/security-keys/register/begin", b.csrf, map[string]any{})
	if st != http.StatusOK || begin.CeremonyID == "" || begin.Options == nil {
		t.Fatalf("register begin: %d %+v", st, begin)
	}
	created, err := key.Create(waOptions(t, begin))
	if err != nil {
		t.Fatal(err)
	}
	st, fin, _ := b.postJSON("/account/security-keys/register/finish", b.csrf,
		map[string]any{"ceremony_id": begin.CeremonyID, "name": name, "credential": json.RawMessage(created)})
	if st != http.StatusOK || !strings.HasPrefix(fin.Redirect, "/account/security-keys?added=") {
		t.Fatalf("register finish: %d %+v", st, fin)
	}
	return fin.Redirect
}

func TestSecurityKeysPage(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u, wa := newWebAuthnUI(t, db)
		b := waBrowser(u)
		b.login("admin", adminPassword)
		p := b.get("/account/security-keys", false)
		wantStatus(t, "security keys", p, http.StatusOK)
		wantContains(t, "security keys", p, "You have no security key", `id="webauthn-register"`, `for="key-name"`,
			`/static/webauthn.js`, `aria-current="page"`)

		// Without the CSRF header the begin call is refused.
		if st, _, _ := b.postJSON("/account/security-keys/register/begin", "", map[string]any{}); st != http.StatusForbidden {
			t.Fatalf("begin without CSRF token: %d", st)
		}
		key := webauthntest.New(waPublicURL)
		// A name the domain refuses comes back as a field error, and the
		// ceremony is not used up by it.
		st, begin, _ := b.postJSON("/account/security-keys/register/begin", b.csrf, map[string]any{})
		if st != http.StatusOK {
			t.Fatalf("begin: %d %+v", st, begin)
		}
		created, err := key.Create(waOptions(t, begin))
		if err != nil {
			t.Fatal(err)
		}
		st, bad, _ := b.postJSON("/account/security-keys/register/finish", b.csrf,
			map[string]any{"ceremony_id": begin.CeremonyID, "name": strings.Repeat("n", 65), "credential": json.RawMessage(created)})
		if st != http.StatusBadRequest || bad.Field != "name" || !strings.Contains(bad.Error, "at most 64") {
			t.Fatalf("finish with a long name: %d %+v", st, bad)
		}
		st, fin, _ := b.postJSON("/account/security-keys/register/finish", b.csrf,
			map[string]any{"ceremony_id": begin.CeremonyID, "name": "YubiKey 5", "credential": json.RawMessage(created)})
		if st != http.StatusOK {
			t.Fatalf("finish: %d %+v", st, fin)
		}
		st, again, _ := b.postJSON("/account/security-keys/register/finish", b.csrf,
			map[string]any{"ceremony_id": begin.CeremonyID, "name": "again", "credential": json.RawMessage(created)})
		if st != http.StatusConflict || !strings.Contains(again.Error, "expired") {
			t.Fatalf("finish twice: %d %+v", st, again)
		}
		st, garbage, _ := b.postJSON("/account/security-keys/register/finish", b.csrf, map[string]any{"ceremony_id": "x"})
		if st != http.StatusBadRequest || garbage.Field != "credential" {
			t.Fatalf("finish without a credential: %d %+v", st, garbage)
		}

		added := b.get(fin.Redirect, false)
		wantStatus(t, "after adding", added, http.StatusOK)
		wantContains(t, "after adding", added, "Security key “YubiKey 5” added", `<th scope="row">YubiKey 5</th>`, "never", "(usb)",
			`data-confirm="Delete the security key “YubiKey 5”? It is your only second factor`)
		keys, err := wa.List(u.ctx, u.admin, u.admin.UserID)
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys: %v %v", keys, err)
		}
		id := keys[0].ID

		// Rename: a bad name keeps the form open with the value and the
		// message; a good one redirects.
		long := strings.Repeat("x", 65)
		bad2 := b.post("/account/security-keys/"+id+"/rename", url.Values{"name": {long}})
		wantStatus(t, "bad rename", bad2, http.StatusBadRequest)
		wantContains(t, "bad rename", bad2, `value="`+long+`"`, `aria-invalid="true"`, `id="name-`+id+`-error"`, "at most 64", "<details class=\"rename\" open>")
		ok := b.post("/account/security-keys/"+id+"/rename", url.Values{"name": {"Keyring"}})
		if ok.status != http.StatusSeeOther || ok.location != "/account/security-keys?renamed="+id {
			t.Fatalf("rename: %d to %q\n%s", ok.status, ok.location, ok.body)
		}
		wantContains(t, "renamed", b.get(ok.location, false), "Security key renamed to “Keyring”", `<th scope="row">Keyring</th>`)
		wantStatus(t, "rename without CSRF", b.post("/account/security-keys/"+id+"/rename", url.Values{"name": {"x"}, "csrf_token": {"forged"}}),
			http.StatusForbidden)
		wantStatus(t, "rename a missing key", b.post("/account/security-keys/nope/rename", url.Values{"name": {"x"}}), http.StatusNotFound)

		// Another user neither sees nor deletes it.
		if _, err := u.ident.CreateUser(u.ctx, u.admin, identity.NewUser{Username: "bob", Email: "bob@example.com", Password: "Bob-password-123"}); err != nil {
			t.Fatal(err)
		}
		bob := waBrowser(u)
		bob.login("bob", "Bob-password-123")
		bp := bob.get("/account/security-keys", false)
		wantStatus(t, "bob's keys", bp, http.StatusOK)
		if strings.Contains(bp.body, "Keyring") {
			t.Fatal("bob sees admin's key")
		}
		wantStatus(t, "bob deletes admin's key", bob.post("/account/security-keys/"+id+"/delete", nil), http.StatusNotFound)

		del := b.post("/account/security-keys/"+id+"/delete", nil)
		if del.status != http.StatusSeeOther || del.location != "/account/security-keys?deleted=1" {
			t.Fatalf("delete: %d to %q", del.status, del.location)
		}
		wantContains(t, "deleted", b.get(del.location, false), "Security key deleted", "You have no security key")
		if n := countAudit(t, u, "webauthn.register") + countAudit(t, u, "webauthn.delete") + countAudit(t, u, "webauthn.rename"); n != 3 {
			t.Errorf("audit entries for register, rename, delete: %d", n)
		}
	})
}

func countAudit(t *testing.T, u *testUI, action string) int {
	t.Helper()
	_, n, err := core.ListAudit(u.ctx, u.db, core.AuditFilter{Action: action, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLoginWithSecurityKey(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u, _ := newWebAuthnUI(t, db)
		key := webauthntest.New(waPublicURL)
		setup := waBrowser(u)
		setup.login("admin", adminPassword)
		waRegister(t, setup, key, "YubiKey")

		b := waBrowser(u)
		p := b.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}, "next": {"/devices"}})
		if p.status != http.StatusSeeOther || p.location != "/login/mfa?next=%2Fdevices" {
			t.Fatalf("password step: %d to %q", p.status, p.location)
		}
		step := b.get("/login/mfa?next=%2Fdevices", false)
		wantStatus(t, "second-factor page", step, http.StatusOK)
		wantContains(t, "second-factor page", step, "Use a security key or passkey", `data-next="/devices"`, `/static/webauthn.js`)
		if strings.Contains(step.body, `name="code"`) {
			t.Fatal("a user with only a security key is offered a code field")
		}
		pendingCSRF := b.csrf

		// Without the session's CSRF token: refused.
		if st, a, _ := b.postJSON("/login/mfa/webauthn/begin", "forged", map[string]any{}); st != http.StatusForbidden || a.Error == "" {
			t.Fatalf("begin with a forged token: %d %+v", st, a)
		}
		st, begin, _ := b.postJSON("/login/mfa/webauthn/begin", pendingCSRF, map[string]any{})
		if st != http.StatusOK || begin.CeremonyID == "" {
			t.Fatalf("login begin: %d %+v", st, begin)
		}
		asserted, err := key.Get(waOptions(t, begin))
		if err != nil {
			t.Fatal(err)
		}
		// The same answer for another ceremony fails (another challenge),
		// and the session still waits.
		st, other, _ := b.postJSON("/login/mfa/webauthn/begin", pendingCSRF, map[string]any{})
		if st != http.StatusOK {
			t.Fatalf("second begin: %d", st)
		}
		st, bad, _ := b.postJSON("/login/mfa/webauthn/finish", pendingCSRF,
			map[string]any{"ceremony_id": other.CeremonyID, "next": "/devices", "credential": json.RawMessage(asserted)})
		if st != http.StatusBadRequest || !strings.Contains(bad.Error, "could not be verified") {
			t.Fatalf("answer for another challenge: %d %+v", st, bad)
		}
		if p := b.get("/", false); p.status != http.StatusFound || p.location != "/login/mfa" {
			t.Fatalf("overview while the key is due: %d to %q", p.status, p.location)
		}
		st, fin, hdr := b.postJSON("/login/mfa/webauthn/finish", pendingCSRF,
			map[string]any{"ceremony_id": begin.CeremonyID, "next": "//evil.example/", "credential": json.RawMessage(asserted)})
		if st != http.StatusOK || fin.Redirect != "/" {
			t.Fatalf("login finish: %d %+v", st, fin)
		}
		if !strings.Contains(hdr.Get("Set-Cookie"), SessionCookie+"=ws_") {
			t.Fatalf("no new session cookie: %q", hdr.Get("Set-Cookie"))
		}
		wantStatus(t, "overview after the key", b.get("/", false), http.StatusOK)
		if b.csrf == pendingCSRF {
			t.Fatal("the CSRF token did not change with the second factor")
		}
		// Nothing is due any more.
		if st, a, _ := b.postJSON("/login/mfa/webauthn/begin", b.csrf, map[string]any{}); st != http.StatusConflict || a.Redirect != "/" {
			t.Fatalf("begin with a full session: %d %+v", st, a)
		}
		// Without a session at all.
		if st, a, _ := waBrowser(u).postJSON("/login/mfa/webauthn/begin", "x", map[string]any{}); st != http.StatusUnauthorized || a.Redirect != "/login" {
			t.Fatalf("begin without a session: %d %+v", st, a)
		}
		if n := countAudit(t, u, "webauthn.login"); n != 1 {
			t.Errorf("successful assertions audited: %d", n)
		}
		if n := countAudit(t, u, "webauthn.login_failed"); n != 1 {
			t.Errorf("failed assertions audited: %d", n)
		}
	})
}

func TestLoginOffersKeyAndTOTP(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u, _ := newWebAuthnUI(t, db)
		setup := waBrowser(u)
		setup.login("admin", adminPassword)
		waRegister(t, setup, webauthntest.New(waPublicURL), "")
		s, err := u.mfa.Setup(u.ctx, u.admin, u.admin.UserID)
		if err != nil {
			t.Fatal(err)
		}
		code, err := mfa.GenerateCode(s.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.mfa.Confirm(u.ctx, u.admin, u.admin.UserID, code); err != nil {
			t.Fatal(err)
		}
		b := waBrowser(u)
		b.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}})
		step := b.get("/login/mfa", false)
		wantStatus(t, "second-factor page", step, http.StatusOK)
		wantContains(t, "second-factor page", step, "Use a security key or passkey", `name="code"`, "recovery code")
		// The security-keys page warns no more about the only factor.
		p := setup.get("/account/security-keys", false)
		wantContains(t, "keys with TOTP", p, webauthn.DefaultName)
		if strings.Contains(p.body, "only second factor") {
			t.Error("deleting a key is called the only second factor although TOTP is on")
		}
	})
}

func TestSecurityKeysUnavailable(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db) // no WebAuthn: the public URL cannot be a relying party
		b := u.browser()
		b.login("admin", adminPassword)
		p := b.get("/account/security-keys", false)
		wantStatus(t, "security keys", p, http.StatusOK)
		wantContains(t, "security keys", p, "Security keys are not available")
		if strings.Contains(p.body, `id="webauthn-register"`) {
			t.Error("the add form is shown although security keys are unavailable")
		}
		if st, a, _ := b.postJSON("/account/security-keys/register/begin", b.csrf, map[string]any{}); st != http.StatusServiceUnavailable || a.Error == "" {
			t.Fatalf("begin: %d %+v", st, a)
		}
	})
}
