package webauthn_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/core/webauthn/webauthntest"
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

const publicURL = "http://localhost:8123"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	db    *store.DB
	inst  core.Instance
	ident *identity.Service
	clock *clock
	svc   *webauthn.Service
	admin core.Actor
}

func newFixture(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, nil, nil)
	if _, err := ident.EnsureAdmin(ctx, "Admin-password-1"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, inst: inst, ident: ident, clock: &clock{t: time.Now()},
		admin: core.Actor{UserID: adminID, Username: "admin", IsAdmin: true, IP: "192.0.2.1"}}
	f.svc = f.replica()
	return f
}

// replica is another core's service on the same database and clock.
func (f *fixture) replica() *webauthn.Service {
	f.t.Helper()
	s, err := webauthn.New(f.db, webauthn.Config{PublicURL: publicURL})
	if err != nil {
		f.t.Fatal(err)
	}
	s.SetClock(f.clock.now)
	return s
}

func (f *fixture) user(name string) core.Actor {
	f.t.Helper()
	u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: name, Email: name + "@example.com", Password: "User-password-1",
		FirstName: "Test", LastName: strings.ToUpper(name[:1]) + name[1:]})
	if err != nil {
		f.t.Fatal(err)
	}
	return core.Actor{UserID: u.ID, Username: u.Username, IP: "198.51.100.7"}
}

func optionsJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// register adds a key of auth for u through begin on one replica and
// finish on another.
func (f *fixture) register(u core.Actor, auth *webauthntest.Authenticator, name string) webauthn.Credential {
	f.t.Helper()
	start, err := f.svc.BeginRegistration(f.ctx, u, u.UserID)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := auth.Create(optionsJSON(f.t, start.Options))
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := f.replica().FinishRegistration(f.ctx, u, u.UserID, start.CeremonyID, name, resp)
	if err != nil {
		f.t.Fatalf("finish registration: %v", err)
	}
	return c
}

// login runs a login ceremony for session and returns FinishLogin's result.
func (f *fixture) login(u core.Actor, session string, auth *webauthntest.Authenticator) (webauthn.Credential, error) {
	f.t.Helper()
	start, err := f.svc.BeginLogin(f.ctx, u.UserID, session)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := auth.Get(optionsJSON(f.t, start.Options))
	if err != nil {
		f.t.Fatal(err)
	}
	return f.replica().FinishLogin(f.ctx, u, u.UserID, session, start.CeremonyID, resp)
}

