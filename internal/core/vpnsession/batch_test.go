package vpnsession_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/vpnsession"
	"github.com/wardvpn/ward/internal/store"
)

// Logins finishing at once share transactions (group commit). Whatever the
// batching: every login gets its own session and key on the gateway, a
// device logging in twice at once ends with one active session, and a
// login refused in the middle of a batch does not take the others down.
func TestConcurrentLogins(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		gw := f.gateway("gw-1", true)
		gw.serve(t, 0)
		svc := f.service(nil)

		const users = 16
		type login struct {
			device vpn.Device
			secret string
			userID string
		}
		var logins []login
		for i := 0; i < users; i++ {
			u := f.user(fmt.Sprintf("batch-%02d", i))
			logins = append(logins, login{device: f.newDevice(fmt.Sprintf("batch-%02d-laptop", i), u.ID), secret: f.verifier.enroll(t, u.ID), userID: u.ID})
		}
		// Every challenge is started first, then the owner of the last
		// device is disabled: its finish must be refused, the others not.
		tokens := make([]string, users)
		for i, l := range logins {
			ch, err := svc.Start(f.ctx, f.secure.ID, l.device.PublicKey, vpnsession.MethodTOTP)
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
			tokens[i] = ch.Token
		}
		// alice's device logs in twice at once, by e-mail codes.
		var aliceTokens, aliceCodes []string
		for i := 0; i < 2; i++ {
			ch := f.start(svc, vpnsession.MethodEmail)
			aliceTokens, aliceCodes = append(aliceTokens, ch.Token), append(aliceCodes, f.mailer.last(t).Code)
		}
		disabled := logins[users-1]
		if _, err := db.ExecContext(f.ctx, `UPDATE users SET active = FALSE WHERE id = $1`, disabled.userID); err != nil {
			t.Fatal(err)
		}

		sessions := make([]vpnsession.Session, users+2)
		errs := make([]error, users+2)
		var wg sync.WaitGroup
		for i := range logins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sessions[i], errs[i] = svc.Finish(f.ctx, tokens[i], code(t, logins[i].secret))
			}()
		}
		for i := range aliceTokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sessions[users+i], errs[users+i] = svc.Finish(f.ctx, aliceTokens[i], aliceCodes[i])
			}()
		}
		wg.Wait()

		checkCode(t, "finish of a disabled user", errs[users-1], vpnsession.CodeAccountDisabled)
		revisions := map[int64]bool{}
		for i, err := range errs {
			if i == users-1 {
				continue
			}
			if err != nil {
				t.Fatalf("finish %d: %v", i, err)
			}
			checkPSK(t, sessions[i].PresharedKey)
			revisions[sessions[i].Revision] = true
		}
		t.Logf("%d logins committed in %d revisions", users+1, len(revisions))
		for i, l := range logins[:users-1] {
			p, ok := gw.peer(l.device.PublicKey)
			if !ok || p.PresharedKey != sessions[i].PresharedKey {
				t.Fatalf("login %d: gateway peer %+v (present %v), want the session's key", i, p, ok)
			}
		}
		if _, ok := gw.peer(disabled.device.PublicKey); ok {
			t.Fatal("the disabled user's device is a peer")
		}

		// alice: exactly one active session, the other replaced by it.
		active, total, err := svc.ListSessions(f.ctx, f.secure.ID, vpnsession.SessionFilter{States: []string{"active"}, DeviceID: f.device.ID})
		if err != nil || total != 1 {
			t.Fatalf("alice has %d active sessions (%v), want 1", total, err)
		}
		var replaced vpnsession.Session
		for _, s := range sessions[users:] {
			if s.ID != active[0].ID {
				replaced = s
			}
		}
		if state, psk, reason, _, _ := sessionRow(t, db, replaced.ID); state != vpnsession.StateDisconnected || reason != vpnsession.ReasonReplaced || psk != "" {
			t.Fatalf("alice's other session: state %s reason %s psk %q", state, reason, psk)
		}
		if replaced.Revision >= active[0].Revision {
			t.Fatalf("the replaced session has revision %d, the active one %d: the replacement must come later", replaced.Revision, active[0].Revision)
		}
		if p, _ := gw.peer(f.device.PublicKey); p.PresharedKey != sessions[users].PresharedKey && p.PresharedKey != sessions[users+1].PresharedKey {
			t.Fatal("alice's peer carries neither session's key")
		} else if p.PresharedKey == replaced.PresharedKey {
			t.Fatal("alice's peer carries the replaced session's key")
		}
		if n := len(f.audits("vpn_session.created")); n != users+1 {
			t.Fatalf("%d sessions audited as created, want %d", n, users+1)
		}
		if n := len(f.audits("vpn_mfa.start")); n != users+2 {
			t.Fatalf("%d starts audited, want %d", n, users+2)
		}
	})
}

// Starts of one device at once are batched apart from each other, so the
// start limit holds exactly.
func TestConcurrentStartsLimited(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(func(o *vpnsession.Options) { o.MaxStarts = 3 })
		const tries = 12
		errs := make([]error, tries)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = svc.Start(f.ctx, f.secure.ID, f.device.PublicKey, vpnsession.MethodTOTP)
			}()
		}
		wg.Wait()
		ok, limited := 0, 0
		for _, err := range errs {
			switch errCode(err) {
			case "":
				ok++
			case vpnsession.CodeTooManyAttempts:
				limited++
			default:
				t.Fatalf("start: %v", err)
			}
		}
		if ok != 3 || limited != tries-3 {
			t.Fatalf("%d starts accepted and %d limited, want 3 and %d", ok, limited, tries-3)
		}
	})
}
