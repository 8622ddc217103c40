package vpnsession_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/vpnsession"
	"github.com/wardvpn/ward/internal/store"
)

const sec = int64(1000)

func TestSweepTransitions(t *testing.T) {
	thr := int64(threshold) * sec
	type hs struct {
		gateway string
		at      int64 // ms after the session's creation
	}
	type step struct {
		at         int64 // ms after the session's creation
		handshakes []hs  // recorded before this sweep
		state      string
		reason     string
		connected  int64 // connected_at, ms after creation (when connected)
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"never connected", []step{
			{at: thr - sec, state: vpnsession.StateNew},
			{at: thr, state: vpnsession.StateNew},
			{at: thr + 1, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonNeverConnected},
		}},
		{"only a handshake of an older session", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", -10 * sec}}, state: vpnsession.StateNew},
			{at: thr + 1, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonNeverConnected},
		}},
		{"fresh handshake connects", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", 5 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 5*sec + thr, state: vpnsession.StateConnected, connected: 5 * sec},
		}},
		{"connected then stale", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", 5 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 5*sec + thr + 1, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonInactive, connected: 5 * sec},
		}},
		{"handshakes keep it alive", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", 5 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 100 * sec, handshakes: []hs{{"gw-1", 95 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 95*sec + thr, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 95*sec + thr + 1, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonInactive, connected: 5 * sec},
		}},
		{"handshake on a second gateway keeps it alive", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", 5 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			// Failover: gw-1 stops seeing the client, gw-2 takes over.
			{at: 5*sec + thr + 1, handshakes: []hs{{"gw-2", 120 * sec}}, state: vpnsession.StateConnected, connected: 5 * sec},
			{at: 120*sec + thr + 1, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonInactive, connected: 5 * sec},
		}},
		{"connected and stale before a sweep saw it", []step{
			{at: 5*sec + thr + 1, handshakes: []hs{{"gw-1", 5 * sec}}, state: vpnsession.StateDisconnected, reason: vpnsession.ReasonInactive, connected: 5 * sec},
		}},
		{"first handshake on the second gateway", []step{
			{at: 10 * sec, handshakes: []hs{{"gw-1", -60 * sec}, {"gw-2", 3 * sec}}, state: vpnsession.StateConnected, connected: 3 * sec},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.ForEach(t, func(t *testing.T, db *store.DB) {
				f := newFixture(t, db)
				svc := f.service(nil)
				sess := f.login(svc)
				key := f.device.PublicKey
				state, rev := vpnsession.StateNew, f.revision(f.secure.ID)
				for i, st := range tc.steps {
					for _, h := range st.handshakes {
						f.handshake(h.gateway, key, sess.CreatedAt+h.at)
					}
					res, err := svc.Sweep(f.ctx, time.UnixMilli(sess.CreatedAt+st.at))
					if err != nil {
						t.Fatalf("step %d: sweep: %v", i, err)
					}
					gotState, psk, reason, closedAt, connectedAt := sessionRow(t, db, sess.ID)
					if gotState != st.state || reason != st.reason {
						t.Fatalf("step %d: state %s/%q, want %s/%q", i, gotState, reason, st.state, st.reason)
					}
					if want := map[bool]int64{true: sess.CreatedAt + st.connected, false: 0}[st.connected != 0]; connectedAt != want {
						t.Fatalf("step %d: connected_at %d, want %d", i, connectedAt, want)
					}
					if (gotState == vpnsession.StateDisconnected) != (closedAt > 0 && psk == "") {
						t.Fatalf("step %d: closed_at %d, psk %q in state %s", i, closedAt, psk, gotState)
					}
					// A transition bumps the revision with the key; nothing
					// else does.
					newRev := f.revision(f.secure.ID)
					changed := gotState != state
					if changed != (newRev == rev+1) || (!changed && newRev != rev) {
						t.Fatalf("step %d: %s -> %s moved the revision %d -> %d", i, state, gotState, rev, newRev)
					}
					if (res.Connected+res.Closed > 0) != changed {
						t.Fatalf("step %d: result %+v for %s -> %s", i, res, state, gotState)
					}
					if changed {
						u, err := f.vpn.GatewayUpdateSince(f.ctx, f.secure.ID, rev)
						if err != nil {
							t.Fatal(err)
						}
						switch gotState {
						case vpnsession.StateConnected:
							if len(u.Peers) != 1 || u.Peers[0].ExpiresAt != 0 || u.Peers[0].PresharedKey != sess.PresharedKey || len(u.Removes) != 0 {
								t.Fatalf("step %d: update on connect %+v", i, u)
							}
						case vpnsession.StateDisconnected:
							if len(u.Peers) != 0 || len(u.Removes) != 1 || u.Removes[0] != key {
								t.Fatalf("step %d: update on close %+v", i, u)
							}
						}
					}
					state, rev = gotState, newRev
				}
				if state == vpnsession.StateDisconnected {
					if n := len(f.audits("vpn_session.closed")); n != 1 {
						t.Fatalf("%d closings audited", n)
					}
				}
			})
		})
	}
}

