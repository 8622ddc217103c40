package vpnsession_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/vpnsession"
	"github.com/wardvpn/ward/internal/store"
)

func TestFinishHappyPath(t *testing.T) {
	for _, method := range []string{vpnsession.MethodTOTP, vpnsession.MethodEmail} {
		t.Run(method, func(t *testing.T) {
			env.ForEach(t, func(t *testing.T, db *store.DB) {
				f := newFixture(t, db)
				gw := f.gateway("gw-1", true)
				gw.serve(t, 0)
				svc := f.service(nil)
				before := f.revision(f.secure.ID)

				ch := f.start(svc, method)
				if !strings.HasPrefix(ch.Token, "wvm_") || ch.Method != method {
					t.Fatalf("challenge = %+v", ch)
				}
				if ttl := time.Until(time.UnixMilli(ch.ExpiresAt)); ttl < 4*time.Minute || ttl > 5*time.Minute {
					t.Fatalf("challenge expires in %s, want 5 min", ttl)
				}
				var stored string
				if err := db.QueryRowContext(f.ctx, `SELECT token_hash FROM vpn_mfa_challenges`).Scan(&stored); err != nil {
					t.Fatal(err)
				}
				if stored == ch.Token || strings.Contains(stored, ch.Token) || len(stored) != 64 {
					t.Fatalf("token stored as %q", stored)
				}
				var c string
				if method == vpnsession.MethodEmail {
					m := f.mailer.last(t)
					if m.Email != "alice@example.com" || m.LocationName != "secure" || m.DeviceName != "alice-laptop" || len(m.Code) != 6 {
						t.Fatalf("mail = %+v", m)
					}
					c = m.Code
				} else {
					if len(f.mailer.sent) != 0 {
						t.Fatal("TOTP start sent an e-mail")
					}
					c = f.freshCode()
				}

				sess, err := svc.Finish(f.ctx, ch.Token, c)
				if err != nil {
					t.Fatalf("finish: %v", err)
				}
				checkPSK(t, sess.PresharedKey)
				if sess.State != vpnsession.StateNew || sess.DeviceID != f.device.ID || sess.UserID != f.alice.ID || sess.PublicKey != f.device.PublicKey ||
					sess.Method != method || sess.LocationID != f.secure.ID || sess.Revision != before+1 || sess.DisconnectThreshold != threshold ||
					sess.ConnectBy != sess.CreatedAt+threshold*1000 {
					t.Fatalf("session = %+v (revision before %d)", sess, before)
				}
				// Finish answered after the gateway applied the peer with
				// this session's key: the client never races the gateway.
				addr := ""
				for _, a := range f.device.Addresses {
					if a.LocationID == f.secure.ID {
						addr = a.Address + "/32"
					}
				}
				p, ok := gw.peer(f.device.PublicKey)
				if !ok || p.PresharedKey != sess.PresharedKey || p.ExpiresAt != sess.ConnectBy || p.DeviceID != f.device.ID ||
					len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != addr {
					t.Fatalf("gateway peer = %+v (present %v), want address %s", p, ok, addr)
				}
				active, err := svc.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey)
				if err != nil || active.ID != sess.ID || active.PresharedKey != "" || active.State != vpnsession.StateNew {
					t.Fatalf("active session = %+v, %v", active, err)
				}
				if got := actions(f.audits("vpn_")); strings.Join(got, " ") != "vpn_mfa.start vpn_mfa.success vpn_session.created" {
					t.Fatalf("audit = %v", got)
				}
				for _, e := range f.audits("vpn_") {
					if e.ActorID != f.alice.ID {
						t.Fatalf("audit %s by %q, want alice", e.Action, e.ActorID)
					}
				}
			})
		})
	}
}

