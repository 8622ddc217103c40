package public_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/public"
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

func ptr[T any](v T) *T { return &v }

var cheap = identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	db     *store.DB
	ident  *identity.Service
	vpn    *vpn.Service
	mfa    *mfa.Service
	enroll *enroll.Service
	ts     *httptest.Server
	admin  core.Actor
	office vpn.Location
}

// newFixture builds core's services and the public handler on an
// httptest server. sender may be nil (no mail).
func newFixture(t *testing.T, db *store.DB, sender mail.Sender) *fixture {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, vpn: vpn.New(db, nil)}
	f.ident = identity.New(db, inst, cheap, f.vpn, nil)
	f.mfa = mfa.New(db, inst, nil)
	f.enroll = enroll.New(db, inst, f.vpn, f.mfa, enroll.Options{PasswordParams: cheap, Mail: sender})
	f.ts = httptest.NewServer(public.New(f.enroll, public.Options{}))
	t.Cleanup(f.ts.Close)
	t.Cleanup(f.enroll.WaitMail)
	if _, err := f.ident.EnsureAdmin(ctx, "Admin-password-1"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	f.admin = core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}
	f.office, err = f.vpn.CreateLocation(ctx, f.admin, vpn.LocationInput{Name: ptr("office"), Addresses: ptr([]string{"10.10.0.1/24"}),
		Endpoint: ptr("vpn.example.com"), ExtraEndpoints: ptr([]string{"vpn2.example.com"})})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) settings(p core.SettingsPatch) {
	f.t.Helper()
	if _, err := core.UpdateSettings(f.ctx, f.db, f.admin, p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pendingUser(name, firstName string) identity.User {
	f.t.Helper()
	u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: name, Email: name + "@example.com", FirstName: firstName, Active: ptr(false)})
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

func (f *fixture) start(userID string) enroll.Started {
	f.t.Helper()
	st, err := f.enroll.Start(f.ctx, f.admin, userID, enroll.StartInput{SendEmail: ptr(false)})
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

func (f *fixture) count(q string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRowContext(f.ctx, q, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// errCode is the code of a JSON error body.
func (r resp) errCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.Message == "" {
		t.Fatalf("error without message: %s", r.body)
	}
	return e.Error.Code
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (f *fixture) do(method, path, contentType string, body []byte, hdr map[string]string) resp {
	f.t.Helper()
	base := f.ts.URL
	if strings.HasPrefix(path, "http") {
		base = ""
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: string(raw)}
}

// api calls the JSON API; body nil sends none.
func (f *fixture) api(method, path string, body any, hdr map[string]string) resp {
	f.t.Helper()
	var raw []byte
	ct := ""
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			f.t.Fatal(err)
		}
		ct = "application/json"
	}
	return f.do(method, public.Prefix+path, ct, raw, hdr)
}

func (f *fixture) form(path string, values url.Values) resp {
	f.t.Helper()
	return f.do("POST", path, "application/x-www-form-urlencoded", []byte(values.Encode()), nil)
}

func want(t *testing.T, what string, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %.400s", what, r.status, status, r.body)
	}
}

func newKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		xff    []string
		remote string
		want   string
	}{
		{"no header", nil, "192.0.2.1:5555", "192.0.2.1"},
		{"one hop", []string{"203.0.113.9"}, "10.0.0.1:1", "203.0.113.9"},
		{"a forged entry before the proxy's", []string{"6.6.6.6, 203.0.113.9"}, "10.0.0.1:1", "203.0.113.9"},
		{"several headers: the last counts", []string{"6.6.6.6", "2001:db8::7"}, "10.0.0.1:1", "2001:db8::7"},
		{"garbage falls back to the connection", []string{"not-an-ip"}, "10.0.0.1:1", "10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := public.ClientIP(r); got != tc.want {
				t.Fatalf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestJSONEnrollment(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db, nil)
		u := f.pendingUser("uma", "Uma")
		st := f.start(u.ID)
		p := "/enrollment/" + st.Token
		xff := map[string]string{"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}

		r := f.api("GET", p, nil, nil)
		want(t, "info", r, 200)
		for k, v := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
			"Content-Type": "application/json"} {
			if r.header.Get(k) != v {
				t.Errorf("header %s = %q, want %q", k, r.header.Get(k), v)
			}
		}
		var info enroll.Info
		r.json(t, &info)
		if info.Username != "uma" || strings.Join(info.Remaining, ",") != "password" {
			t.Fatalf("info = %+v", info)
		}
		if r := f.api("GET", "/enrollment/nope", nil, nil); r.status != 404 || r.errCode(t) != "invalid_token" {
			t.Fatalf("unknown token: %d %s", r.status, r.body)
		}

		// Bodies are JSON only, closed, bounded.
		want(t, "text body", f.do("POST", public.Prefix+p+"/password", "text/plain", []byte(`{"password":"x"}`), nil), 415)
		if r := f.api("POST", p+"/password", map[string]any{"password": "Uma-password-1", "extra": 1}, nil); r.status != 400 || r.errCode(t) != "unknown_field" {
			t.Fatalf("unknown field: %d %s", r.status, r.body)
		}
		if r := f.api("POST", p+"/password", map[string]any{"password": "short"}, nil); r.status != 400 || r.errCode(t) != "weak_password" {
			t.Fatalf("weak: %d %s", r.status, r.body)
		}
		want(t, "password", f.api("POST", p+"/password", map[string]any{"password": "Uma-password-1"}, xff), 204)

		r = f.api("POST", p+"/totp", nil, xff)
		want(t, "totp setup", r, 200)
		var setup mfa.Setup
		r.json(t, &setup)
		if r := f.api("POST", p+"/totp/confirm", map[string]any{"code": "000000"}, nil); r.status != 400 || r.errCode(t) != "invalid_code" {
			t.Fatalf("wrong code: %d %s", r.status, r.body)
		}
		code, _ := mfa.GenerateCode(setup.Secret, time.Now())
		r = f.api("POST", p+"/totp/confirm", map[string]any{"code": code}, xff)
		want(t, "totp confirm", r, 200)
		var rc mfa.RecoveryCodes
		r.json(t, &rc)
		if len(rc.Codes) != 10 {
			t.Fatalf("codes: %s", r.body)
		}

		before := f.count(`SELECT COUNT(*) FROM devices`)
		if r := f.api("POST", p+"/device", map[string]any{"name": "laptop", "public_key": "bogus"}, nil); r.status != 400 || r.errCode(t) != "invalid_public_key" {
			t.Fatalf("bad key: %d %s", r.status, r.body)
		}
		if f.count(`SELECT COUNT(*) FROM devices`) != before || f.count(`SELECT COUNT(*) FROM client_tokens`) != 0 {
			t.Fatal("a failed device step wrote something")
		}
		key := newKey(t)
		r = f.api("POST", p+"/device", map[string]any{"name": "laptop", "public_key": key}, xff)
		want(t, "device", r, 201)
		var reg enroll.Registered
		r.json(t, &reg)
		if reg.Device.PublicKey != key || len(reg.Locations) != 1 || reg.ClientToken == "" ||
			strings.Join(reg.Locations[0].Endpoints, ",") != "vpn.example.com:51820,vpn2.example.com:51820" {
			t.Fatalf("registered: %s", r.body)
		}
		if strings.Contains(r.body, "PrivateKey = ") && !strings.Contains(r.body, "PrivateKey = "+vpn.PrivateKeyPlaceholder) {
			t.Fatal("a private key other than the placeholder in the response")
		}
		if r := f.api("POST", p+"/device", map[string]any{"name": "phone", "public_key": newKey(t)}, nil); r.status != 409 || r.errCode(t) != "device_registered" {
			t.Fatalf("second device: %d %s", r.status, r.body)
		}

		r = f.api("POST", p+"/complete", nil, xff)
		want(t, "complete", r, 200)
		var done enroll.Completed
		r.json(t, &done)
		if !done.Activated {
			t.Fatalf("completed: %s", r.body)
		}
		if r := f.api("GET", p, nil, nil); r.status != 404 || r.errCode(t) != "token_used" {
			t.Fatalf("info after completion: %d %s", r.status, r.body)
		}
		// The client IP of every step is the proxy's last X-Forwarded-For entry.
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE target_id IN ($1, $2) AND ip = '203.0.113.9'`, u.ID, reg.Device.ID); n < 5 {
			t.Fatalf("%d audit entries carry the client IP, want at least 5", n)
		}
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE ip = '6.6.6.6'`); n != 0 {
			t.Fatal("a forged X-Forwarded-For entry reached the audit log")
		}

		// Client sync.
		r = f.api("POST", "/client/sync", nil, nil)
		if r.status != 401 || r.errCode(t) != "unauthenticated" || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("sync without a token: %d %s", r.status, r.body)
		}
		if r := f.api("POST", "/client/sync", nil, map[string]string{"Authorization": "Bearer wardc_wrong"}); r.status != 401 || r.errCode(t) != "invalid_client_token" {
			t.Fatalf("sync with a wrong token: %d %s", r.status, r.body)
		}
		r = f.api("POST", "/client/sync", nil, map[string]string{"Authorization": "Bearer " + reg.ClientToken})
		want(t, "sync", r, 200)
		var sync enroll.SyncResult
		r.json(t, &sync)
		if sync.Device.ID != reg.Device.ID || len(sync.Locations) != 1 || sync.Locations[0].LocationID != f.office.ID || sync.Locations[0].Revision == 0 {
			t.Fatalf("sync: %s", r.body)
		}

		// Unknown endpoints answer in the JSON error shape.
		if r := f.api("GET", "/nothing", nil, nil); r.status != 404 || r.errCode(t) != "not_found" {
			t.Fatalf("unknown endpoint: %d %s", r.status, r.body)
		}
		if r := f.api("DELETE", p, nil, nil); r.status != 404 || r.errCode(t) != "not_found" {
			t.Fatalf("wrong method: %d %s", r.status, r.body)
		}
	})
}

