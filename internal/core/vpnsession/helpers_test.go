package vpnsession_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/vpnsession"
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

// totpVerifier is a CodeVerifier over secrets kept in the test, with replay
// protection (a code is accepted once per user).
type totpVerifier struct {
	mu      sync.Mutex
	secrets map[string]string
	used    map[string]bool
	calls   int
}

func newTOTPVerifier() *totpVerifier {
	return &totpVerifier{secrets: map[string]string{}, used: map[string]bool{}}
}

func (v *totpVerifier) enroll(t *testing.T, userID string) string {
	t.Helper()
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "ward-test", AccountName: userID})
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.secrets[userID] = key.Secret()
	v.mu.Unlock()
	return key.Secret()
}

func (v *totpVerifier) VerifyTOTP(_ context.Context, userID, code string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	secret, ok := v.secrets[userID]
	if !ok {
		return errors.New("no TOTP secret")
	}
	if !totp.Validate(code, secret) {
		return errors.New("wrong TOTP code") // a plain error: reported as invalid_code
	}
	if v.used[userID+"/"+code] {
		return &core.Error{Kind: core.KindInvalid, Code: "code_used", Field: "code", Message: "this code was already used"}
	}
	v.used[userID+"/"+code] = true
	return nil
}

func (v *totpVerifier) HasTOTP(_ context.Context, userID string) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.secrets[userID]
	return ok, nil
}

func code(t *testing.T, secret string) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mailer captures the codes it is asked to send.
type mailer struct {
	mu   sync.Mutex
	sent []vpnsession.CodeMail
	fail error
}

func (m *mailer) SendVPNCode(_ context.Context, cm vpnsession.CodeMail) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.sent = append(m.sent, cm)
	return nil
}

func (m *mailer) last(t *testing.T) vpnsession.CodeMail {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sent) == 0 {
		t.Fatal("no e-mail code sent")
	}
	return m.sent[len(m.sent)-1]
}

// fixture: an admin, a user alice with TOTP and a device, an MFA location
// and a plain one.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	db       *store.DB
	inst     core.Instance
	vpn      *vpn.Service
	ident    *identity.Service
	admin    core.Actor
	verifier *totpVerifier
	mailer   *mailer
	secure   vpn.Location // MFA internal
	plain    vpn.Location // no MFA
	alice    identity.User
	secret   string
	device   vpn.Device
}

const threshold = 180 // seconds, the MFA location's disconnect threshold

func newFixture(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	vpnSvc := vpn.New(db, nil)
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, vpnSvc, nil)
	if _, err := ident.EnsureAdmin(ctx, "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, inst: inst, vpn: vpnSvc, ident: ident, verifier: newTOTPVerifier(), mailer: &mailer{},
		admin: core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}}
	f.secure, err = vpnSvc.CreateLocation(ctx, f.admin, vpn.LocationInput{Name: ptr("secure"), Addresses: ptr([]string{"10.30.0.0/24"}),
		Endpoint: ptr("secure.example.com"), MFAMode: ptr(vpn.MFAInternal), DisconnectThreshold: ptr(threshold)})
	if err != nil {
		t.Fatal(err)
	}
	f.plain, err = vpnSvc.CreateLocation(ctx, f.admin, vpn.LocationInput{Name: ptr("plain"), Addresses: ptr([]string{"10.40.0.0/24"}),
		Endpoint: ptr("plain.example.com")})
	if err != nil {
		t.Fatal(err)
	}
	f.alice = f.user("alice")
	f.secret = f.verifier.enroll(t, f.alice.ID)
	f.device = f.newDevice("alice-laptop", f.alice.ID)
	return f
}