func TestStartRefusals(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		noMail := f.service(func(o *vpnsession.Options) { o.Mailer = nil })
		noTOTP := f.service(func(o *vpnsession.Options) { o.Verifier = nil })

		// bob has a device but no TOTP; carol is disabled; dave is outside
		// the group of a restricted MFA location.
		bob := f.user("bob")
		bobDev := f.newDevice("bob-laptop", bob.ID)
		carol := f.user("carol")
		carolDev := f.newDevice("carol-laptop", carol.ID)
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, carol.ID, identity.UserPatch{Active: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		admins, err := f.vpn.CreateLocation(f.ctx, f.admin, vpn.LocationInput{Name: ptr("admins"), Addresses: ptr([]string{"10.50.0.0/24"}),
			Endpoint: ptr("admins.example.com"), MFAMode: ptr(vpn.MFAInternal), AllowedGroups: ptr([]string{"admin"})})
		if err != nil {
			t.Fatal(err)
		}
		router, err := f.vpn.CreateDevice(f.ctx, f.admin, vpn.NewDevice{Name: "router", GenerateKey: true, Kind: vpn.KindNetwork, LocationID: f.secure.ID})
		if err != nil {
			t.Fatal(err)
		}
		_, unknownKey, _ := vpn.GenerateKeyPair()

		for _, tc := range []struct {
			name     string
			svc      *vpnsession.Service
			location string
			key      string
			method   string
			want     string
			kind     error
		}{
			{"plain location", svc, f.plain.ID, f.device.PublicKey, "totp", vpnsession.CodeMFANotEnabled, core.ErrInvalid},
			{"unknown location", svc, "nope", f.device.PublicKey, "totp", "not_found", core.ErrNotFound},
			{"unknown device", svc, f.secure.ID, unknownKey, "totp", "not_found", core.ErrNotFound},
			{"malformed key", svc, f.secure.ID, "not-a-key", "totp", "invalid_key", core.ErrInvalid},
			{"bad method", svc, f.secure.ID, f.device.PublicKey, "sms", "invalid_method", core.ErrInvalid},
			{"no mailer", noMail, f.secure.ID, f.device.PublicKey, "email", vpnsession.CodeMethodUnavailable, core.ErrUnavailable},
			{"no verifier", noTOTP, f.secure.ID, f.device.PublicKey, "totp", vpnsession.CodeMethodUnavailable, core.ErrUnavailable},
			{"no TOTP set up", svc, f.secure.ID, bobDev.PublicKey, "totp", vpnsession.CodeMethodNotConfigured, core.ErrInvalid},
			{"disabled owner", svc, f.secure.ID, carolDev.PublicKey, "email", vpnsession.CodeAccountDisabled, core.ErrForbidden},
			{"not in allowed group", svc, admins.ID, f.device.PublicKey, "totp", vpnsession.CodeNoAccess, core.ErrForbidden},
			{"network device", svc, f.secure.ID, router.PublicKey, "email", vpnsession.CodeNoAccess, core.ErrForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := tc.svc.Start(f.ctx, tc.location, tc.key, tc.method)
				if tc.want == "invalid_key" {
					if !errors.Is(err, core.ErrInvalid) {
						t.Fatalf("error %v, want invalid", err)
					}
					return
				}
				checkCode(t, tc.name, err, tc.want)
				if !errors.Is(err, tc.kind) {
					t.Fatalf("error %v is not of kind %v", err, tc.kind)
				}
			})
		}
		var n int
		if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM vpn_mfa_challenges`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("refused starts left %d challenges (%v)", n, err)
		}
		// But bob can use e-mail.
		if _, err := svc.Start(f.ctx, f.secure.ID, bobDev.PublicKey, "email"); err != nil {
			t.Fatal(err)
		}
		if len(f.audits("vpn_mfa.start_refused")) == 0 {
			t.Fatal("refused starts of known devices are not audited")
		}
	})
}

func TestStartRateLimit(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now()
		var mu sync.Mutex
		svc := f.service(func(o *vpnsession.Options) {
			o.MaxStarts = 3
			o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		})
		for i := 0; i < 3; i++ {
			f.start(svc, vpnsession.MethodEmail)
		}
		_, err := svc.Start(f.ctx, f.secure.ID, f.device.PublicKey, vpnsession.MethodEmail)
		checkCode(t, "fourth start", err, vpnsession.CodeTooManyAttempts)
		if e, _ := core.AsError(err); e.RetryAfterSeconds <= 0 || e.RetryAfterSeconds > 301 {
			t.Fatalf("retry after %d s", e.RetryAfterSeconds)
		}
		if len(f.mailer.sent) != 3 {
			t.Fatalf("%d e-mails sent, want 3", len(f.mailer.sent))
		}
		mu.Lock()
		now = now.Add(vpnsession.DefaultChallengeTTL + time.Second)
		mu.Unlock()
		f.start(svc, vpnsession.MethodEmail)
	})
}

func TestStartMailFailure(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		f.mailer.fail = errors.New("smtp down")
		svc := f.service(nil)
		_, err := svc.Start(f.ctx, f.secure.ID, f.device.PublicKey, vpnsession.MethodEmail)
		checkCode(t, "mail failure", err, vpnsession.CodeEmailNotSent)
		var attempts int
		if err := db.QueryRowContext(f.ctx, `SELECT attempts FROM vpn_mfa_challenges`).Scan(&attempts); err != nil || attempts != vpnsession.DefaultMaxAttempts {
			t.Fatalf("a challenge whose code was never sent is still usable: attempts %d (%v)", attempts, err)
		}
		if len(f.audits("vpn_mfa.email_failed")) != 1 {
			t.Fatal("mail failure not audited")
		}
	})
}

func TestWrongCodesLimited(t *testing.T) {
	for _, method := range []string{vpnsession.MethodTOTP, vpnsession.MethodEmail} {
		t.Run(method, func(t *testing.T) {
			env.ForEach(t, func(t *testing.T, db *store.DB) {
				f := newFixture(t, db)
				svc := f.service(nil)
				ch := f.start(svc, method)
				right := ""
				if method == vpnsession.MethodEmail {
					right = f.mailer.last(t).Code
				} else {
					right = f.freshCode()
				}
				wrong := fmt.Sprintf("%06d", (mustAtoi(t, right)+1)%1_000_000)
				for i := 1; i <= vpnsession.DefaultMaxAttempts; i++ {
					_, err := svc.Finish(f.ctx, ch.Token, wrong)
					want := vpnsession.CodeInvalidCode
					if i == vpnsession.DefaultMaxAttempts {
						want = vpnsession.CodeTooManyAttempts
					}
					checkCode(t, fmt.Sprintf("wrong code #%d", i), err, want)
					if i < vpnsession.DefaultMaxAttempts && !strings.Contains(err.Error(), fmt.Sprintf("%d attempts left", vpnsession.DefaultMaxAttempts-i)) {
						t.Fatalf("wrong code #%d: %v does not count down", i, err)
					}
				}
				// Dead: even the right code is refused, and not even checked.
				calls := f.verifier.calls
				_, err := svc.Finish(f.ctx, ch.Token, right)
				checkCode(t, "right code after the limit", err, vpnsession.CodeTooManyAttempts)
				if f.verifier.calls != calls {
					t.Fatal("a dead challenge still asked the verifier")
				}
				var attempts int
				if err := db.QueryRowContext(f.ctx, `SELECT attempts FROM vpn_mfa_challenges`).Scan(&attempts); err != nil || attempts != vpnsession.DefaultMaxAttempts {
					t.Fatalf("attempts = %d (%v)", attempts, err)
				}
				if n := len(f.audits("vpn_mfa.failed")); n != vpnsession.DefaultMaxAttempts {
					t.Fatalf("%d failures audited", n)
				}
				if n := len(f.audits("vpn_mfa.refused")); n != 1 {
					t.Fatalf("%d refusals audited", n)
				}
				if _, err := svc.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey); !errors.Is(err, core.ErrNotFound) {
					t.Fatalf("session after failures: %v", err)
				}
			})
		})
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Parallel guesses cannot exceed the limit: each try is reserved in the
// database before the code is checked.
func TestParallelGuessesLimited(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		ch := f.start(svc, vpnsession.MethodEmail)
		wrong := fmt.Sprintf("%06d", (mustAtoi(t, f.mailer.last(t).Code)+1)%1_000_000)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[string]int{}
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := svc.Finish(f.ctx, ch.Token, wrong)
				mu.Lock()
				codes[errCode(err)]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if codes[vpnsession.CodeInvalidCode]+codes[vpnsession.CodeTooManyAttempts] != 20 || codes[vpnsession.CodeInvalidCode] > vpnsession.DefaultMaxAttempts-1 {
			t.Fatalf("outcomes %v", codes)
		}
		var attempts int
		if err := db.QueryRowContext(f.ctx, `SELECT attempts FROM vpn_mfa_challenges`).Scan(&attempts); err != nil || attempts != vpnsession.DefaultMaxAttempts {
			t.Fatalf("attempts = %d (%v)", attempts, err)
		}
		if n := len(f.audits("vpn_mfa.failed")); n != vpnsession.DefaultMaxAttempts {
			t.Fatalf("%d codes were checked, want %d", n, vpnsession.DefaultMaxAttempts)
		}
	})
}

func TestExpiredChallenge(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		var mu sync.Mutex
		now := time.Now()
		svc := f.service(func(o *vpnsession.Options) {
			o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		})
		ch := f.start(svc, vpnsession.MethodEmail)
		mu.Lock()
		now = now.Add(vpnsession.DefaultChallengeTTL)
		mu.Unlock()
		_, err := svc.Finish(f.ctx, ch.Token, f.mailer.last(t).Code)
		checkCode(t, "expired", err, vpnsession.CodeChallengeExpired)
		if !errors.Is(err, core.ErrUnauthenticated) {
			t.Fatalf("expired challenge: %v is not unauthenticated", err)
		}
		_, err = svc.Finish(f.ctx, "wvm_no-such-token", "123456")
		checkCode(t, "unknown token", err, vpnsession.CodeInvalidToken)
	})
}

func TestReplayedToken(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		ch := f.start(svc, vpnsession.MethodEmail)
		c := f.mailer.last(t).Code
		first, err := svc.Finish(f.ctx, ch.Token, c)
		checkCode(t, "first finish", err, vpnsession.CodeNoGatewayConnected)
		// The same token and code again: refused, no second session.
		_, err = svc.Finish(f.ctx, ch.Token, c)
		checkCode(t, "replay", err, vpnsession.CodeChallengeUsed)
		active, err := svc.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey)
		if err != nil || active.ID != first.ID {
			t.Fatalf("active = %+v, %v", active, err)
		}
		var n int
		if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM vpn_sessions`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d sessions", n)
		}

		// Concurrent finishes of one challenge with the right code: one
		// session.
		ch = f.start(svc, vpnsession.MethodEmail)
		c = f.mailer.last(t).Code
		var wg sync.WaitGroup
		results := make([]string, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := svc.Finish(f.ctx, ch.Token, c)
				results[i] = errCode(err)
			}()
		}
		wg.Wait()
		ok := 0
		for _, r := range results {
			switch r {
			case vpnsession.CodeNoGatewayConnected:
				ok++
			case vpnsession.CodeChallengeUsed, vpnsession.CodeTooManyAttempts:
				// lost the race, or found every attempt reserved by the others
			default:
				t.Fatalf("concurrent finish: %q", r)
			}
		}
		if ok != 1 {
			t.Fatalf("%d concurrent finishes succeeded: %v", ok, results)
		}
		if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM vpn_sessions WHERE state IN ('new', 'connected')`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d active sessions", n)
		}
	})
}

func TestTOTPCodeReplayRefused(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		c := f.freshCode()
		ch := f.start(svc, vpnsession.MethodTOTP)
		if _, err := svc.Finish(f.ctx, ch.Token, c); errCode(err) != vpnsession.CodeNoGatewayConnected {
			t.Fatalf("first use: %v", err)
		}
		ch = f.start(svc, vpnsession.MethodTOTP)
		_, err := svc.Finish(f.ctx, ch.Token, c)
		checkCode(t, "reused TOTP code", err, "code_used")
		if !strings.Contains(err.Error(), "attempts left") {
			t.Fatalf("reused code: %v", err)
		}
		// A plain wrong code is invalid_code.
		_, err = svc.Finish(f.ctx, ch.Token, "abc")
		checkCode(t, "garbage code", err, vpnsession.CodeInvalidCode)
	})
}

func TestNewSessionReplacesPrevious(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		gw := f.gateway("gw-1", true)
		gw.serve(t, 0)
		svc := f.service(nil)
		seen := map[string]bool{}
		var sessions []vpnsession.Session
		for i := 0; i < 3; i++ {
			s := f.login(svc)
			checkPSK(t, s.PresharedKey)
			if seen[s.PresharedKey] {
				t.Fatalf("preshared key reused: %q", s.PresharedKey)
			}
			seen[s.PresharedKey] = true
			if p, _ := gw.peer(f.device.PublicKey); p.PresharedKey != s.PresharedKey {
				t.Fatalf("login %d: gateway has psk %q, want %q", i, p.PresharedKey, s.PresharedKey)
			}
			sessions = append(sessions, s)
		}
		for _, old := range sessions[:2] {
			state, psk, reason, closedAt, _ := sessionRow(t, db, old.ID)
			if state != vpnsession.StateDisconnected || reason != vpnsession.ReasonReplaced || psk != "" || closedAt == 0 {
				t.Fatalf("replaced session: state %s reason %s psk %q closed %d", state, reason, psk, closedAt)
			}
		}
		all, total, err := svc.ListSessions(f.ctx, f.secure.ID, vpnsession.SessionFilter{})
		if err != nil || total != 3 || len(all) != 3 || all[0].ID != sessions[2].ID || all[0].State != vpnsession.StateNew ||
			all[1].State != vpnsession.StateDisconnected || all[1].CloseReason != vpnsession.ReasonReplaced {
			t.Fatalf("list = %+v total %d, %v", all, total, err)
		}
		for _, s := range all {
			if s.PresharedKey != "" {
				t.Fatal("ListSessions leaks preshared keys")
			}
		}
		active, total, err := svc.ListSessions(f.ctx, f.secure.ID, vpnsession.SessionFilter{States: []string{"active"}, DeviceID: f.device.ID})
		if err != nil || total != 1 || active[0].ID != sessions[2].ID {
			t.Fatalf("active list = %+v total %d, %v", active, total, err)
		}
		if _, _, err := svc.ListSessions(f.ctx, f.secure.ID, vpnsession.SessionFilter{States: []string{"bogus"}}); !errors.Is(err, core.ErrInvalid) {
			t.Fatalf("bogus state filter: %v", err)
		}
		if n := len(f.audits("vpn_session.closed")); n != 2 {
			t.Fatalf("%d replacements audited", n)
		}
	})
}

// A second core replica (its own services, same database) finishes what the
// first started.
func TestSecondReplicaFinishes(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		gw := f.gateway("gw-1", true)
		gw.serve(t, 0) // follows replica one's hub and polls the database
		one := f.service(nil)
		inst2, err := core.EnsureInstance(f.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		two := vpnsession.New(db, vpn.New(db, nil), inst2, vpnsession.Options{Verifier: f.verifier, Mailer: f.mailer, AckTimeout: 3 * time.Second})
		for _, method := range []string{vpnsession.MethodEmail, vpnsession.MethodTOTP} {
			ch := f.start(one, method)
			c := f.freshCode()
			if method == vpnsession.MethodEmail {
				c = f.mailer.last(t).Code
			}
			sess, err := two.Finish(f.ctx, ch.Token, c)
			if err != nil {
				t.Fatalf("%s: finish on the second replica: %v", method, err)
			}
			if p, ok := gw.peer(f.device.PublicKey); !ok || p.PresharedKey != sess.PresharedKey {
				t.Fatalf("%s: gateway peer %+v", method, p)
			}
			if a, err := one.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey); err != nil || a.ID != sess.ID {
				t.Fatalf("%s: first replica sees %+v, %v", method, a, err)
			}
		}
	})
}

func TestAckWait(t *testing.T) {
	t.Run("acknowledged", func(t *testing.T) {
		env.ForEach(t, func(t *testing.T, db *store.DB) {
			f := newFixture(t, db)
			gw := f.gateway("gw-ack", true)
			gw.serve(t, 150*time.Millisecond) // a slow gateway
			svc := f.service(nil)
			began := time.Now()
			sess := f.login(svc)
			if time.Since(began) < 150*time.Millisecond {
				t.Fatalf("finish returned after %s, before the gateway acknowledged", time.Since(began))
			}
			var applied int64
			if err := db.QueryRowContext(f.ctx, `SELECT applied_revision FROM gateway_links WHERE gateway_id = $1`, gw.id).Scan(&applied); err != nil || applied < sess.Revision {
				t.Fatalf("applied %d < session revision %d (%v)", applied, sess.Revision, err)
			}
		})
	})
	t.Run("not acknowledged", func(t *testing.T) {
		env.ForEach(t, func(t *testing.T, db *store.DB) {
			f := newFixture(t, db)
			acking := f.gateway("gw-ok", true)
			acking.serve(t, 0)
			f.gateway("gw-stuck", true) // connected, never acks
			revoked := f.gateway("gw-revoked", true)
			if err := f.vpn.DeleteGateway(f.ctx, f.admin, f.secure.ID, revoked.id); err != nil {
				t.Fatal(err)
			}
			svc := f.service(func(o *vpnsession.Options) { o.AckTimeout = 200 * time.Millisecond })
			ch := f.start(svc, vpnsession.MethodEmail)
			began := time.Now()
			sess, err := svc.Finish(f.ctx, ch.Token, f.mailer.last(t).Code)
			took := time.Since(began)
			checkCode(t, "stuck gateway", err, vpnsession.CodeGatewaysNotAcknowledged)
			if !errors.Is(err, core.ErrUnavailable) {
				t.Fatalf("%v is not unavailable", err)
			}
			var ae *vpnsession.AckError
			if !errors.As(err, &ae) || len(ae.Lagging) != 1 || ae.Lagging[0].Name != "gw-stuck" || ae.Revision != sess.Revision {
				t.Fatalf("ack error = %+v", ae)
			}
			if !strings.Contains(err.Error(), "gw-stuck") || strings.Contains(err.Error(), "gw-ok") {
				t.Fatalf("message does not name exactly the lagging gateway: %v", err)
			}
			if took < 200*time.Millisecond || took > 2*time.Second {
				t.Fatalf("gave up after %s, want about 200ms", took)
			}
			// The session stays valid and is installed where acknowledged.
			checkPSK(t, sess.PresharedKey)
			if a, err := svc.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey); err != nil || a.ID != sess.ID {
				t.Fatalf("session after timeout: %+v, %v", a, err)
			}
			if p, _ := acking.peer(f.device.PublicKey); p.PresharedKey != sess.PresharedKey {
				t.Fatal("acking gateway lacks the peer")
			}
			if n := len(f.audits("vpn_session.not_acknowledged")); n != 1 {
				t.Fatalf("%d ack failures audited", n)
			}
		})
	})
	t.Run("no gateway connected", func(t *testing.T) {
		env.ForEach(t, func(t *testing.T, db *store.DB) {
			f := newFixture(t, db)
			f.gateway("gw-down", false)
			svc := f.service(nil)
			ch := f.start(svc, vpnsession.MethodEmail)
			began := time.Now()
			sess, err := svc.Finish(f.ctx, ch.Token, f.mailer.last(t).Code)
			checkCode(t, "no gateway", err, vpnsession.CodeNoGatewayConnected)
			if time.Since(began) > time.Second {
				t.Fatalf("no_gateway_connected took %s", time.Since(began))
			}
			if sess.ID == "" || sess.PresharedKey == "" {
				t.Fatalf("no session returned: %+v", sess)
			}
			if a, err := svc.ActiveSession(f.ctx, f.secure.ID, f.device.PublicKey); err != nil || a.ID != sess.ID {
				t.Fatalf("session kept: %+v, %v", a, err)
			}
		})
	})
	t.Run("connected through another replica", func(t *testing.T) {
		env.ForEach(t, func(t *testing.T, db *store.DB) {
			f := newFixture(t, db)
			gw := f.gateway("gw-multi", false) // down on core-a ...
			// ... but up on core-b, which relays its acks.
			if err := f.vpn.RecordLink(f.ctx, f.admin, vpn.LinkEvent{GatewayID: gw.id, CoreID: "core-b", Connected: true, AppliedRevision: gw.revision()}, false); err != nil {
				t.Fatal(err)
			}
			gw.coreID = "core-b"
			gw.serve(t, 0)
			svc := f.service(nil)
			ch := f.start(svc, vpnsession.MethodEmail)
			if _, err := svc.Finish(f.ctx, ch.Token, f.mailer.last(t).Code); err != nil {
				t.Fatalf("finish: %v", err)
			}
		})
	})
}

// TestGatewayUpdates follows a session through vpn.GatewayUpdateSince: the
// peer appears with its key and connect deadline, changes expiry when the
// session connects, and is removed when the sweep closes it.
func TestGatewayUpdates(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		before := f.revision(f.secure.ID)
		if u, err := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, 0); err != nil || len(u.Peers) != 0 {
			t.Fatalf("MFA location before login: %+v, %v", u.Peers, err)
		}
		sess := f.login(svc)
		u, err := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, before)
		if err != nil || u.Snapshot || u.Revision != sess.Revision || len(u.Peers) != 1 || len(u.Removes) != 0 {
			t.Fatalf("update after login: %+v, %v", u, err)
		}
		if p := u.Peers[0]; p.PublicKey != f.device.PublicKey || p.PresharedKey != sess.PresharedKey || p.ExpiresAt != sess.CreatedAt+threshold*1000 {
			t.Fatalf("peer = %+v", p)
		}
		// The plain location never sees MFA sessions.
		if u, _ := f.vpn.GatewayUpdateSince(f.ctx, f.plain.ID, 0); len(u.Peers) != 1 || u.Peers[0].PresharedKey != "" || u.Peers[0].ExpiresAt != 0 {
			t.Fatalf("plain location peers = %+v", u.Peers)
		}

		// Connected: same key, no expiry.
		f.handshake("gw-1", f.device.PublicKey, sess.CreatedAt+1000)
		res, err := svc.Sweep(f.ctx, time.UnixMilli(sess.CreatedAt+2000))
		if err != nil || res.Connected != 1 || res.Closed != 0 {
			t.Fatalf("sweep = %+v, %v", res, err)
		}
		u, _ = f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, sess.Revision)
		if len(u.Peers) != 1 || u.Peers[0].PresharedKey != sess.PresharedKey || u.Peers[0].ExpiresAt != 0 {
			t.Fatalf("update after connect: %+v", u)
		}
		connectedRev := u.Revision

		// Gone quiet: removed.
		res, err = svc.Sweep(f.ctx, time.UnixMilli(sess.CreatedAt+1000+threshold*1000+1))
		if err != nil || res.Closed != 1 {
			t.Fatalf("sweep = %+v, %v", res, err)
		}
		u, _ = f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, connectedRev)
		if u.Snapshot || len(u.Peers) != 0 || len(u.Removes) != 1 || u.Removes[0] != f.device.PublicKey {
			t.Fatalf("update after sweep: %+v", u)
		}
		if u, _ := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, 0); len(u.Peers) != 0 {
			t.Fatalf("snapshot after sweep: %+v", u.Peers)
		}
	})
}

func TestSessionLosesPeerWithAccess(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		sess := f.login(svc)
		rev := f.revision(f.secure.ID)
		// Disabling the user removes the peer at once (vpn), and the sweep
		// then closes the session.
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, f.alice.ID, identity.UserPatch{Active: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		u, _ := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, rev)
		if len(u.Peers) != 0 || len(u.Removes) != 1 {
			t.Fatalf("update after disabling the user: %+v", u)
		}
		res, err := svc.Sweep(f.ctx, time.Now())
		if err != nil || res.Closed != 1 {
			t.Fatalf("sweep = %+v, %v", res, err)
		}
		if state, _, reason, _, _ := sessionRow(t, db, sess.ID); state != vpnsession.StateDisconnected || reason != vpnsession.ReasonAccessRevoked {
			t.Fatalf("session %s/%s", state, reason)
		}
		// Re-enabled, the user must log in again.
		if _, err := f.ident.UpdateUser(f.ctx, f.admin, f.alice.ID, identity.UserPatch{Active: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if u, _ := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, 0); len(u.Peers) != 0 {
			t.Fatalf("peers after re-enabling: %+v", u.Peers)
		}

		// Turning MFA off closes the sessions of the location.
		sess = f.login(svc)
		if _, err := f.vpn.UpdateLocation(f.ctx, f.admin, f.secure.ID, vpn.LocationInput{MFAMode: ptr(vpn.MFADisabled)}); err != nil {
			t.Fatal(err)
		}
		res, err = svc.Sweep(f.ctx, time.Now())
		if err != nil || res.Closed != 1 {
			t.Fatalf("sweep = %+v, %v", res, err)
		}
		if state, _, reason, _, _ := sessionRow(t, db, sess.ID); state != vpnsession.StateDisconnected || reason != vpnsession.ReasonMFADisabled {
			t.Fatalf("session %s/%s", state, reason)
		}
		_, err = svc.Start(f.ctx, f.secure.ID, f.device.PublicKey, vpnsession.MethodEmail)
		checkCode(t, "start without MFA", err, vpnsession.CodeMFANotEnabled)
	})
}
