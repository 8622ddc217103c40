package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
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

const (
	adminPassword = "Admin-password-1"
	userPassword  = "User-password-1"
	v1            = "/api/v1"
)

// cheapArgon keeps password hashing fast under -race; the cost parameters
// are not what these tests are about.
var cheapArgon = identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}

// fixture is one ward core (and optionally more replicas) on a fresh
// database, with the admin logged in.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	db    *store.DB
	inst  core.Instance
	vpn   *vpn.Service
	ident *identity.Service
	srv   *api.Server
	ts    *httptest.Server
	admin *client
}

func newFixture(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), db: db}
	var err error
	f.inst, err = core.EnsureInstance(f.ctx, db)
	if err != nil {
		t.Fatalf("ensure instance: %v", err)
	}
	f.srv, f.ts, f.ident = f.replica()
	f.vpn = vpn.New(db, nil) // the services are stateless over the database
	res, err := f.ident.EnsureAdmin(f.ctx, adminPassword)
	if err != nil {
		t.Fatalf("ensure admin: %v", err)
	}
	if !res.Created {
		t.Fatalf("ensure admin on a fresh database created nothing")
	}
	f.admin = f.login("admin", adminPassword)
	return f
}

// replica builds another core on the same database, as a second replica
// would: own services, own HTTP server, shared state only through the DB.
func (f *fixture) replica() (*api.Server, *httptest.Server, *identity.Service) {
	f.t.Helper()
	inst, err := core.EnsureInstance(f.ctx, f.db)
	if err != nil {
		f.t.Fatalf("ensure instance: %v", err)
	}
	vpnSvc := vpn.New(f.db, nil)
	ident := identity.New(f.db, inst, cheapArgon, vpnSvc, nil)
	srv := api.New(f.db, ident, vpnSvc, api.Options{Registry: prometheus.NewRegistry()})
	ts := httptest.NewServer(srv.Handler())
	f.t.Cleanup(ts.Close)
	return srv, ts, ident
}

// anon is a client without credentials.
func (f *fixture) anon() *client { return newClient(f.t, f.ts.URL) }

// login logs in through the API and returns a client holding the cookie and
// the CSRF token.
func (f *fixture) login(username, password string) *client {
	f.t.Helper()
	return loginAt(f.t, f.ts.URL, username, password)
}

func loginAt(t *testing.T, base, username, password string) *client {
	t.Helper()
	c := newClient(t, base)
	r := c.do("POST", v1+"/auth/login", map[string]string{"username": username, "password": password})
	if r.Status != http.StatusOK {
		t.Fatalf("login %s: status %d: %s", username, r.Status, r.Body)
	}
	var lr struct {
		User      identity.User `json:"user"`
		CSRFToken string        `json:"csrf_token"`
		ExpiresAt int64         `json:"expires_at"`
	}
	r.decode(t, &lr)
	if lr.CSRFToken == "" || lr.User.Username != username || lr.ExpiresAt <= store.Now() {
		t.Fatalf("login %s: unexpected response %s", username, r.Body)
	}
	c.csrf = lr.CSRFToken
	return c
}

// createUser creates an active user with userPassword in the given groups.
func (f *fixture) createUser(username string, groups ...string) identity.User {
	f.t.Helper()
	if groups == nil {
		groups = []string{}
	}
	var u identity.User
	f.admin.mustDo(http.StatusCreated, "POST", v1+"/users", map[string]any{
		"username": username, "email": username + "@example.com", "password": userPassword, "groups": groups,
	}).decode(f.t, &u)
	return u
}

func (f *fixture) createGroup(name string, members ...string) identity.Group {
	f.t.Helper()
	if members == nil {
		members = []string{}
	}
	var g identity.Group
	f.admin.mustDo(http.StatusCreated, "POST", v1+"/groups", map[string]any{"name": name, "members": members}).decode(f.t, &g)
	return g
}

// createLocation creates a location; body needs at least name, addresses
// and endpoint.
func (f *fixture) createLocation(body map[string]any) vpn.Location {
	f.t.Helper()
	var l vpn.Location
	f.admin.mustDo(http.StatusCreated, "POST", v1+"/locations", body).decode(f.t, &l)
	return l
}

// createdDevice is the response of POST /devices.
type createdDevice struct {
	vpn.Device
	PrivateKey string            `json:"private_key"`
	Configs    map[string]string `json:"configs"`
}

func (f *fixture) createDevice(c *client, body map[string]any) createdDevice {
	f.t.Helper()
	var d createdDevice
	c.mustDo(http.StatusCreated, "POST", v1+"/devices", body).decode(f.t, &d)
	return d
}

func (f *fixture) location(id string) vpn.Location {
	f.t.Helper()
	var l vpn.Location
	f.admin.mustDo(http.StatusOK, "GET", v1+"/locations/"+id, nil).decode(f.t, &l)
	return l
}

func (f *fixture) device(id string) vpn.Device {
	f.t.Helper()
	var d vpn.Device
	f.admin.mustDo(http.StatusOK, "GET", v1+"/devices/"+id, nil).decode(f.t, &d)
	return d
}

