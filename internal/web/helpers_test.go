package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

const adminPassword = "correct horse battery staple"

// testUI is a UI server on a real database with the services core wires.
type testUI struct {
	t     *testing.T
	ctx   context.Context
	db    *store.DB
	srv   *Server
	ts    *httptest.Server
	ident *identity.Service
	vpn   *vpn.Service
	mfa   *mfa.Service
	admin core.Actor
}

func newTestUI(t *testing.T, db *store.DB) *testUI {
	t.Helper()
	ctx := t.Context()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	vpnSvc := vpn.New(db, nil)
	params := identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}
	ident := identity.New(db, inst, params, vpnSvc, nil)
	if _, err := ident.EnsureAdmin(ctx, adminPassword); err != nil {
		t.Fatal(err)
	}
	mfaSvc := mfa.New(db, inst, nil)
	ident.SetSecondFactor(mfaSvc)
	mailer := mail.New(db, nil)
	enrollSvc := enroll.New(db, inst, vpnSvc, mfaSvc, enroll.Options{PasswordParams: params, Mail: mailer})
	srv, err := New(Options{DB: db, Identity: ident, VPN: vpnSvc, Stats: stats.New(db), MFA: mfaSvc, Enroll: enrollSvc, Mail: mailer,
		Cluster: lease.NewRegistry(db, "", ""), Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	return &testUI{t: t, ctx: ctx, db: db, srv: srv, ts: ts, ident: ident, vpn: vpnSvc, mfa: mfaSvc,
		admin: core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}}
}

// testLog sends the server's log to the test's log (shown on failure).
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see where a page sends them.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func (u *testUI) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: u.t, base: u.ts.URL, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// page is one answer: status, Location header and body.
type page struct {
	status   int
	location string
	body     string
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]*)">`)

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	p := page{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(raw)}
	if m := csrfMeta.FindStringSubmatch(p.body); m != nil && m[1] != "" {
		b.csrf = m[1]
	}
	return p
}

// get fetches a page (htmx marks a fragment request).
func (b *browser) get(path string, htmx bool) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if htmx {
		req.Header.Set("HX-Request", "true")
	}
	return b.do(req)
}

// post submits a form with the CSRF token the last page carried (unless
// form sets csrf_token itself).
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf_token"]; !ok && b.csrf != "" {
		form.Set("csrf_token", b.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// login logs in with a password (no second factor) and loads the overview
// so the browser has the session's CSRF token.
func (b *browser) login(username, password string) {
	b.t.Helper()
	p := b.post("/login", url.Values{"username": {username}, "password": {password}, "next": {"/"}})
	if p.status != http.StatusSeeOther || p.location != "/" {
		b.t.Fatalf("login as %s: %d to %q\n%s", username, p.status, p.location, p.body)
	}
	if ov := b.get("/", false); ov.status != http.StatusOK {
		b.t.Fatalf("overview after login: %d", ov.status)
	}
}

func wantStatus(t *testing.T, what string, p page, status int) {
	t.Helper()
	if p.status != status {
		t.Fatalf("%s: status %d, want %d\n%s", what, p.status, status, p.body)
	}
}

func wantContains(t *testing.T, what string, p page, parts ...string) {
	t.Helper()
	for _, s := range parts {
		if !strings.Contains(p.body, s) {
			t.Fatalf("%s: page lacks %q\n%s", what, s, p.body)
		}
	}
}

func vpnLocation(name string) vpn.LocationInput {
	return vpn.LocationInput{Name: &name, Addresses: &[]string{"10.10.0.0/24"}, Endpoint: new("vpn.example.com")}
}

func vpnComponent(name, addr string) vpn.ComponentInput {
	return vpn.ComponentInput{Name: &name, ControlAddress: &addr}
}
