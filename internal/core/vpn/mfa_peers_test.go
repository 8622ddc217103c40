package vpn

import (
	"database/sql"
	"testing"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/store"
)

// TestMFAPeers: in an MFA location the peers are the devices with an active
// VPN session (table of core/vpnsession), carrying its preshared key and,
// while new, its connect deadline; TouchPeers is how sessions reach gateways.
func TestMFAPeers(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		secure := e.location("secure", func(in *LocationInput) {
			in.MFAMode, in.DisconnectThreshold = ptr(MFAInternal), ptr(200)
		}, "10.30.0.0/24")
		alice := e.user("alice")
		kA, kB := newPublicKey(t), newPublicKey(t)
		devA := e.device(NewDevice{Name: "alice-laptop", PublicKey: kA, UserID: alice.ID})
		devB := e.device(NewDevice{Name: "admin-laptop", PublicKey: kB})

		touch := func(keys ...string) int64 {
			t.Helper()
			var rev int64
			err := db.Tx(e.ctx, func(tx *sql.Tx) error {
				var err error
				rev, err = e.svc.TouchPeers(e.ctx, tx, secure.ID, "mfa.test", "subject", keys...)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return rev
		}
		session := func(id string, d Device, key, state, psk string, created int64) {
			t.Helper()
			if _, err := db.ExecContext(e.ctx, `INSERT INTO vpn_sessions (id, location_id, device_id, user_id, public_key, method, state, preshared_key, revision, created_at)
				VALUES ($1, $2, $3, $4, $5, 'totp', $6, $7, 0, $8)`, id, secure.ID, d.ID, d.UserID, key, state, psk, created); err != nil {
				t.Fatal(err)
			}
		}

		// TouchPeers bumps once and records the keys.
		wake, unsubscribe := e.svc.Hub().Subscribe(secure.ID)
		defer unsubscribe()
		rev0 := e.revision(secure.ID)
		session("s-a", devA, kA, "new", "psk-a", 1_000_000)
		rev1 := touch(kA)
		if rev1 != rev0+1 || e.revision(secure.ID) != rev1 {
			t.Fatalf("TouchPeers revision %d, location at %d, was %d", rev1, e.revision(secure.ID), rev0)
		}
		select {
		case <-wake:
		default:
			t.Fatal("TouchPeers did not wake the location's followers after commit")
		}
		u := e.update(secure.ID, rev0)
		checkChanges(t, "session A", u, rev0, rev1)
		ipA := "10.30.0.2/32"
		checkPeers(t, "session A", u.Peers, peerString(Peer{PublicKey: kA, DeviceID: devA.ID, AllowedIPs: []string{ipA},
			PresharedKey: "psk-a", ExpiresAt: 1_000_000 + 200_000}))
		checkRemoves(t, "session A", u.Removes)

		// A session for a key the device no longer has, and a closed one,
		// are no peers.
		session("s-b-old", devB, newPublicKey(t), "connected", "psk-old", 1_000_000)
		session("s-b-closed", devB, kB, "disconnected", "", 1_000_000)
		u = e.update(secure.ID, 0)
		checkPeers(t, "snapshot", u.Peers, peerString(Peer{PublicKey: kA, DeviceID: devA.ID, AllowedIPs: []string{ipA},
			PresharedKey: "psk-a", ExpiresAt: 1_200_000}))

		// Connected: no expiry.
		if _, err := db.ExecContext(e.ctx, `UPDATE vpn_sessions SET state = 'connected' WHERE id = 's-a'`); err != nil {
			t.Fatal(err)
		}
		rev2 := touch(kA)
		u = e.update(secure.ID, rev1)
		checkChanges(t, "connected", u, rev1, rev2)
		checkPeers(t, "connected", u.Peers, peerString(Peer{PublicKey: kA, DeviceID: devA.ID, AllowedIPs: []string{ipA}, PresharedKey: "psk-a"}))

		// A disabled owner is no peer even with a session.
		if _, err := e.ident.UpdateUser(e.ctx, e.admin, alice.ID, identity.UserPatch{Active: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		u = e.update(secure.ID, 0)
		checkPeers(t, "owner disabled", u.Peers)
		if _, err := e.ident.UpdateUser(e.ctx, e.admin, alice.ID, identity.UserPatch{Active: ptr(true)}); err != nil {
			t.Fatal(err)
		}

		// Closed: removed.
		rev3 := e.revision(secure.ID)
		if _, err := db.ExecContext(e.ctx, `UPDATE vpn_sessions SET state = 'disconnected', preshared_key = '' WHERE id = 's-a'`); err != nil {
			t.Fatal(err)
		}
		rev4 := touch(kA)
		u = e.update(secure.ID, rev3)
		checkChanges(t, "closed", u, rev3, rev4)
		checkPeers(t, "closed", u.Peers)
		checkRemoves(t, "closed", u.Removes, kA)

		// Unknown location: an error, nothing bumped.
		err := db.Tx(e.ctx, func(tx *sql.Tx) error {
			_, err := e.svc.TouchPeers(e.ctx, tx, "no-such-location", "mfa.test", "x", kA)
			return err
		})
		if err == nil {
			t.Fatal("TouchPeers on an unknown location succeeded")
		}
	})
}

// TestMFAModeSwitch: turning MFA on removes every device from the gateways
// (they need a session first); turning it off brings them back.
func TestMFAModeSwitch(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24")
		kA, kN := newPublicKey(t), newPublicKey(t)
		devA := e.device(NewDevice{Name: "laptop", PublicKey: kA})
		devN := e.device(NewDevice{Name: "router", PublicKey: kN, Kind: KindNetwork, LocationID: office.ID})
		pA := wantPeer(devA, kA, "10.10.0.2/32")
		pN := wantPeer(devN, kN, "10.10.0.3/32")

		rev := e.revision(office.ID)
		if _, err := e.svc.UpdateLocation(e.ctx, e.admin, office.ID, LocationInput{MFAMode: ptr(MFAInternal), DisconnectThreshold: ptr(300)}); err != nil {
			t.Fatal(err)
		}
		u := e.update(office.ID, rev)
		checkChanges(t, "MFA on", u, rev, rev+1)
		checkPeers(t, "MFA on", u.Peers)
		checkRemoves(t, "MFA on", u.Removes, kA, kN)

		// Other changes of an MFA location remove nothing more.
		if _, err := e.svc.UpdateLocation(e.ctx, e.admin, office.ID, LocationInput{MTU: ptr(1400)}); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, rev+1)
		checkPeers(t, "MTU change", u.Peers)
		checkRemoves(t, "MTU change", u.Removes)

		rev = e.revision(office.ID)
		if _, err := e.svc.UpdateLocation(e.ctx, e.admin, office.ID, LocationInput{MFAMode: ptr(MFADisabled)}); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, rev)
		checkChanges(t, "MFA off", u, rev, rev+1)
		checkPeers(t, "MFA off", u.Peers, pA, pN)
		checkRemoves(t, "MFA off", u.Removes)
		entries, _, err := core.ListAudit(e.ctx, db, core.AuditFilter{Action: "location.update", Limit: 10})
		if err != nil || len(entries) != 3 {
			t.Fatalf("location updates audited: %d, %v", len(entries), err)
		}
	})
}