func (f *fixture) user(name string) identity.User {
	f.t.Helper()
	u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: name, Email: name + "@example.com"})
	if err != nil {
		f.t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

func (f *fixture) newDevice(name, userID string) vpn.Device {
	f.t.Helper()
	d, err := f.vpn.CreateDevice(f.ctx, f.admin, vpn.NewDevice{Name: name, GenerateKey: true, UserID: userID})
	if err != nil {
		f.t.Fatalf("create device %s: %v", name, err)
	}
	return d.Device
}

// service builds a vpnsession service on the fixture's VPN service with a
// short ack timeout.
func (f *fixture) service(edit func(*vpnsession.Options)) *vpnsession.Service {
	opts := vpnsession.Options{Verifier: f.verifier, Mailer: f.mailer, AckTimeout: 3 * time.Second, AckPoll: 5 * time.Millisecond}
	if edit != nil {
		edit(&opts)
	}
	return vpnsession.New(f.db, f.vpn, f.inst, opts)
}

func (f *fixture) revision(locationID string) int64 {
	f.t.Helper()
	var rev int64
	if err := f.db.QueryRowContext(f.ctx, `SELECT revision FROM locations WHERE id = $1`, locationID).Scan(&rev); err != nil {
		f.t.Fatal(err)
	}
	return rev
}

func (f *fixture) start(svc *vpnsession.Service, method string) vpnsession.Challenge {
	f.t.Helper()
	ch, err := svc.Start(f.ctx, f.secure.ID, f.device.PublicKey, method)
	if err != nil {
		f.t.Fatalf("start %s: %v", method, err)
	}
	return ch
}

// login runs an e-mail login that must succeed (without gateways, the
// session is authorized all the same).
func (f *fixture) login(svc *vpnsession.Service) vpnsession.Session {
	f.t.Helper()
	ch := f.start(svc, vpnsession.MethodEmail)
	sess, err := svc.Finish(f.ctx, ch.Token, f.mailer.last(f.t).Code)
	if err != nil && errCode(err) != vpnsession.CodeNoGatewayConnected {
		f.t.Fatalf("finish: %v", err)
	}
	return sess
}

// freshCode returns a TOTP code not used yet: after a use it waits for the
// next time step.
func (f *fixture) freshCode() string {
	f.t.Helper()
	for {
		c := code(f.t, f.secret)
		f.verifier.mu.Lock()
		used := f.verifier.used[f.alice.ID+"/"+c]
		f.verifier.mu.Unlock()
		if !used {
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// audits lists the audit entries whose action is or starts with action.
func (f *fixture) audits(action string) []core.AuditEntry {
	f.t.Helper()
	entries, _, err := core.ListAudit(f.ctx, f.db, core.AuditFilter{Limit: 10000})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []core.AuditEntry
	for _, e := range entries {
		if strings.HasPrefix(e.Action, action) {
			out = append(out, e)
		}
	}
	return out
}

func (f *fixture) handshake(gatewayID, key string, at int64) {
	f.t.Helper()
	if _, err := f.db.ExecContext(f.ctx, `INSERT INTO peer_handshakes (location_id, public_key, gateway_id, last_handshake, endpoint) VALUES ($1, $2, $3, $4, '')
		ON CONFLICT (location_id, public_key, gateway_id) DO UPDATE SET last_handshake = excluded.last_handshake`, f.secure.ID, key, gatewayID, at); err != nil {
		f.t.Fatal(err)
	}
}

// fakeGateway is a gateway of the secure location as core sees it through
// gateway_links, which applies updates like a real one when acking.
type fakeGateway struct {
	f       *fixture
	id      string
	coreID  string
	mu      sync.Mutex
	applied int64
	peers   map[string]vpn.Peer
}

func (f *fixture) gateway(name string, connected bool) *fakeGateway {
	f.t.Helper()
	g, err := f.vpn.CreateGateway(f.ctx, f.admin, f.secure.ID, vpn.ComponentInput{Name: ptr(name), ControlAddress: ptr(name + ".internal:51900")})
	if err != nil {
		f.t.Fatal(err)
	}
	fg := &fakeGateway{f: f, id: g.ID, coreID: "core-a", peers: map[string]vpn.Peer{}}
	fg.apply() // in sync at connect time
	if err := f.vpn.RecordLink(f.ctx, f.admin, vpn.LinkEvent{GatewayID: g.ID, CoreID: fg.coreID, Connected: connected, AppliedRevision: fg.revision()}, false); err != nil {
		f.t.Fatal(err)
	}
	return fg
}

func (g *fakeGateway) revision() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.applied
}

// apply fetches and applies what the gateway needs; it returns true when
// the revision moved.
func (g *fakeGateway) apply() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, err := g.f.vpn.GatewayUpdateSince(g.f.ctx, g.f.secure.ID, g.applied)
	if err != nil {
		panic(err)
	}
	if u.Revision == g.applied {
		return false
	}
	if u.Snapshot {
		g.peers = map[string]vpn.Peer{}
	}
	for _, p := range u.Peers {
		g.peers[p.PublicKey] = p
	}
	for _, k := range u.Removes {
		delete(g.peers, k)
	}
	g.applied = u.Revision
	return true
}

func (g *fakeGateway) peer(key string) (vpn.Peer, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.peers[key]
	return p, ok
}

// serve applies and acknowledges changes (woken by the hub, and polling like
// a link to another replica would) until the test ends.
func (g *fakeGateway) serve(t *testing.T, delay time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	wake, unsubscribe := g.f.vpn.Hub().Subscribe(g.f.secure.ID)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; unsubscribe() })
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-tick.C:
			}
			if !g.apply() {
				continue
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			if err := g.f.vpn.TouchLink(ctx, g.id, g.coreID, g.revision()); err != nil && ctx.Err() == nil {
				t.Errorf("ack: %v", err)
			}
		}
	}()
}

func checkPSK(t *testing.T, psk string) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(psk)
	if err != nil || len(raw) != 32 {
		t.Fatalf("preshared key %q: %d bytes, %v", psk, len(raw), err)
	}
}

func errCode(err error) string {
	if e, ok := core.AsError(err); ok {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return fmt.Sprintf("non-domain error: %v", err)
}

func checkCode(t *testing.T, what string, err error, want string) {
	t.Helper()
	if got := errCode(err); got != want {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, want)
	}
}

func sessionRow(t *testing.T, db *store.DB, id string) (state, psk, reason string, closedAt, connectedAt int64) {
	t.Helper()
	if err := db.QueryRowContext(context.Background(), `SELECT state, preshared_key, close_reason, closed_at, connected_at FROM vpn_sessions WHERE id = $1`, id).
		Scan(&state, &psk, &reason, &closedAt, &connectedAt); err != nil {
		t.Fatal(err)
	}
	return
}

func actions(entries []core.AuditEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Action
	}
	slices.Sort(out)
	return out
}
