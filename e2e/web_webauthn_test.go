package e2e

// Acceptance test of security keys in the web UI (issue #7): headless
// chromium with a CDP virtual authenticator registers a key on
// My account → Security keys, and the next login asks for it after the
// password, against a real `ward core` whose public URL is
// http://localhost:PORT (localhost is a secure context for WebAuthn).

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// waStartCore runs ward core like startCore, but with the public URL on
// localhost (the WebAuthn relying party), and the admin password given.
func waStartCore(t *testing.T, password string) *coreProc {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		base := fmt.Sprintf("http://localhost:%d", port)
		args := []string{"core", "--data-dir", dataDir, "--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--public-url", base}
		p := &coreProc{cmd: exec.Command(wardBin, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, base: base, done: make(chan struct{})}
		p.cmd.Env = cleanEnv("WARD_ADMIN_PASSWORD=" + password)
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start ward core: %v", err)
		}
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.done)
		}()
		pid := p.cmd.Process.Pid
		t.Cleanup(func() {
			if !p.exited() {
				_ = p.cmd.Process.Kill() // our own child, by its PID
				<-p.done
			}
			if t.Failed() {
				t.Logf("ward core (pid %d, %s) stderr:\n%s", pid, base, p.stderr.String())
			}
		})
		err := p.waitReady(60 * time.Second)
		if err == nil {
			if strings.Contains(p.stderr.String(), "security keys (WebAuthn) are disabled") {
				t.Fatalf("core disabled security keys for public URL %s:\n%s", base, p.stderr.String())
			}
			return p
		}
		if attempt < 3 && p.exited() && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("port clash, retrying: %v", err)
			continue
		}
		t.Fatalf("ward core did not become ready: %v", err)
	}
}

// waUntil polls a JavaScript condition until it is true. Unlike evalJS it
// tolerates evaluation errors, which happen while the page navigates.
func waUntil(b *browser, what, cond string) {
	b.t.Helper()
	var last string
	err := waitFor(browserTimeout, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		if err != nil {
			last = err.Error()
			return err
		}
		if !ok {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		b.t.Fatalf("browser: %s did not happen within %v on %s (last error: %s; page error box: %q)", what, browserTimeout, b.location(), last,
			b.text(".error"))
	}
}

// waClick clicks the element sel (no navigation is awaited: the page's
// script acts on the click).
func waClick(b *browser, sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// TestWebAuthnBrowser: log in with the password, register a key on the
// security keys page, log out, log in again with the password and the
// key, and land on the overview.
func TestWebAuthnBrowser(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	const password = "WebAuthn-e2e-Admin-7"
	core := waStartCore(t, password)
	b := newBrowser(t, core.base)

	// A virtual authenticator on the tab: CTAP2, built in ("internal"),
	// with resident keys (passkeys) and user verification, and presence
	// confirmed without a touch.
	ctx, cancel := b.timeout()
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	va, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
		Options: &cdpwebauthn.VirtualAuthenticatorOptions{Protocol: cdpwebauthn.AuthenticatorProtocolCtap2, Ctap2version: cdpwebauthn.Ctap2versionCtap21,
			Transport: cdpwebauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true, IsUserVerified: true,
			AutomaticPresenceSimulation: true}})
	cancel()
	if err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}

	// 1. The password alone (no second factor yet) opens the overview.
	if st := b.login("admin", password); st != http.StatusOK || b.path() != "/" {
		t.Fatalf("password login = %d at %s, want the overview", st, b.path())
	}

	// 2. Register a key on My account → Security keys.
	if st := b.open("/account/security-keys"); st != http.StatusOK {
		t.Fatalf("GET /account/security-keys = %d", st)
	}
	b.waitText("main h1", "Security keys")
	b.fill("#key-name", "Virtual key")
	start := time.Now()
	waClick(b, "#webauthn-register-button")
	waUntil(b, "the key appearing in the list", `location.pathname === "/account/security-keys" && location.search.startsWith("?added=") &&
		!!document.querySelector('tr[data-key="Virtual key"]')`)
	t.Logf("key registered in %v", time.Since(start).Round(time.Millisecond))
	b.waitText(".notice", "“Virtual key” added")
	if last := b.text(`tr[data-key="Virtual key"] td:nth-of-type(3)`); last != "never" {
		t.Errorf("last used of a new key = %q, want never", last)
	}
	ctx, cancel = b.timeout()
	creds, err := chromedp.Call(ctx, cdpwebauthn.GetCredentials, cdpwebauthn.GetCredentialsParams{AuthenticatorID: va.AuthenticatorID})
	cancel()
	if err != nil || len(creds.Credentials) != 1 {
		t.Fatalf("virtual authenticator credentials: %+v %v", creds, err)
	}
	if c := creds.Credentials[0]; c.RpID != "localhost" || !c.IsResidentCredential {
		t.Errorf("credential rp %q resident %v, want a passkey for localhost", c.RpID, c.IsResidentCredential)
	}

	// 3. Log out.
	if st := b.submit(`form.logout button[type=submit]`); st != http.StatusOK || b.path() != "/login" {
		t.Fatalf("logout = %d at %s", st, b.path())
	}

	// 4. The password now leads to the second factor, which is the key.
	if st := b.login("admin", password); st != http.StatusOK || !strings.HasPrefix(b.path(), "/login/mfa") {
		t.Fatalf("password step = %d at %s, want /login/mfa", st, b.path())
	}
	b.waitText("#webauthn-login-button", "Use a security key or passkey")
	if b.has("#code") {
		t.Error("a user with only a security key is offered a TOTP code field")
	}
	start = time.Now()
	waClick(b, "#webauthn-login-button")
	waUntil(b, "the overview after the key", `location.pathname === "/" && (document.querySelector("main h1")?.textContent ?? "").includes("Overview")`)
	t.Logf("login with the key: overview shown %v after the click", time.Since(start).Round(time.Millisecond))
	if who := b.text("header .who"); who != "admin" {
		t.Errorf("header shows user %q, want admin", who)
	}

	// The key was used: the list says so, and the session is a full one.
	if st := b.open("/account/security-keys"); st != http.StatusOK {
		t.Fatalf("GET /account/security-keys after the login = %d at %s", st, b.path())
	}
	if last := b.text(`tr[data-key="Virtual key"] td:nth-of-type(3)`); last == "never" || last == "" {
		t.Errorf("last used after the login = %q", last)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors:\n%s", strings.Join(errs, "\n"))
	}
}
