package enroll_test

import (
	"context"
	"errors"
	"os"
	"strconv"
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

// outbox is a mail.Sender that keeps what it is given.
type outbox struct {
	mu   sync.Mutex
	msgs []mail.Message
	fail error
}

func (o *outbox) Configured(context.Context) (bool, error) { return true, nil }

func (o *outbox) Send(_ context.Context, m mail.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return o.fail
	}
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

type clock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.d) }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	db     *store.DB
	ident  *identity.Service
	vpn    *vpn.Service
	mfa    *mfa.Service
	svc    *enroll.Service
	mail   *outbox
	clock  *clock
	admin  core.Actor
	office vpn.Location
	lab    vpn.Location
}

const proxyURL = "https://vpn.example.com"

var cheap = identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}

func newFixture(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, vpn: vpn.New(db, nil), mail: &outbox{}, clock: &clock{}}
	f.ident = identity.New(db, inst, cheap, f.vpn, nil)
	f.mfa = mfa.New(db, inst, nil)
	f.mfa.SetClock(f.clock.now)
	f.svc = enroll.New(db, inst, f.vpn, f.mfa, enroll.Options{PasswordParams: cheap, Mail: f.mail})
	f.svc.SetClock(f.clock.now)
	if _, err := f.ident.EnsureAdmin(ctx, "Admin-password-1"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	f.admin = core.Actor{UserID: adminID, Username: "admin", IsAdmin: true, IP: "192.0.2.1"}
	f.settings(core.SettingsPatch{SMTPHost: ptr("smtp.example.com"), SMTPFrom: ptr("ward <ward@example.com>"), ProxyPublicURL: ptr(proxyURL + "/")})
	if _, err := f.ident.CreateGroup(ctx, f.admin, identity.NewGroup{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	f.office, err = f.vpn.CreateLocation(ctx, f.admin, vpn.LocationInput{Name: ptr("office"), Addresses: ptr([]string{"10.10.0.1/24", "fd10::1/64"}),
		Endpoint: ptr("vpn.example.com"), ExtraEndpoints: ptr([]string{"vpn2.example.com:51999", "192.0.2.10"}), DNS: ptr([]string{"10.10.0.1", "corp.example"})})
	if err != nil {
		t.Fatal(err)
	}
	f.lab, err = f.vpn.CreateLocation(ctx, f.admin, vpn.LocationInput{Name: ptr("lab"), Addresses: ptr([]string{"10.20.0.1/24"}),
		Endpoint: ptr("lab.example.com:51830"), AllowedGroups: ptr([]string{"lab"}), AllowedIPs: ptr([]string{"10.20.0.0/16"}), MTU: ptr(1380), Keepalive: ptr(0)})
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

// newUser creates a user; without a password and inactive when pending.
func (f *fixture) newUser(name string, pending bool, groups ...string) identity.User {
	f.t.Helper()
	in := identity.NewUser{Username: name, Email: name + "@example.com", FirstName: strings.ToUpper(name[:1]) + name[1:], Groups: groups}
	if pending {
		in.Active = ptr(false)
	} else {
		in.Password = "User-password-1"
	}
	u, err := f.ident.CreateUser(f.ctx, f.admin, in)
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

func (f *fixture) start(userID, kind string) enroll.Started {
	f.t.Helper()
	st, err := f.svc.Start(f.ctx, f.admin, userID, enroll.StartInput{Kind: kind})
	if err != nil {
		f.t.Fatalf("start %s: %v", kind, err)
	}
	return st
}

func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRowContext(f.ctx, query, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (f *fixture) audited(action, target string) int {
	return f.count(`SELECT COUNT(*) FROM audit_log WHERE action = $1 AND target_id = $2`, action, target)
}

func newKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
		return
	}
	de, ok := core.AsError(err)
	if !ok || de.Code != code {
		t.Fatalf("%s: error %v, want code %s", what, err, code)
	}
}

func TestEnrollmentFlow(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.newUser("nina", true, "lab")

		if _, err := f.svc.Start(f.ctx, core.Actor{UserID: u.ID, Username: u.Username}, u.ID, enroll.StartInput{}); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("start by a non-admin: %v", err)
		}
		_, err := f.svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{Kind: "bogus"})
		wantCode(t, "start with a bad kind", err, "invalid_kind")
		_, err = f.svc.Start(f.ctx, f.admin, "missing", enroll.StartInput{})
		wantCode(t, "start for an unknown user", err, "not_found")

		started := f.start(u.ID, "")
		if started.Kind != enroll.KindEnrollment || started.URL != proxyURL+"/enroll/"+started.Token || len(started.Token) < 40 || !started.EmailSent ||
			started.ExpiresAt < time.Now().Add(23*time.Hour).UnixMilli() || started.ExpiresAt > time.Now().Add(25*time.Hour).UnixMilli() {
			t.Fatalf("started = %+v", started)
		}
		msgs := f.mail.to("nina@example.com")
		if len(msgs) != 1 || !strings.Contains(msgs[0].Text, started.URL) || !strings.Contains(msgs[0].Subject, "set up your account") ||
			!strings.Contains(msgs[0].Text, "Hello Nina") {
			t.Fatalf("enrollment mail: %+v", msgs)
		}
		// Only the HMAC of the token is stored.
		if f.count(`SELECT COUNT(*) FROM onboarding_tokens WHERE token_hash = $1 OR token_hash LIKE $2`, started.Token, "%"+started.Token[:20]+"%") != 0 {
			t.Fatal("the token is stored in clear")
		}

		info, err := f.svc.Info(f.ctx, started.Token)
		if err != nil {
			t.Fatal(err)
		}
		if info.Username != "nina" || info.FirstName != "Nina" || info.Kind != enroll.KindEnrollment || info.InstanceName != "ward" ||
			strings.Join(info.Remaining, ",") != "password" || info.Step("password").Done || info.Step("device").Available || !info.Step("totp").Available {
			t.Fatalf("info = %+v", info)
		}
		_, err = f.svc.RegisterDevice(f.ctx, started.Token, enroll.DeviceInput{Name: "laptop", PublicKey: newKey(t)}, "203.0.113.5")
		wantCode(t, "device before password", err, "password_required")
		wantCode(t, "complete before password", func() error { _, err := f.svc.Complete(f.ctx, started.Token, ""); return err }(), "steps_remaining")

		wantCode(t, "weak password", f.svc.SetPassword(f.ctx, started.Token, "short", ""), "weak_password")
		wantCode(t, "one character class", f.svc.SetPassword(f.ctx, started.Token, "aaaaaaaaaaaaaaaa", ""), "weak_password")
		wantCode(t, "password", f.svc.SetPassword(f.ctx, started.Token, "Nina-password-1", "203.0.113.5"), "")
		info, _ = f.svc.Info(f.ctx, started.Token)
		if len(info.Remaining) != 0 || !info.Step("password").Done || !info.Step("device").Available {
			t.Fatalf("info after password = %+v", info)
		}

		setup, err := f.svc.SetupTOTP(f.ctx, started.Token, "203.0.113.5")
		if err != nil {
			t.Fatal(err)
		}
		code, _ := mfa.GenerateCode(setup.Secret, f.clock.now())
		_, err = f.svc.ConfirmTOTP(f.ctx, started.Token, "000000", "")
		wantCode(t, "confirm with a wrong code", err, "invalid_code")
		rc, err := f.svc.ConfirmTOTP(f.ctx, started.Token, code, "203.0.113.5")
		if err != nil || len(rc.Codes) != 10 {
			t.Fatalf("confirm totp: %v %v", rc, err)
		}
		if has, _ := f.mfa.HasTOTP(f.ctx, u.ID); !has {
			t.Fatal("TOTP not enabled")
		}

		_, err = f.svc.Sync(f.ctx, "wardc_nothing")
		wantCode(t, "sync with an unknown token", err, "invalid_client_token")

		key := newKey(t)
		reg, err := f.svc.RegisterDevice(f.ctx, started.Token, enroll.DeviceInput{Name: "laptop", PublicKey: key}, "203.0.113.5")
		if err != nil {
			t.Fatal(err)
		}
		if reg.Device.PublicKey != key || reg.Device.UserID != u.ID || len(reg.Device.Addresses) != 3 || !strings.HasPrefix(reg.ClientToken, "wardc_") {
			t.Fatalf("registered = %+v", reg)
		}
		if len(reg.Locations) != 2 || reg.Locations[0].Name != "lab" || reg.Locations[1].Name != "office" {
			t.Fatalf("locations = %+v", reg.Locations)
		}
		for _, l := range reg.Locations {
			if !strings.Contains(l.Config, "PrivateKey = "+vpn.PrivateKeyPlaceholder) || !strings.Contains(l.Config, "PublicKey = "+l.PublicKey) {
				t.Fatalf("config of %s:\n%s", l.Name, l.Config)
			}
		}
		_, err = f.svc.RegisterDevice(f.ctx, started.Token, enroll.DeviceInput{Name: "second", PublicKey: newKey(t)}, "")
		wantCode(t, "a second device on one link", err, "device_registered")
		info, _ = f.svc.Info(f.ctx, started.Token)
		if info.Device == nil || info.Device.ID != reg.Device.ID || !info.Step("device").Done || info.Step("device").Available {
			t.Fatalf("info after device = %+v", info)
		}

		// The user is not active yet: no sync.
		_, err = f.svc.Sync(f.ctx, reg.ClientToken)
		wantCode(t, "sync before completion", err, "account_disabled")
		if _, err := f.ident.Login(f.ctx, "nina", "Nina-password-1", "", ""); err == nil {
			t.Fatal("an inactive user could log in")
		}

		done, err := f.svc.Complete(f.ctx, started.Token, "203.0.113.5")
		if err != nil {
			t.Fatal(err)
		}
		if !done.Activated || done.Username != "nina" || done.DeviceID != reg.Device.ID {
			t.Fatalf("completed = %+v", done)
		}
		_, err = f.svc.Complete(f.ctx, started.Token, "")
		wantCode(t, "complete twice", err, "token_used")
		_, err = f.svc.Info(f.ctx, started.Token)
		wantCode(t, "info after completion", err, "token_used")
		wantCode(t, "password after completion", f.svc.SetPassword(f.ctx, started.Token, "Other-password-2", ""), "token_used")
		if _, err := f.ident.Login(f.ctx, "nina", "Nina-password-1", "", ""); err != nil {
			t.Fatalf("login after enrollment: %v", err)
		}

		// The device is a peer of its locations' gateways now.
		upd, err := f.vpn.GatewayUpdateSince(f.ctx, f.office.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range upd.Peers {
			found = found || p.PublicKey == key
		}
		if !found {
			t.Fatalf("the enrolled device is not a peer of office: %+v", upd.Peers)
		}

		sync, err := f.svc.Sync(f.ctx, reg.ClientToken)
		if err != nil {
			t.Fatal(err)
		}
		if sync.Device.ID != reg.Device.ID || len(sync.Locations) != 2 {
			t.Fatalf("sync = %+v", sync)
		}
		office := f.location(sync, "office")
		lab := f.location(sync, "lab")
		officeNow, _ := f.vpn.GetLocation(f.ctx, f.admin, f.office.ID)
		if strings.Join(office.Endpoints, " ") != "vpn.example.com:51820 vpn2.example.com:51999 192.0.2.10:51820" ||
			strings.Join(office.AllowedIPs, " ") != "10.10.0.0/24 fd10::/64" || strings.Join(office.DNS, " ") != "10.10.0.1 corp.example" ||
			office.MTU != 1420 || office.Keepalive != 25 || office.MFAMode != "disabled" || office.PublicKey != f.office.PublicKey ||
			office.Revision != officeNow.Revision || len(office.Addresses) != 2 || !strings.HasSuffix(office.Addresses[0], "/32") ||
			!strings.HasSuffix(office.Addresses[1], "/128") {
			t.Fatalf("office config = %+v", office)
		}
		if strings.Join(lab.Endpoints, " ") != "lab.example.com:51830" || strings.Join(lab.AllowedIPs, " ") != "10.20.0.0/16" ||
			len(lab.DNS) != 0 || lab.DNS == nil || lab.MTU != 1380 || lab.Keepalive != 0 || len(lab.Addresses) != 1 {
			t.Fatalf("lab config = %+v", lab)
		}

		// Changes reach the client on its next sync: a changed location
		// (new revision, endpoints), and a removed one.
		if _, err := f.vpn.UpdateLocation(f.ctx, f.admin, f.office.ID, vpn.LocationInput{ExtraEndpoints: ptr([]string{}), MTU: ptr(1400)}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, u.ID, identity.UserPatch{Groups: ptr([]string{})}); err != nil {
			t.Fatal(err)
		}
		sync, err = f.svc.Sync(f.ctx, reg.ClientToken)
		if err != nil {
			t.Fatal(err)
		}
		if len(sync.Locations) != 1 || sync.Locations[0].Name != "office" || sync.Locations[0].Revision <= office.Revision ||
			strings.Join(sync.Locations[0].Endpoints, " ") != "vpn.example.com:51820" || sync.Locations[0].MTU != 1400 {
			t.Fatalf("sync after changes = %+v", sync.Locations)
		}

		// Deactivated: refused; the deleted device's token is dead.
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, u.ID, identity.UserPatch{Active: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Sync(f.ctx, reg.ClientToken)
		wantCode(t, "sync of a deactivated user", err, "account_disabled")
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, u.ID, identity.UserPatch{Active: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if err := f.vpn.DeleteDevice(f.ctx, f.admin, reg.Device.ID); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Sync(f.ctx, reg.ClientToken)
		wantCode(t, "sync of a deleted device", err, "invalid_client_token")
		if f.count(`SELECT COUNT(*) FROM client_tokens`) != 0 {
			t.Fatal("client token survives its device")
		}

		for _, action := range []string{"enrollment.start", "enrollment.email", "enrollment.password_set", "mfa.totp_setup", "mfa.totp_enable", "enrollment.complete"} {
			if f.audited(action, u.ID) != 1 {
				t.Errorf("%s audited %d times, want once", action, f.audited(action, u.ID))
			}
		}
		if f.audited("enrollment.device", reg.Device.ID) != 1 {
			t.Error("enrollment.device not audited")
		}
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE action LIKE 'enrollment.%' AND ip = '203.0.113.5'`); n != 3 {
			t.Errorf("%d enrollment entries carry the client IP, want 3 (password, device, complete)", n)
		}
	})
}

func (f *fixture) location(s enroll.SyncResult, name string) enroll.LocationConfig {
	f.t.Helper()
	for _, l := range s.Locations {
		if l.Name == name {
			return l
		}
	}
	f.t.Fatalf("no location %s in %+v", name, s.Locations)
	return enroll.LocationConfig{}
}

// TestTokens checks the life of a link: unknown, expired, used, replaced,
// and used for the wrong flow.
func TestTokens(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		a := f.newUser("anna", true)
		first := f.start(a.ID, "")
		second := f.start(a.ID, "")

		b := f.newUser("bert", true)
		expiring := f.start(b.ID, "")
		c := f.newUser("cleo", false)
		if err := f.svc.RequestReset(f.ctx, "cleo", ""); err != nil {
			t.Fatal(err)
		}
		f.svc.WaitMail()
		resetMails := f.mail.to("cleo@example.com")
		if len(resetMails) != 1 {
			t.Fatalf("reset mails: %+v", resetMails)
		}
		resetToken := resetMails[0].Text[strings.Index(resetMails[0].Text, "/reset/")+7:]
		resetToken = resetToken[:strings.IndexAny(resetToken, "\n ")]

		for _, tc := range []struct {
			name, token, code string
		}{
			{"empty", "", "invalid_token"},
			{"unknown", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "invalid_token"},
			{"too long", strings.Repeat("a", 200), "invalid_token"},
			{"replaced by a newer link", first.Token, "token_used"},
			{"the newer link", second.Token, ""},
			{"a reset link on the enrollment flow", resetToken, "invalid_token"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := f.svc.Info(f.ctx, tc.token)
				wantCode(t, "info", err, tc.code)
				if tc.code != "" {
					wantCode(t, "set password", f.svc.SetPassword(f.ctx, tc.token, "Good-password-1", ""), tc.code)
					_, err = f.svc.SetupTOTP(f.ctx, tc.token, "")
					wantCode(t, "totp", err, tc.code)
					_, err = f.svc.RegisterDevice(f.ctx, tc.token, enroll.DeviceInput{Name: "x", PublicKey: newKey(t)}, "")
					wantCode(t, "device", err, tc.code)
					_, err = f.svc.Complete(f.ctx, tc.token, "")
					wantCode(t, "complete", err, tc.code)
				}
			})
		}
		// An enrollment link on the reset flow.
		_, err := f.svc.ResetInfo(f.ctx, second.Token)
		wantCode(t, "enrollment link on reset", err, "invalid_token")
		wantCode(t, "enrollment link completing a reset", f.svc.CompleteReset(f.ctx, second.Token, "Good-password-1", ""), "invalid_token")

		// Expiry, with the lifetime from the settings.
		f.settings(core.SettingsPatch{EnrollmentTokenLifetimeSeconds: ptr(3600)})
		short := f.start(b.ID, "")
		if d := short.ExpiresAt - f.clock.now().UnixMilli(); d < 3590_000 || d > 3600_000 {
			t.Fatalf("lifetime %d ms, want one hour", d)
		}
		_, err = f.svc.Info(f.ctx, expiring.Token)
		wantCode(t, "replaced link", err, "token_used")
		f.clock.add(61 * time.Minute)
		_, err = f.svc.Info(f.ctx, short.Token)
		wantCode(t, "expired", err, "token_expired")
		wantCode(t, "password on an expired link", f.svc.SetPassword(f.ctx, short.Token, "Good-password-1", ""), "token_expired")

		// What may be started for whom.
		_, err = f.svc.Start(f.ctx, f.admin, c.ID, enroll.StartInput{Kind: enroll.KindEnrollment})
		wantCode(t, "enrollment of a user with a password", err, "already_enrolled")
		_, err = f.svc.Start(f.ctx, f.admin, a.ID, enroll.StartInput{Kind: enroll.KindNewClient})
		wantCode(t, "new client for an inactive user", err, "user_inactive")
		f.settings(core.SettingsPatch{UsersCanManageDevices: ptr(false)})
		_, err = f.svc.Start(f.ctx, f.admin, c.ID, enroll.StartInput{Kind: enroll.KindNewClient})
		wantCode(t, "new client while users may not manage devices", err, "device_management_disabled")
	})
}

func TestStartMail(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.newUser("mia", true)
		st, err := f.svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{SendEmail: ptr(false)})
		if err != nil || st.EmailSent || st.EmailError != "" || len(f.mail.to("mia@example.com")) != 0 {
			t.Fatalf("send_email=false: %+v %v", st, err)
		}
		f.mail.fail = errors.New("smtp: 550 mailbox unavailable")
		st, err = f.svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{})
		if err != nil || st.EmailSent || !strings.Contains(st.EmailError, "550") || st.Token == "" {
			t.Fatalf("failing SMTP: %+v %v", st, err)
		}
		if _, err := f.svc.Info(f.ctx, st.Token); err != nil {
			t.Fatalf("the link must work although the mail failed: %v", err)
		}
		f.mail.fail = nil
		f.settings(core.SettingsPatch{SMTPHost: ptr("")})
		st, err = f.svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{})
		if err != nil || st.EmailSent || !strings.Contains(st.EmailError, "SMTP") {
			t.Fatalf("no SMTP: %+v %v", st, err)
		}
		f.settings(core.SettingsPatch{SMTPHost: ptr("smtp.example.com"), ProxyPublicURL: ptr("")})
		st, err = f.svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{})
		if err != nil || st.EmailSent || !strings.Contains(st.EmailError, "proxy_public_url") || st.URL != "/enroll/"+st.Token {
			t.Fatalf("no proxy URL: %+v %v", st, err)
		}
		// With a fallback base (core's public URL) links are absolute.
		inst, _ := core.EnsureInstance(f.ctx, db)
		svc := enroll.New(db, inst, f.vpn, f.mfa, enroll.Options{PasswordParams: cheap, Mail: f.mail, FallbackURL: "http://core.example.com:8000/"})
		st, err = svc.Start(f.ctx, f.admin, u.ID, enroll.StartInput{})
		if err != nil || !st.EmailSent || st.URL != "http://core.example.com:8000/enroll/"+st.Token {
			t.Fatalf("fallback URL: %+v %v", st, err)
		}
	})
}

func TestNewClient(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.newUser("olaf", false)
		first, err := f.vpn.CreateDevice(f.ctx, core.Actor{UserID: u.ID, Username: u.Username}, vpn.NewDevice{Name: "desktop", PublicKey: newKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		st := f.start(u.ID, enroll.KindNewClient)
		msgs := f.mail.to("olaf@example.com")
		if len(msgs) != 1 || !strings.Contains(msgs[0].Subject, "new VPN client") || !strings.Contains(msgs[0].Text, st.URL) {
			t.Fatalf("new client mail: %+v", msgs)
		}
		info, err := f.svc.Info(f.ctx, st.Token)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != enroll.KindNewClient || len(info.Steps) != 2 || strings.Join(info.Remaining, ",") != "device" || !info.Step("device").Available {
			t.Fatalf("info = %+v", info)
		}
		wantCode(t, "password on a new-client link", f.svc.SetPassword(f.ctx, st.Token, "Other-password-2", ""), "not_allowed")
		_, err = f.svc.Complete(f.ctx, st.Token, "")
		wantCode(t, "complete without a device", err, "steps_remaining")
		_, err = f.svc.RegisterDevice(f.ctx, st.Token, enroll.DeviceInput{Name: "desktop", PublicKey: newKey(t)}, "")
		wantCode(t, "a name the user has", err, "duplicate_name")
		_, err = f.svc.RegisterDevice(f.ctx, st.Token, enroll.DeviceInput{Name: "phone", PublicKey: first.PublicKey}, "")
		wantCode(t, "a key another device has", err, "duplicate_public_key")
		reg, err := f.svc.RegisterDevice(f.ctx, st.Token, enroll.DeviceInput{Name: "phone", PublicKey: newKey(t)}, "")
		if err != nil {
			t.Fatal(err)
		}
		done, err := f.svc.Complete(f.ctx, st.Token, "")
		if err != nil || done.Activated || done.DeviceID != reg.Device.ID {
			t.Fatalf("complete: %+v %v", done, err)
		}
		if n := f.count(`SELECT COUNT(*) FROM devices WHERE user_id = $1`, u.ID); n != 2 {
			t.Fatalf("user has %d devices, want 2", n)
		}
		if _, err := f.svc.Sync(f.ctx, reg.ClientToken); err != nil {
			t.Fatalf("sync: %v", err)
		}
		if _, err := f.ident.Login(f.ctx, "olaf", "User-password-1", "", ""); err != nil {
			t.Fatal("the password changed")
		}
	})
}

// TestDeviceStepLeavesNothingHalfWritten checks that a failed device step
// changes nothing: no device, no address, no revision bump, no client token,
// and the link can still register a device.
func TestDeviceStepLeavesNothingHalfWritten(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		other := f.newUser("otto", false)
		taken, err := f.vpn.CreateDevice(f.ctx, core.Actor{UserID: other.ID, Username: "otto"}, vpn.NewDevice{Name: "laptop", PublicKey: newKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		u := f.newUser("pia", true)
		st := f.start(u.ID, "")
		if err := f.svc.SetPassword(f.ctx, st.Token, "Pia-password-1", ""); err != nil {
			t.Fatal(err)
		}
		snapshot := func() string {
			var s []string
			for _, q := range []string{`SELECT COUNT(*) FROM devices`, `SELECT COUNT(*) FROM device_addresses`, `SELECT COUNT(*) FROM client_tokens`,
				`SELECT COUNT(*) FROM location_changes`, `SELECT COALESCE(SUM(revision), 0) FROM locations`,
				`SELECT COUNT(*) FROM onboarding_tokens WHERE device_id IS NOT NULL`} {
				s = append(s, strconv.Itoa(f.count(q)))
			}
			return strings.Join(s, ",")
		}
		before := snapshot()
		for _, tc := range []struct {
			name string
			in   enroll.DeviceInput
			code string
		}{
			{"empty key", enroll.DeviceInput{Name: "laptop"}, "invalid_public_key"},
			{"not base64", enroll.DeviceInput{Name: "laptop", PublicKey: "not a key"}, "invalid_public_key"},
			{"short key", enroll.DeviceInput{Name: "laptop", PublicKey: "AAAA"}, "invalid_public_key"},
			{"all-zero key", enroll.DeviceInput{Name: "laptop", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "invalid_public_key"},
			{"a private key's length but padded wrong", enroll.DeviceInput{Name: "laptop", PublicKey: strings.TrimSuffix(newKey(t), "=")}, "invalid_public_key"},
			{"another device's key", enroll.DeviceInput{Name: "laptop", PublicKey: taken.PublicKey}, "duplicate_public_key"},
			{"no name", enroll.DeviceInput{PublicKey: newKey(t)}, "missing_field"},
			{"a name too long", enroll.DeviceInput{Name: strings.Repeat("n", 65), PublicKey: newKey(t)}, "invalid_name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := f.svc.RegisterDevice(f.ctx, st.Token, tc.in, "")
				wantCode(t, tc.name, err, tc.code)
				if after := snapshot(); after != before {
					t.Fatalf("state changed: %s -> %s", before, after)
				}
			})
		}
		if _, err := f.svc.RegisterDevice(f.ctx, st.Token, enroll.DeviceInput{Name: "laptop", PublicKey: newKey(t)}, ""); err != nil {
			t.Fatalf("a valid device after failures: %v", err)
		}
	})
}

// TestDeviceStepRace registers devices concurrently on one link: one wins,
// the others' devices are taken back.
func TestDeviceStepRace(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.newUser("quinn", false)
		st := f.start(u.ID, enroll.KindNewClient)
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = f.svc.RegisterDevice(f.ctx, st.Token, enroll.DeviceInput{Name: "dev" + string(rune('a'+i)), PublicKey: newKey(t)}, "")
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else if de, _ := core.AsError(err); de == nil || de.Code != "device_registered" {
				t.Fatalf("unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d registrations succeeded, want 1", ok)
		}
		if d := f.count(`SELECT COUNT(*) FROM devices WHERE user_id = $1`, u.ID); d != 1 {
			t.Fatalf("%d devices remain, want 1", d)
		}
		if c := f.count(`SELECT COUNT(*) FROM client_tokens`); c != 1 {
			t.Fatalf("%d client tokens, want 1", c)
		}
	})
}

func TestPasswordReset(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.newUser("rita", false)
		f.newUser("sam", true) // pending enrollment: no reset

		// The same answer for every login, existing or not.
		for _, login := range []string{"nobody", "nobody@example.com", "sam", "RITA@example.com", "rita"} {
			if err := f.svc.RequestReset(f.ctx, login, "198.51.100.1"); err != nil {
				t.Fatalf("request for %q: %v", login, err)
			}
			// Mails go out in the background: wait, so rita's two arrive
			// in the order their links were issued.
			f.svc.WaitMail()
		}
		wantCode(t, "empty login", f.svc.RequestReset(f.ctx, " ", ""), "invalid_value")
		f.svc.WaitMail()
		if n := len(f.mail.to("sam@example.com")); n != 0 {
			t.Fatal("a pending user got a reset mail")
		}
		mails := f.mail.to("rita@example.com")
		if len(mails) != 2 || !strings.Contains(mails[1].Subject, "reset your password") || !strings.Contains(mails[1].Text, "198.51.100.1") {
			t.Fatalf("reset mails: %+v", mails)
		}
		tokenOf := func(m mail.Message) string {
			i := strings.Index(m.Text, proxyURL+"/reset/")
			if i < 0 {
				t.Fatalf("no reset link in %q", m.Text)
			}
			rest := m.Text[i+len(proxyURL+"/reset/"):]
			return rest[:strings.IndexAny(rest, "\n ")]
		}
		old, token := tokenOf(mails[0]), tokenOf(mails[1])
		_, err := f.svc.ResetInfo(f.ctx, old)
		wantCode(t, "the older link", err, "token_used")
		info, err := f.svc.ResetInfo(f.ctx, token)
		if err != nil || info.Username != "rita" || info.ExpiresAt > time.Now().Add(61*time.Minute).UnixMilli() {
			t.Fatalf("reset info: %+v %v", info, err)
		}

		// Two sessions and a lockout that the reset ends.
		s1, err := f.ident.Login(f.ctx, "rita", "User-password-1", "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ident.Login(f.ctx, "rita", "User-password-1", "", ""); err != nil {
			t.Fatal(err)
		}
		f.settings(core.SettingsPatch{LockoutThreshold: ptr(2)})
		_, _ = f.ident.Login(f.ctx, "rita", "wrong-Password-1", "", "")
		if _, err := f.ident.Login(f.ctx, "rita", "wrong-Password-1", "", ""); !errors.Is(err, core.ErrTooManyAttempts) {
			t.Fatalf("expected a lockout, got %v", err)
		}

		wantCode(t, "weak password", f.svc.CompleteReset(f.ctx, token, "weak", ""), "weak_password")
		wantCode(t, "reset", f.svc.CompleteReset(f.ctx, token, "Rita-new-password-2", "198.51.100.1"), "")
		wantCode(t, "the link again", f.svc.CompleteReset(f.ctx, token, "Rita-third-password-3", ""), "token_used")
		if n := f.count(`SELECT COUNT(*) FROM sessions WHERE user_id = $1`, u.ID); n != 0 {
			t.Fatalf("%d sessions survive the reset", n)
		}
		if _, err := f.ident.Authenticate(f.ctx, s1.Token); err == nil {
			t.Fatal("an old session still authenticates")
		}
		if _, err := f.ident.Login(f.ctx, "rita", "User-password-1", "", ""); err == nil {
			t.Fatal("the old password still works")
		}
		if _, err := f.ident.Login(f.ctx, "rita", "Rita-new-password-2", "", ""); err != nil {
			t.Fatalf("login with the new password (the lockout must be lifted): %v", err)
		}
		var details string
		if err := db.QueryRowContext(f.ctx, `SELECT details FROM audit_log WHERE action = 'password_reset.complete' AND target_id = $1`, u.ID).Scan(&details); err != nil ||
			!strings.Contains(details, `"sessions_ended":2`) {
			t.Fatalf("reset audit: %s %v", details, err)
		}
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'password_reset.request'`); n != 5 {
			t.Fatalf("%d reset requests audited, want 5", n)
		}

		// Expiry after one hour.
		if err := f.svc.RequestReset(f.ctx, "rita", ""); err != nil {
			t.Fatal(err)
		}
		f.svc.WaitMail()
		mails = f.mail.to("rita@example.com")
		late := tokenOf(mails[len(mails)-1])
		f.clock.add(61 * time.Minute)
		wantCode(t, "expired link", f.svc.CompleteReset(f.ctx, late, "Rita-late-password-4", ""), "token_expired")
	})
}

func TestResetLimits(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.newUser("tom", false)
		// Per account: three mails an hour, then silence (same answer).
		for i := range 5 {
			if err := f.svc.RequestReset(f.ctx, "tom", "198.51.100."+string(rune('1'+i))); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		f.svc.WaitMail()
		if n := len(f.mail.to("tom@example.com")); n != 3 {
			t.Fatalf("%d mails, want 3", n)
		}
		f.clock.add(61 * time.Minute)
		if err := f.svc.RequestReset(f.ctx, "tom", "198.51.100.9"); err != nil {
			t.Fatal(err)
		}
		f.svc.WaitMail()
		if n := len(f.mail.to("tom@example.com")); n != 4 {
			t.Fatalf("%d mails after the window, want 4", n)
		}

		// Per IP: ten requests in 15 minutes, existing accounts or not.
		for i := range 10 {
			if err := f.svc.RequestReset(f.ctx, "ghost"+string(rune('a'+i)), "203.0.113.99"); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		err := f.svc.RequestReset(f.ctx, "ghostz", "203.0.113.99")
		wantCode(t, "eleventh request from one IP", err, "too_many_requests")
		if de, _ := core.AsError(err); de.RetryAfterSeconds < 1 || de.RetryAfterSeconds > 901 {
			t.Fatalf("retry after %d", de.RetryAfterSeconds)
		}
		if err := f.svc.RequestReset(f.ctx, "ghostz", "203.0.113.100"); err != nil {
			t.Fatalf("another IP: %v", err)
		}
		f.clock.add(16 * time.Minute)
		if err := f.svc.RequestReset(f.ctx, "ghostz", "203.0.113.99"); err != nil {
			t.Fatalf("after the window: %v", err)
		}

		// Without SMTP: same answer, no link issued.
		f.settings(core.SettingsPatch{SMTPHost: ptr("")})
		f.clock.add(2 * time.Hour)
		before := f.count(`SELECT COUNT(*) FROM onboarding_tokens`)
		if err := f.svc.RequestReset(f.ctx, "tom", ""); err != nil {
			t.Fatal(err)
		}
		if f.count(`SELECT COUNT(*) FROM onboarding_tokens`) != before {
			t.Fatal("a link was issued that no mail can carry")
		}
	})
}
