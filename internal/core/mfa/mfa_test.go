package mfa_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
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

// clock is a settable time source shared by the services of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }
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
	svc   *mfa.Service
	clock *clock
	admin core.Actor
}

// base is in the middle of a TOTP step, so ±n steps are unambiguous.
var base = time.Unix(1_800_000_000/mfa.Period*mfa.Period+15, 0)

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
	f := &fixture{t: t, ctx: ctx, db: db, inst: inst, ident: ident, clock: &clock{t: base},
		admin: core.Actor{UserID: adminID, Username: "admin", IsAdmin: true, IP: "192.0.2.1"}}
	f.svc = f.replica()
	return f
}

// replica is another core's MFA service on the same database and clock.
func (f *fixture) replica() *mfa.Service {
	s := mfa.New(f.db, f.inst, nil)
	s.SetClock(f.clock.now)
	return s
}

func (f *fixture) user(name string) core.Actor {
	f.t.Helper()
	u, err := f.ident.CreateUser(f.ctx, f.admin, identity.NewUser{Username: name, Email: name + "@example.com", Password: "User-password-1"})
	if err != nil {
		f.t.Fatal(err)
	}
	return core.Actor{UserID: u.ID, Username: u.Username, IP: "198.51.100.7"}
}

func (f *fixture) settings(p core.SettingsPatch) {
	f.t.Helper()
	if _, err := core.UpdateSettings(f.ctx, f.db, f.admin, p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) code(secret string, at time.Time) string {
	f.t.Helper()
	c, err := mfa.GenerateCode(secret, at)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// enroll sets up and confirms TOTP at the current clock and returns the
// secret and the recovery codes.
func (f *fixture) enroll(u core.Actor) (string, []string) {
	f.t.Helper()
	setup, err := f.svc.Setup(f.ctx, u, u.UserID)
	if err != nil {
		f.t.Fatal(err)
	}
	rc, err := f.svc.Confirm(f.ctx, u, u.UserID, f.code(setup.Secret, f.clock.now()))
	if err != nil {
		f.t.Fatal(err)
	}
	return setup.Secret, rc.Codes
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

func (f *fixture) auditCount(action, target string) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM audit_log WHERE action = $1 AND target_id = $2`, action, target).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func TestSetupAndConfirm(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.user("alice")
		bob := f.user("bob")

		if _, err := f.svc.Setup(f.ctx, bob, alice.UserID); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("setup for someone else: %v, want forbidden", err)
		}
		if _, err := f.svc.Setup(f.ctx, f.admin, alice.UserID); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("admin setting up another user's TOTP: %v, want forbidden", err)
		}
		_, err := f.svc.Confirm(f.ctx, alice, alice.UserID, "123456")
		wantCode(t, "confirm before setup", err, "totp_not_set_up")

		first, err := f.svc.Setup(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Secret) < 32 || !strings.HasPrefix(first.URL, "otpauth://totp/") || !strings.Contains(first.URL, "secret="+first.Secret) ||
			!strings.Contains(first.URL, "issuer=ward") || first.Period != 30 || first.Digits != 6 {
			t.Fatalf("setup = %+v", first)
		}
		if !strings.HasPrefix(first.QRPNG, "iVBORw0KGgo") { // base64 of the PNG signature
			t.Fatalf("qr_png is not a base64 PNG: %.20s", first.QRPNG)
		}
		// A second setup replaces the unconfirmed secret.
		setup, err := f.svc.Setup(f.ctx, alice, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if setup.Secret == first.Secret {
			t.Fatal("a new setup kept the old secret")
		}
		_, err = f.svc.Confirm(f.ctx, alice, alice.UserID, f.code(first.Secret, f.clock.now()))
		wantCode(t, "confirm with the replaced secret", err, "invalid_code")
		if has, _ := f.svc.HasTOTP(f.ctx, alice.UserID); has {
			t.Fatal("TOTP enabled before confirmation")
		}
		if err := f.svc.VerifyTOTP(f.ctx, alice.UserID, f.code(setup.Secret, f.clock.now())); !errors.Is(err, mfa.ErrNotEnabled) {
			t.Fatalf("verify before confirmation: %v", err)
		}

		confirmCode := f.code(setup.Secret, f.clock.now())
		rc, err := f.svc.Confirm(f.ctx, alice, alice.UserID, confirmCode)
		if err != nil {
			t.Fatal(err)
		}
		if len(rc.Codes) != mfa.RecoveryCodeCount {
			t.Fatalf("recovery codes: %v", rc.Codes)
		}
		seen := map[string]bool{}
		for _, c := range rc.Codes {
			if len(c) != 11 || c[5] != '-' || seen[c] {
				t.Fatalf("recovery code %q malformed or repeated", c)
			}
			seen[c] = true
		}
		if has, err := f.svc.HasTOTP(f.ctx, alice.UserID); err != nil || !has {
			t.Fatalf("HasTOTP after confirm = %v, %v", has, err)
		}
		if has, _ := f.svc.HasTOTP(f.ctx, bob.UserID); has {
			t.Fatal("bob has TOTP")
		}
		// The code that confirmed cannot be replayed.
		wantCode(t, "verify with the confirmation code", f.svc.VerifyTOTP(f.ctx, alice.UserID, confirmCode), "code_used")
		_, err = f.svc.Setup(f.ctx, alice, alice.UserID)
		wantCode(t, "setup while enabled", err, "totp_enabled")
		_, err = f.svc.Confirm(f.ctx, alice, alice.UserID, confirmCode)
		wantCode(t, "confirm while enabled", err, "totp_enabled")

		st, err := f.svc.Status(f.ctx, alice.UserID)
		if err != nil || !st.TOTPEnabled || st.RecoveryCodesLeft != 10 {
			t.Fatalf("status = %+v, %v", st, err)
		}
		if f.auditCount("mfa.totp_setup", alice.UserID) != 2 || f.auditCount("mfa.totp_enable", alice.UserID) != 1 {
			t.Fatal("setup and enable not audited")
		}
		// Secrets never reach the audit log.
		var details string
		if err := db.QueryRowContext(f.ctx, `SELECT COALESCE(STRING_AGG(details, ''), '') FROM audit_log`).Scan(&details); err != nil {
			// SQLite has GROUP_CONCAT, not STRING_AGG (before 3.44).
			if err := db.QueryRowContext(f.ctx, `SELECT COALESCE(GROUP_CONCAT(details, ''), '') FROM audit_log`).Scan(&details); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(details, setup.Secret) || strings.Contains(details, rc.Codes[0]) {
			t.Fatal("the audit log holds a secret")
		}
	})
}

// TestVerifyWindow checks which time steps are accepted around "now".
func TestVerifyWindow(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		for i, tc := range []struct {
			name   string
			offset time.Duration
			want   string
		}{
			{"current step", 0, ""},
			{"previous step", -30 * time.Second, ""},
			{"next step", 30 * time.Second, ""},
			{"two steps old", -60 * time.Second, "invalid_code"},
			{"two steps ahead", 60 * time.Second, "invalid_code"},
			{"an hour old", -time.Hour, "invalid_code"},
			{"not digits", 0, "invalid_code"},
			{"spaces are ignored", 0, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f.clock.set(base)
				u := f.user("w" + string(rune('a'+i)))
				secret, _ := f.enroll(u)
				f.clock.set(base.Add(10 * time.Minute))
				code := f.code(secret, f.clock.now().Add(tc.offset))
				switch tc.name {
				case "not digits":
					code = "12a456"
				case "spaces are ignored":
					code = code[:3] + " " + code[3:]
				}
				wantCode(t, tc.name, f.svc.VerifyTOTP(f.ctx, u.UserID, code), tc.want)
			})
		}
	})
}

func TestReplayRefused(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.settings(core.SettingsPatch{LockoutThreshold: ptr(100)})
		u := f.user("carol")
		secret, _ := f.enroll(u)

		f.clock.add(2 * time.Minute)
		now := f.clock.now()
		code := f.code(secret, now)
		wantCode(t, "first use", f.svc.VerifyTOTP(f.ctx, u.UserID, code), "")
		wantCode(t, "second use, same replica", f.svc.VerifyTOTP(f.ctx, u.UserID, code), "code_used")
		wantCode(t, "second use, another replica", f.replica().VerifyTOTP(f.ctx, u.UserID, code), "code_used")
		// A code of an earlier step than the accepted one is refused too.
		wantCode(t, "older step", f.svc.VerifyTOTP(f.ctx, u.UserID, f.code(secret, now.Add(-30*time.Second))), "code_used")
		// The next step's code is fresh.
		f.clock.add(30 * time.Second)
		wantCode(t, "next step", f.svc.VerifyTOTP(f.ctx, u.UserID, f.code(secret, f.clock.now())), "")

		// Many replicas race with one code: exactly one wins.
		f.clock.add(30 * time.Second)
		code = f.code(secret, f.clock.now())
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = f.replica().VerifyTOTP(f.ctx, u.UserID, code)
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, mfa.ErrCodeUsed):
			default:
				t.Fatalf("concurrent verify: unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent uses of one code succeeded, want exactly 1", ok, n)
		}
	})
}

func TestFailedAttemptLimit(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.settings(core.SettingsPatch{LockoutThreshold: ptr(3), LockoutWindowSeconds: ptr(300), LockoutDurationSeconds: ptr(600)})
		u := f.user("dave")
		secret, codes := f.enroll(u)
		f.clock.add(time.Minute)

		wantCode(t, "wrong 1", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		wantCode(t, "wrong 2", f.replica().VerifyTOTP(f.ctx, u.UserID, "111111"), "invalid_code")
		err := f.svc.VerifyTOTP(f.ctx, u.UserID, "222222")
		wantCode(t, "wrong 3 locks", err, "mfa_locked")
		if de, _ := core.AsError(err); de.RetryAfterSeconds < 590 || de.RetryAfterSeconds > 601 || !errors.Is(err, core.ErrTooManyAttempts) {
			t.Fatalf("lock error %+v", de)
		}
		// While locked even the right code and a recovery code are refused,
		// on every replica.
		wantCode(t, "right code while locked", f.replica().VerifyTOTP(f.ctx, u.UserID, f.code(secret, f.clock.now())), "mfa_locked")
		wantCode(t, "recovery code while locked", f.svc.Verify(f.ctx, u, u.UserID, codes[0]), "mfa_locked")

		f.clock.add(601 * time.Second)
		wantCode(t, "after the lock", f.svc.VerifyTOTP(f.ctx, u.UserID, f.code(secret, f.clock.now())), "")

		// Failures spread wider than the window do not add up.
		f.clock.add(time.Minute)
		wantCode(t, "spread 1", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		wantCode(t, "spread 2", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		f.clock.add(301 * time.Second)
		wantCode(t, "spread 3 (new window)", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		// A success resets the count.
		wantCode(t, "success", f.svc.VerifyTOTP(f.ctx, u.UserID, f.code(secret, f.clock.now())), "")
		wantCode(t, "after success 1", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		wantCode(t, "after success 2", f.svc.VerifyTOTP(f.ctx, u.UserID, "000000"), "invalid_code")
		if n := f.auditCount("mfa.verify_failed", u.UserID); n != 8 {
			t.Fatalf("mfa.verify_failed audited %d times, want 8", n)
		}
	})
}

func TestRecoveryCodes(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.settings(core.SettingsPatch{LockoutThreshold: ptr(100)})
		u := f.user("erin")
		other := f.user("frank")
		secret, codes := f.enroll(u)
		f.enroll(other)

		wantCode(t, "VerifyTOTP takes no recovery code", f.svc.VerifyTOTP(f.ctx, u.UserID, codes[0]), "invalid_code")
		wantCode(t, "another user's code", f.svc.Verify(f.ctx, other, other.UserID, codes[0]), "invalid_code")
		// Upper case and without the hyphen is the same code.
		wantCode(t, "first use", f.svc.Verify(f.ctx, u, u.UserID, strings.ToUpper(strings.ReplaceAll(codes[0], "-", ""))), "")
		wantCode(t, "second use", f.svc.Verify(f.ctx, u, u.UserID, codes[0]), "invalid_code")
		wantCode(t, "second use elsewhere", f.replica().Verify(f.ctx, u, u.UserID, codes[0]), "invalid_code")
		if st, _ := f.svc.Status(f.ctx, u.UserID); st.RecoveryCodesLeft != 9 {
			t.Fatalf("codes left = %d, want 9", st.RecoveryCodesLeft)
		}
		if f.auditCount("mfa.recovery_code_used", u.UserID) != 1 {
			t.Fatal("recovery code use not audited")
		}

		// Concurrent use of one code: one winner.
		var wg sync.WaitGroup
		results := make(chan error, 6)
		for range 6 {
			wg.Add(1)
			go func() { defer wg.Done(); results <- f.replica().Verify(f.ctx, u, u.UserID, codes[1]) }()
		}
		wg.Wait()
		close(results)
		ok := 0
		for err := range results {
			if err == nil {
				ok++
			}
		}
		if ok != 1 {
			t.Fatalf("%d concurrent uses of one recovery code succeeded, want 1", ok)
		}

		// Regenerating needs proof and replaces every code.
		_, err := f.svc.RegenerateRecoveryCodes(f.ctx, u, u.UserID, "000000")
		wantCode(t, "regenerate with a wrong code", err, "invalid_code")
		f.clock.add(time.Minute)
		fresh, err := f.svc.RegenerateRecoveryCodes(f.ctx, u, u.UserID, f.code(secret, f.clock.now()))
		if err != nil || len(fresh.Codes) != 10 {
			t.Fatalf("regenerate: %v %v", fresh, err)
		}
		wantCode(t, "old code after regeneration", f.svc.Verify(f.ctx, u, u.UserID, codes[2]), "invalid_code")
		wantCode(t, "new code", f.svc.Verify(f.ctx, u, u.UserID, fresh.Codes[0]), "")
	})
}

func TestDisableAndReset(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.user("gina")
		secret, codes := f.enroll(u)
		f.clock.add(time.Minute)

		wantCode(t, "disable without a valid code", f.svc.Disable(f.ctx, u, u.UserID, "000000"), "invalid_code")
		if err := f.svc.Disable(f.ctx, f.admin, u.UserID, codes[0]); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("admin disabling through the self path: %v", err)
		}
		if err := f.svc.Disable(f.ctx, u, u.UserID, codes[0]); err != nil {
			t.Fatal(err)
		}
		if has, _ := f.svc.HasTOTP(f.ctx, u.UserID); has {
			t.Fatal("still enabled after disable")
		}
		if st, _ := f.svc.Status(f.ctx, u.UserID); st.RecoveryCodesLeft != 0 {
			t.Fatal("recovery codes survive disable")
		}
		wantCode(t, "disable twice", f.svc.Disable(f.ctx, u, u.UserID, f.code(secret, f.clock.now())), "totp_not_enabled")

		// Admin reset.
		f.enroll(u)
		if err := f.svc.Reset(f.ctx, u, u.UserID); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("reset by a non-admin: %v", err)
		}
		if err := f.svc.Reset(f.ctx, f.admin, u.UserID); err != nil {
			t.Fatal(err)
		}
		if has, _ := f.svc.HasTOTP(f.ctx, u.UserID); has {
			t.Fatal("still enabled after reset")
		}
		if err := f.svc.Reset(f.ctx, f.admin, u.UserID); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("reset without TOTP: %v", err)
		}
		if err := f.svc.Reset(f.ctx, f.admin, "no-such-user"); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("reset of an unknown user: %v", err)
		}
		if f.auditCount("mfa.totp_reset", u.UserID) != 1 || f.auditCount("mfa.totp_disable", u.UserID) != 1 {
			t.Fatal("disable and reset not audited")
		}
		// The user can set TOTP up again, and deleting the user removes it.
		f.enroll(u)
		if err := f.ident.DeleteUser(f.ctx, f.admin, u.UserID); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(f.ctx, `SELECT (SELECT COUNT(*) FROM user_totp) + (SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1)`, u.UserID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows left after user deletion: %d %v", n, err)
		}
	})
}

// TestOathtoolInterop checks the codes against an independent TOTP
// implementation: oathtool (Debian package oathtool).
func TestOathtoolInterop(t *testing.T) {
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("oathtool is required under CI=true (scripts/install-deps.sh installs it)")
		}
		t.Skip("SKIP oathtool interop: oathtool not installed (apt-get install oathtool, or scripts/install-deps.sh)")
	}
	oath := func(t *testing.T, secret string, at time.Time) string {
		t.Helper()
		out, err := exec.Command(bin, "--totp", "--base32", "--digits=6", "--time-step-size=30s",
			"--now="+at.UTC().Format("2006-01-02 15:04:05 UTC"), secret).Output()
		if err != nil {
			t.Fatalf("oathtool: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		u := f.user("henry")
		setup, err := f.svc.Setup(f.ctx, u, u.UserID)
		if err != nil {
			t.Fatal(err)
		}
		// Confirm and verify with codes oathtool computed.
		if _, err := f.svc.Confirm(f.ctx, u, u.UserID, oath(t, setup.Secret, f.clock.now())); err != nil {
			t.Fatalf("confirm with oathtool's code: %v", err)
		}
		for i := 1; i <= 3; i++ {
			f.clock.add(30 * time.Second)
			c := oath(t, setup.Secret, f.clock.now())
			if ours := f.code(setup.Secret, f.clock.now()); ours != c {
				t.Fatalf("step %d: ours %s, oathtool %s", i, ours, c)
			}
			if err := f.svc.VerifyTOTP(f.ctx, u.UserID, c); err != nil {
				t.Fatalf("verify oathtool code at step %d: %v", i, err)
			}
		}
		// The real clock, as a user's phone would have it.
		f.clock.set(time.Now())
		v := f.user("ivy")
		setup, err = f.svc.Setup(f.ctx, v, v.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Confirm(f.ctx, v, v.UserID, oath(t, setup.Secret, time.Now())); err != nil {
			t.Fatalf("confirm with oathtool's code at the real time: %v", err)
		}
	})
}

func TestCodeMethod(t *testing.T) {
	for _, tc := range []struct{ code, want string }{
		{"123456", "totp"},
		{" 123 456 ", "totp"},
		{"abcd-efgh-2345", "recovery"},
		{"12345", "recovery"}, // not a TOTP code: Verify tries it as a recovery code
	} {
		if got := mfa.CodeMethod(tc.code); got != tc.want {
			t.Errorf("CodeMethod(%q) = %s, want %s", tc.code, got, tc.want)
		}
	}
}