func (f *fixture) audit(action, userID string) []core.AuditEntry {
	f.t.Helper()
	entries, _, err := core.ListAudit(f.ctx, f.db, core.AuditFilter{Action: action, TargetID: userID, Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	return entries
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	de, ok := core.AsError(err)
	if !ok || de.Code != code {
		t.Fatalf("%s: error %v, want code %s", what, err, code)
	}
}

func TestRegisterAndLoginAcrossReplicas(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		auth := webauthntest.New(publicURL)

		start, err := f.svc.BeginRegistration(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		opts := start.Options.Response
		if opts.RelyingParty.ID != "localhost" || opts.User.Name != "alice" || opts.User.DisplayName != "Test Alice" {
			t.Errorf("creation options: rp %+v user %+v", opts.RelyingParty, opts.User)
		}
		if opts.AuthenticatorSelection.UserVerification != "preferred" || opts.AuthenticatorSelection.ResidentKey != "preferred" {
			t.Errorf("authenticator selection: %+v", opts.AuthenticatorSelection)
		}
		if start.ExpiresAt <= f.clock.now().UnixMilli() {
			t.Errorf("expires_at %d is not in the future", start.ExpiresAt)
		}
		resp, err := auth.Create(optionsJSON(t, start.Options))
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.replica().FinishRegistration(f.ctx, alice, alice.UserID, start.CeremonyID, "  YubiKey 5  ", resp)
		if err != nil {
			t.Fatal(err)
		}
		if c.Name != "YubiKey 5" || c.CredentialID != auth.LastCredentialID() || c.LastUsedAt != 0 || c.CreatedAt == 0 ||
			!slices.Equal(c.Transports, []string{"usb"}) || c.AAGUID != "77617264-2d74-6573-742d-6b6579000001" {
			t.Errorf("registered credential: %+v", c)
		}
		// The ceremony is single use.
		_, err = f.svc.FinishRegistration(f.ctx, alice, alice.UserID, start.CeremonyID, "again", resp)
		wantCode(t, "second finish", err, "ceremony_expired")
		if got := f.audit("webauthn.register", alice.UserID); len(got) != 1 || got[0].Details["name"] != "YubiKey 5" {
			t.Errorf("registration audit: %+v", got)
		}

		// A second registration excludes the key it holds already.
		start2, err := f.svc.BeginRegistration(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if ex := start2.Options.Response.CredentialExcludeList; len(ex) != 1 {
			t.Errorf("excludeCredentials: %+v", ex)
		}
		if _, err := auth.Create(optionsJSON(t, start2.Options)); err == nil {
			t.Error("the authenticator registered a second credential despite the exclusion")
		}

		// Login: begun on one replica, finished on another, bound to the
		// waiting session.
		used, err := f.login(alice, "session-1", auth)
		if err != nil {
			t.Fatal(err)
		}
		if used.ID != c.ID || used.SignCount != 1 || used.LastUsedAt == 0 {
			t.Errorf("login credential: %+v", used)
		}
		list, err := f.svc.List(f.ctx, alice, alice.UserID)
		if err != nil || len(list) != 1 || list[0].SignCount != 1 || list[0].LastUsedAt == 0 {
			t.Fatalf("list after login: %+v %v", list, err)
		}
		if got := f.audit("webauthn.login", alice.UserID); len(got) != 1 || got[0].IP != "198.51.100.7" {
			t.Errorf("login audit: %+v", got)
		}
		if _, err := f.login(alice, "session-1", auth); err != nil {
			t.Fatalf("second login: %v", err)
		}
	})
}

func TestLoginCeremonyRules(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice, bob := f.user("alice"), f.user("bob")
		auth := webauthntest.New(publicURL)
		f.register(alice, auth, "key")

		begin := func(u core.Actor, session string) (webauthn.LoginStart, []byte) {
			t.Helper()
			start, err := f.svc.BeginLogin(f.ctx, u.UserID, session)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := auth.Get(optionsJSON(t, start.Options))
			if err != nil {
				t.Fatal(err)
			}
			return start, resp
		}

		// Another session (or user) cannot finish the ceremony.
		start, resp := begin(alice, "session-1")
		_, err := f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-2", start.CeremonyID, resp)
		wantCode(t, "other session", err, "ceremony_expired")
		_, err = f.svc.FinishLogin(f.ctx, bob, bob.UserID, "session-1", start.CeremonyID, resp)
		wantCode(t, "other user", err, "ceremony_expired")
		if _, err := f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start.CeremonyID, resp); err != nil {
			t.Fatalf("the right session: %v", err)
		}
		// Single use, and a replayed answer fails a new challenge.
		_, err = f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start.CeremonyID, resp)
		wantCode(t, "replayed ceremony", err, "ceremony_expired")
		start2, _ := begin(alice, "session-1")
		_, err = f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start2.CeremonyID, resp)
		wantCode(t, "replayed answer", err, "webauthn_failed")

		// Expiry.
		start3, resp3 := begin(alice, "session-1")
		f.clock.add(webauthn.DefaultCeremonyTTL + time.Second)
		_, err = f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start3.CeremonyID, resp3)
		wantCode(t, "expired", err, "ceremony_expired")

		// An answer from another origin.
		evil := webauthntest.New("http://evil.localhost:8123")
		start4, err := f.svc.BeginLogin(f.ctx, alice.UserID, "session-1")
		if err != nil {
			t.Fatal(err)
		}
		// The evil origin's client would need the key itself; simulate a
		// phishing proxy relaying the challenge to the real key.
		auth.Origin = evil.Origin
		resp4, err := auth.Get(optionsJSON(t, start4.Options))
		auth.Origin = publicURL
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start4.CeremonyID, resp4)
		wantCode(t, "other origin", err, "webauthn_failed")

		// Garbage.
		start5, _ := begin(alice, "session-1")
		_, err = f.svc.FinishLogin(f.ctx, alice, alice.UserID, "session-1", start5.CeremonyID, []byte(`{"id":"x"}`))
		wantCode(t, "garbage", err, "webauthn_failed")

		failed := f.audit("webauthn.login_failed", alice.UserID)
		if len(failed) < 5 {
			t.Errorf("want every failed assertion audited, got %d: %+v", len(failed), failed)
		}

		// A user without keys has nothing to begin.
		_, err = f.svc.BeginLogin(f.ctx, bob.UserID, "session-9")
		wantCode(t, "no keys", err, "no_webauthn_credentials")
		_, err = f.svc.BeginLogin(f.ctx, alice.UserID, "")
		if !errors.Is(err, core.ErrUnauthenticated) {
			t.Errorf("begin without a session: %v", err)
		}
	})
}