// count runs a COUNT(*) (or any single-integer) query.
func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRowContext(f.ctx, query, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// snapshotTables are the tables whose row counts must not move when a
// request fails.
var snapshotTables = []string{
	"users", "groups", "group_members", "locations", "location_groups", "location_changes", "location_change_peers",
	"devices", "device_addresses", "gateways", "gateway_links", "proxies", "api_tokens", "sessions", "login_attempts", "audit_log",
}

// snapshot captures everything a failed request could have half-written:
// row counts, location revisions, device keys, user flags and settings.
func (f *fixture) snapshot() map[string]string {
	f.t.Helper()
	out := map[string]string{}
	for _, tbl := range snapshotTables {
		out["count "+tbl] = fmt.Sprint(f.count("SELECT COUNT(*) FROM " + tbl))
	}
	rowsOf := func(key, query string) {
		rows, err := f.db.QueryContext(f.ctx, query)
		if err != nil {
			f.t.Fatalf("%s: %v", query, err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				f.t.Fatal(err)
			}
			lines = append(lines, a+"="+b)
		}
		if err := rows.Err(); err != nil {
			f.t.Fatal(err)
		}
		sort.Strings(lines)
		out[key] = strings.Join(lines, " ")
	}
	rowsOf("location revisions", `SELECT id, CAST(revision AS TEXT) FROM locations`)
	rowsOf("device keys", `SELECT id, name || '|' || public_key FROM devices`)
	rowsOf("device addresses", `SELECT device_id || '/' || location_id, address FROM device_addresses`)
	rowsOf("users", `SELECT username, email || '|' || CASE WHEN active THEN 'active' ELSE 'inactive' END || '|' || password_hash FROM users`)
	rowsOf("memberships", `SELECT group_id, user_id FROM group_members`)
	rowsOf("groups", `SELECT name, CASE WHEN is_admin THEN 'admin' ELSE 'plain' END FROM groups`)
	rowsOf("settings", `SELECT CAST(id AS TEXT), data FROM settings`)
	return out
}

// assertUnchanged fails when anything differs between two snapshots.
func assertUnchanged(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed:\n  before: %s\n  after:  %s", k, v, after[k])
		}
	}
}

// newPublicKey returns a fresh WireGuard public key.
func newPublicKey(t testing.TB) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

// client talks to the API like curl with a cookie file would.
type client struct {
	t      testing.TB
	base   string
	hc     *http.Client
	csrf   string // sent as X-CSRF-Token on state-changing requests
	bearer string // sent as Authorization: Bearer when set
}

func newClient(t testing.TB, base string) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: base, hc: &http.Client{Jar: jar}}
}

// withBearer returns a client that authenticates with an API token only.
func (c *client) withBearer(token string) *client {
	return &client{t: c.t, base: c.base, hc: &http.Client{}, bearer: token}
}

// reqOpt adjusts a request before it is sent.
type reqOpt func(*http.Request)

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func noHeader(k string) reqOpt { return func(r *http.Request) { r.Header.Del(k) } }

// response is a finished HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// try sends a request; body is nil, a string or []byte (sent verbatim) or a
// value to marshal as JSON. It is safe for concurrent use and never calls
// t.Fatal, so goroutines may use it.
func (c *client) try(method, path string, body any, opts ...reqOpt) (*response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.csrf != "" && method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// do is try that fails the test on transport errors.
func (c *client) do(method, path string, body any, opts ...reqOpt) *response {
	c.t.Helper()
	r, err := c.try(method, path, body, opts...)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// mustDo is do that also requires the status.
func (c *client) mustDo(status int, method, path string, body any, opts ...reqOpt) *response {
	c.t.Helper()
	r := c.do(method, path, body, opts...)
	if r.Status != status {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, status, r.Body)
	}
	return r
}

func (r *response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, r.Body, err)
	}
}

// apiErr is the error shape every failure carries.
type apiErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

// errorOf decodes the error body; ok is false when the body is not the
// documented error shape.
func (r *response) errorOf() (apiErr, bool) {
	var e struct {
		Error *apiErr `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == nil {
		return apiErr{}, false
	}
	return *e.Error, true
}

// expectError checks status, error code and (when field is not empty) the
// field, and that the body is JSON in the error shape with a message.
func expectError(t testing.TB, r *response, status int, code, field string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	e, ok := r.errorOf()
	if !ok {
		t.Errorf("body is not the error shape: %q", r.Body)
		return
	}
	if e.Code != code {
		t.Errorf("error code %q, want %q: %s", e.Code, code, r.Body)
	}
	if field != "" && e.Field != field {
		t.Errorf("error field %q, want %q: %s", e.Field, field, r.Body)
	}
	if e.Message == "" {
		t.Errorf("error without message: %s", r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
}

// wgConfig is a parsed wg-quick file: section -> key -> value. Comments are
// dropped.
type wgConfig map[string]map[string]string

func parseWGConfig(t testing.TB, text string) wgConfig {
	t.Helper()
	cfg := wgConfig{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if cfg[section] != nil {
				t.Fatalf("config line %d: section %s twice:\n%s", i+1, section, text)
			}
			cfg[section] = map[string]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("config line %d: %q is not key = value inside a section:\n%s", i+1, line, text)
			}
			cfg[section][strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cfg
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