func TestJSONPasswordReset(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		box := &outbox{}
		f := newFixture(t, db, box)
		f.settings(core.SettingsPatch{SMTPHost: ptr("smtp.example.com"), SMTPFrom: ptr("ward@example.com"), ProxyPublicURL: ptr(f.ts.URL)})
		u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: "vic", Email: "vic@example.com", Password: "Vic-password-1"})
		if err != nil {
			t.Fatal(err)
		}
		sess, err := f.ident.Login(f.ctx, "vic", "Vic-password-1", "", "")
		if err != nil {
			t.Fatal(err)
		}
		// The same answer, byte for byte, for an unknown and a known account.
		unknown := f.api("POST", "/password-reset", map[string]any{"login": "nobody@example.com"}, nil)
		known := f.api("POST", "/password-reset", map[string]any{"login": "VIC@example.com"}, nil)
		want(t, "unknown", unknown, 202)
		if known.status != unknown.status || known.body != unknown.body {
			t.Fatalf("answers differ: %d %q vs %d %q", known.status, known.body, unknown.status, unknown.body)
		}
		if r := f.api("POST", "/password-reset", map[string]any{"login": ""}, nil); r.status != 400 {
			t.Fatalf("empty login: %d", r.status)
		}
		f.enroll.WaitMail()
		msgs := box.to("vic@example.com")
		if len(msgs) != 1 {
			t.Fatalf("mails: %+v", msgs)
		}
		link := regexp.MustCompile(`https?://\S+/reset/(\S+)`).FindStringSubmatch(msgs[0].Text)
		if link == nil || !strings.HasPrefix(link[0], f.ts.URL+"/reset/") {
			t.Fatalf("no reset link in %q", msgs[0].Text)
		}
		token := link[1]
		r := f.api("GET", "/password-reset/"+token, nil, nil)
		want(t, "reset info", r, 200)
		if !strings.Contains(r.body, `"username":"vic"`) {
			t.Fatalf("reset info: %s", r.body)
		}
		if r := f.api("POST", "/password-reset/"+token, map[string]any{"password": "weak"}, nil); r.status != 400 || r.errCode(t) != "weak_password" {
			t.Fatalf("weak: %d %s", r.status, r.body)
		}
		want(t, "reset", f.api("POST", "/password-reset/"+token, map[string]any{"password": "Vic-new-password-2"}, nil), 204)
		if r := f.api("POST", "/password-reset/"+token, map[string]any{"password": "Vic-new-password-3"}, nil); r.status != 404 || r.errCode(t) != "token_used" {
			t.Fatalf("second use: %d %s", r.status, r.body)
		}
		if _, err := f.ident.Authenticate(f.ctx, sess.Token); err == nil {
			t.Fatal("the session survived the reset")
		}
		if _, err := f.ident.Login(f.ctx, "vic", "Vic-new-password-2", "", ""); err != nil {
			t.Fatal(err)
		}
		if f.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'password_reset.complete' AND target_id = $1`, u.ID) != 1 {
			t.Fatal("reset not audited")
		}
	})
}

// outbox is a mail.Sender that keeps what it is given.
type outbox struct {
	mu   sync.Mutex
	msgs []mail.Message
}

func (o *outbox) Configured(context.Context) (bool, error) { return true, nil }

func (o *outbox) Send(_ context.Context, m mail.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, m)
	return nil
}

func (o *outbox) to(addr string) []mail.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []mail.Message
	for _, m := range o.msgs {
		if m.To == addr {
			out = append(out, m)
		}
	}
	return out
}