func TestSignCountRegressionRefused(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		auth := webauthntest.New(publicURL)
		c := f.register(alice, auth, "key")
		auth.SetSignCount(c.CredentialID, 10)
		if used, err := f.login(alice, "s", auth); err != nil || used.SignCount != 11 {
			t.Fatalf("login at 11: %+v %v", used, err)
		}
		// A clone still at an older count.
		auth.SetSignCount(c.CredentialID, 4)
		_, err := f.login(alice, "s", auth)
		wantCode(t, "regressed counter", err, "sign_count_regression")
		// The same count again (a replayed or racing answer).
		auth.SetSignCount(c.CredentialID, 10)
		_, err = f.login(alice, "s", auth)
		wantCode(t, "equal counter", err, "sign_count_regression")
		failed := f.audit("webauthn.login_failed", alice.UserID)
		if len(failed) != 2 || failed[0].Details["reason"] != "sign_count_regression" || failed[0].Details["credential"] != c.ID {
			t.Errorf("failed logins audit: %+v", failed)
		}
		if used, err := f.login(alice, "s", auth); err != nil || used.SignCount != 12 {
			t.Fatalf("login past the stored count: %+v %v", used, err)
		}

		// Authenticators without a counter report 0 every time.
		bob := f.user("bob")
		zero := webauthntest.New(publicURL)
		zc := f.register(bob, zero, "passkey")
		for range 2 {
			zero.SetSignCount(zc.CredentialID, ^uint32(0)) // wraps to 0 on the next answer
			if used, err := f.login(bob, "s", zero); err != nil || used.SignCount != 0 {
				t.Fatalf("counter-less login: %+v %v", used, err)
			}
		}
	})
}

func TestConcurrentFinishesOfOneCeremony(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		auth := webauthntest.New(publicURL)
		f.register(alice, auth, "key")
		start, err := f.svc.BeginLogin(f.ctx, alice.UserID, "s")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := auth.Get(optionsJSON(t, start.Options))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for range 6 {
			wg.Go(func() {
				if _, err := f.replica().FinishLogin(f.ctx, alice, alice.UserID, "s", start.CeremonyID, resp); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ok != 1 {
			t.Fatalf("%d of 6 concurrent finishes succeeded, want exactly 1", ok)
		}
	})
}

func TestSecondFactorsAndLogin(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		mfaSvc := mfa.New(db, f.inst, nil)
		mfaSvc.AddSecondFactors(f.svc)
		f.ident.SetSecondFactor(mfaSvc)
		alice := f.user("alice")

		factors := func() []string {
			t.Helper()
			got, err := mfaSvc.SecondFactors(f.ctx, alice.UserID)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			return got
		}
		if got := factors(); len(got) != 0 {
			t.Fatalf("no second factor yet: %v", got)
		}
		auth := webauthntest.New(publicURL)
		c := f.register(alice, auth, "key")
		if got := factors(); !slices.Equal(got, []string{"webauthn"}) {
			t.Fatalf("with only a key: %v", got)
		}
		sess, err := f.ident.Login(f.ctx, "alice", "User-password-1", "198.51.100.7", "test")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sess.MFAMethods, []string{"webauthn"}) {
			t.Fatalf("login of a user with only a key asks for %v", sess.MFAMethods)
		}
		p, err := f.ident.Authenticate(f.ctx, sess.Token)
		if err != nil || !p.MFAPending {
			t.Fatalf("waiting session: %+v %v", p, err)
		}
		if _, err := f.login(p.Actor("198.51.100.7"), p.SessionID, auth); err != nil {
			t.Fatal(err)
		}
		full, err := f.ident.CompleteSecondFactor(f.ctx, p, webauthn.Method, "198.51.100.7")
		if err != nil {
			t.Fatal(err)
		}
		if p2, err := f.ident.Authenticate(f.ctx, full.Token); err != nil || p2.MFAPending {
			t.Fatalf("full session: %+v %v", p2, err)
		}

		// With TOTP too, both are offered.
		setup, err := mfaSvc.Setup(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		code, err := mfa.GenerateCode(setup.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mfaSvc.Confirm(f.ctx, alice, alice.UserID, code); err != nil {
			t.Fatal(err)
		}
		if got := factors(); !slices.Equal(got, []string{"recovery", "totp", "webauthn"}) {
			t.Fatalf("with TOTP and a key: %v", got)
		}
		if err := f.svc.Delete(f.ctx, alice, alice.UserID, c.ID); err != nil {
			t.Fatal(err)
		}
		if got := factors(); !slices.Equal(got, []string{"recovery", "totp"}) {
			t.Fatalf("after deleting the key: %v", got)
		}
	})
}