func TestSweepIdempotent(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		svc := f.service(nil)
		sess := f.login(svc)
		at := time.UnixMilli(sess.CreatedAt + threshold*sec + 1)
		res, err := svc.Sweep(f.ctx, at)
		if err != nil || res.Closed != 1 {
			t.Fatalf("first sweep = %+v, %v", res, err)
		}
		rev := f.revision(f.secure.ID)
		for i := 0; i < 2; i++ {
			res, err = svc.Sweep(f.ctx, at.Add(time.Duration(i)*time.Minute))
			if err != nil || res != (vpnsession.SweepResult{}) {
				t.Fatalf("sweep again = %+v, %v", res, err)
			}
		}
		if f.revision(f.secure.ID) != rev {
			t.Fatal("a sweep without changes bumped the revision")
		}
		if n := len(f.audits("vpn_session.closed")); n != 1 {
			t.Fatalf("%d closings audited", n)
		}
	})
}

// Replicas sweeping at once: every transition happens once, with one
// revision bump and one audit entry each.
func TestSweepConcurrentReplicas(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		var sessions []vpnsession.Session
		one := f.service(nil)
		for i := 0; i < 4; i++ {
			u := f.user(fmt.Sprintf("user%d", i))
			f.device = f.newDevice(fmt.Sprintf("laptop%d", i), u.ID)
			sessions = append(sessions, f.login(one))
		}
		last := sessions[len(sessions)-1].CreatedAt
		// Two connect (fresh handshakes), two never connected.
		at := time.UnixMilli(last + threshold*sec + 1)
		f.handshake("gw-1", sessions[0].PublicKey, at.UnixMilli()-1000)
		f.handshake("gw-2", sessions[1].PublicKey, at.UnixMilli()-1000)
		rev := f.revision(f.secure.ID)

		const replicas = 6
		results := make([]vpnsession.SweepResult, replicas)
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < replicas; i++ {
			svc := vpnsession.New(db, vpn.New(db, nil), f.inst, vpnsession.Options{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = svc.Sweep(f.ctx, at)
			}()
		}
		close(start)
		wg.Wait()
		var total vpnsession.SweepResult
		for i := range results {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			total.Connected += results[i].Connected
			total.Closed += results[i].Closed
		}
		if total != (vpnsession.SweepResult{Connected: 2, Closed: 2}) {
			t.Fatalf("sweeps together = %+v, want 2 connected and 2 closed once", total)
		}
		if got := f.revision(f.secure.ID); got != rev+1 {
			t.Fatalf("revision %d -> %d, want one bump", rev, got)
		}
		if c, d := len(f.audits("vpn_session.connected")), len(f.audits("vpn_session.closed")); c != 2 || d != 2 {
			t.Fatalf("audited %d connections and %d closings", c, d)
		}
		for i, s := range sessions {
			state, _, reason, _, _ := sessionRow(t, db, s.ID)
			want := vpnsession.StateConnected
			if i >= 2 {
				want = vpnsession.StateDisconnected
			}
			if state != want || (i >= 2 && reason != vpnsession.ReasonNeverConnected) {
				t.Fatalf("session %d: %s/%s", i, state, reason)
			}
		}
	})
}

func TestSweepClosesAndPurgesChallenges(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		sess := f.login(f.service(nil))
		// An expired challenge older than the retention is purged.
		f.start(f.service(nil), vpnsession.MethodEmail)
		later := time.UnixMilli(sess.CreatedAt).Add(vpnsession.ChallengeRetention + time.Hour)
		if _, err := f.service(nil).Sweep(f.ctx, later); err != nil {
			t.Fatal(err)
		}
		state, _, reason, _, _ := sessionRow(t, db, sess.ID)
		if state != vpnsession.StateDisconnected || reason != vpnsession.ReasonNeverConnected {
			t.Fatalf("session %s/%s after the sweep, want disconnected/never_connected", state, reason)
		}
		var n int
		if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM vpn_mfa_challenges`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d old challenges left (%v)", n, err)
		}
	})
}