func TestManageCredentials(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice, bob := f.user("alice"), f.user("bob")
		auth := webauthntest.New(publicURL)
		c := f.register(alice, auth, "")
		if c.Name != webauthn.DefaultName {
			t.Errorf("default name: %q", c.Name)
		}

		// Only the owner registers and renames; the owner and admins list and
		// delete.
		_, err := f.svc.BeginRegistration(f.ctx, bob, alice.UserID)
		if !errors.Is(err, core.ErrForbidden) {
			t.Errorf("bob registers for alice: %v", err)
		}
		_, err = f.svc.BeginRegistration(f.ctx, f.admin, alice.UserID)
		if !errors.Is(err, core.ErrForbidden) {
			t.Errorf("admin registers for alice: %v", err)
		}
		if _, err := f.svc.List(f.ctx, bob, alice.UserID); !errors.Is(err, core.ErrForbidden) {
			t.Errorf("bob lists alice's keys: %v", err)
		}
		if list, err := f.svc.List(f.ctx, f.admin, alice.UserID); err != nil || len(list) != 1 {
			t.Errorf("admin lists alice's keys: %v %v", list, err)
		}
		if _, err := f.svc.Rename(f.ctx, f.admin, alice.UserID, c.ID, "x"); !errors.Is(err, core.ErrForbidden) {
			t.Errorf("admin renames: %v", err)
		}
		if err := f.svc.Delete(f.ctx, bob, alice.UserID, c.ID); !errors.Is(err, core.ErrForbidden) {
			t.Errorf("bob deletes: %v", err)
		}
		if err := f.svc.Delete(f.ctx, bob, bob.UserID, c.ID); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("bob deletes alice's key as his own: %v", err)
		}

		for _, tc := range []struct {
			name, want, code string
		}{
			{name: " Work laptop ", want: "Work laptop"},
			{name: strings.Repeat("é", webauthn.MaxNameLength), want: strings.Repeat("é", webauthn.MaxNameLength)},
			{name: strings.Repeat("x", webauthn.MaxNameLength+1), code: "invalid_value"},
			{name: "tab\there", code: "invalid_value"},
			{name: "", want: webauthn.DefaultName},
		} {
			got, err := f.svc.Rename(f.ctx, alice, alice.UserID, c.ID, tc.name)
			if tc.code != "" {
				wantCode(t, "rename to "+tc.name, err, tc.code)
				if de, _ := core.AsError(err); de.Field != "name" {
					t.Errorf("rename error field %q", de.Field)
				}
				continue
			}
			if err != nil || got.Name != tc.want {
				t.Errorf("rename to %q: %+v %v", tc.name, got, err)
			}
		}
		if _, err := f.svc.Rename(f.ctx, alice, alice.UserID, "nope", "x"); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("rename a missing key: %v", err)
		}
		if got := f.audit("webauthn.rename", alice.UserID); len(got) != 3 {
			t.Errorf("rename audit: %d entries", len(got))
		}

		// An admin deletes a key of a user who lost it.
		if err := f.svc.Delete(f.ctx, f.admin, alice.UserID, c.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Delete(f.ctx, alice, alice.UserID, c.ID); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}
		if got := f.audit("webauthn.delete", alice.UserID); len(got) != 1 || got[0].ActorID != f.admin.UserID {
			t.Errorf("delete audit: %+v", got)
		}
		if has, err := f.svc.HasCredentials(f.ctx, alice.UserID); err != nil || has {
			t.Errorf("HasCredentials after delete: %v %v", has, err)
		}

		// Reset removes all; the limit holds.
		for i := range webauthn.MaxCredentials {
			f.register(bob, webauthntest.New(publicURL), "key "+string(rune('a'+i)))
		}
		_, err = f.svc.BeginRegistration(f.ctx, bob, bob.UserID)
		wantCode(t, "one too many", err, "too_many_credentials")
		if _, err := f.svc.Reset(f.ctx, bob, bob.UserID); !errors.Is(err, core.ErrForbidden) {
			t.Errorf("non-admin reset: %v", err)
		}
		if n, err := f.svc.Reset(f.ctx, f.admin, bob.UserID); err != nil || n != webauthn.MaxCredentials {
			t.Errorf("reset: %d %v", n, err)
		}
		// Deleting a user takes their keys along.
		f.register(alice, webauthntest.New(publicURL), "k")
		if err := f.ident.DeleteUser(f.ctx, f.admin, alice.UserID); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = $1`, alice.UserID).Scan(&n); err != nil || n != 0 {
			t.Errorf("keys of a deleted user: %d %v", n, err)
		}
	})
}

func TestRegistrationRefusals(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		auth := webauthntest.New(publicURL)
		start, err := f.svc.BeginRegistration(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		auth.Origin = "http://localhost:9999"
		resp, err := auth.Create(optionsJSON(t, start.Options))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.FinishRegistration(f.ctx, alice, alice.UserID, start.CeremonyID, "k", resp)
		wantCode(t, "wrong origin", err, "webauthn_failed")
		if got := f.audit("webauthn.register_failed", alice.UserID); len(got) != 1 {
			t.Errorf("failed registration audit: %+v", got)
		}
		_, err = f.svc.FinishRegistration(f.ctx, alice, alice.UserID, "", "k", resp)
		wantCode(t, "no ceremony", err, "ceremony_expired")
		_, err = f.svc.FinishRegistration(f.ctx, alice, alice.UserID, start.CeremonyID, strings.Repeat("n", 100), resp)
		wantCode(t, "long name", err, "invalid_value")
		_, err = f.svc.FinishRegistration(f.ctx, alice, alice.UserID, start.CeremonyID, "k", nil)
		wantCode(t, "no answer", err, "invalid_value")
		if has, _ := f.svc.HasCredentials(f.ctx, alice.UserID); has {
			t.Error("a refused registration stored a key")
		}
	})
}

func TestCeremoniesAreBounded(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		for range 10 {
			if _, err := f.svc.BeginRegistration(f.ctx, alice, alice.UserID); err != nil {
				t.Fatal(err)
			}
		}
		count := func() int {
			var n int
			if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM webauthn_ceremonies`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count(); n != 4 {
			t.Errorf("open ceremonies of one user: %d, want 4", n)
		}
		// Expired ones go with the next begin.
		f.clock.add(webauthn.DefaultCeremonyTTL + time.Second)
		bob := f.user("bob")
		if _, err := f.svc.BeginRegistration(f.ctx, bob, bob.UserID); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 1 {
			t.Errorf("ceremonies after expiry: %d, want 1", n)
		}
	})
}

func TestNewValidatesPublicURL(t *testing.T) {
	for _, tc := range []struct {
		url            string
		ok             bool
		rpID, wantOrig string
	}{
		{url: "http://localhost:8000", ok: true, rpID: "localhost", wantOrig: "http://localhost:8000"},
		{url: "https://VPN.Example.com/", ok: true, rpID: "vpn.example.com", wantOrig: "https://vpn.example.com"},
		{url: "https://vpn.example.com:8443/ward", ok: true, rpID: "vpn.example.com", wantOrig: "https://vpn.example.com:8443"},
		{url: "http://127.0.0.1:8000"},
		{url: "https://192.0.2.1"},
		{url: "http://vpn.example.com"},
		{url: "ftp://x"},
	} {
		s, err := webauthn.New(nil, webauthn.Config{PublicURL: tc.url})
		if !tc.ok {
			if err == nil {
				t.Errorf("%s: accepted as relying party", tc.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if s.RPID() != tc.rpID || s.Origin() != tc.wantOrig {
			t.Errorf("%s: rp id %q origin %q", tc.url, s.RPID(), s.Origin())
		}
	}
}
