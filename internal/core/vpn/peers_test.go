package vpn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/store"
)

// peerEnv is an instance with an admin, over one database.
type peerEnv struct {
	t     *testing.T
	ctx   context.Context
	db    *store.DB
	svc   *Service
	ident *identity.Service
	admin core.Actor
}

func newPeerEnv(t *testing.T, db *store.DB) *peerEnv {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(db, nil)
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, svc, nil)
	if _, err := ident.EnsureAdmin(ctx, "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	return &peerEnv{t: t, ctx: ctx, db: db, svc: svc, ident: ident, admin: core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}}
}

func ptr[T any](v T) *T { return &v }

func (e *peerEnv) location(name string, edit func(*LocationInput), addrs ...string) Location {
	e.t.Helper()
	in := LocationInput{Name: ptr(name), Addresses: ptr(addrs), Endpoint: ptr(name + ".example.com")}
	if edit != nil {
		edit(&in)
	}
	l, err := e.svc.CreateLocation(e.ctx, e.admin, in)
	if err != nil {
		e.t.Fatalf("create location %s: %v", name, err)
	}
	return l
}

func (e *peerEnv) user(name string) identity.User {
	e.t.Helper()
	u, err := e.ident.CreateUser(e.ctx, e.admin, identity.NewUser{Username: name, Email: name + "@example.com"})
	if err != nil {
		e.t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

func (e *peerEnv) device(in NewDevice) Device {
	e.t.Helper()
	d, err := e.svc.CreateDevice(e.ctx, e.admin, in)
	if err != nil {
		e.t.Fatalf("create device %s: %v", in.Name, err)
	}
	return d.Device
}

func (e *peerEnv) revision(locationID string) int64 {
	e.t.Helper()
	var rev int64
	if err := e.db.QueryRowContext(e.ctx, `SELECT revision FROM locations WHERE id = $1`, locationID).Scan(&rev); err != nil {
		e.t.Fatal(err)
	}
	return rev
}

func (e *peerEnv) update(locationID string, from int64) GatewayUpdate {
	e.t.Helper()
	u, err := e.svc.GatewayUpdateSince(e.ctx, locationID, from)
	if err != nil {
		e.t.Fatalf("GatewayUpdateSince(%d): %v", from, err)
	}
	return u
}

func newPublicKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func peerString(p Peer) string {
	return fmt.Sprintf("%s dev=%s ips=%s psk=%q exp=%d", p.PublicKey, p.DeviceID, strings.Join(p.AllowedIPs, ","), p.PresharedKey, p.ExpiresAt)
}

func wantPeer(d Device, key string, ips ...string) string {
	return peerString(Peer{PublicKey: key, DeviceID: d.ID, AllowedIPs: ips})
}

// checkPeers compares peers in order.
func checkPeers(t *testing.T, what string, got []Peer, want ...string) {
	t.Helper()
	g := make([]string, len(got))
	for i, p := range got {
		g[i] = peerString(p)
	}
	if !slices.Equal(g, want) {
		t.Fatalf("%s: peers\n  got  %q\n  want %q", what, g, want)
	}
}

func checkRemoves(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	w := slices.Clone(want)
	slices.Sort(w)
	if len(got) != len(w) || (len(w) > 0 && !slices.Equal(got, w)) {
		t.Fatalf("%s: removes %q, want %q", what, got, w)
	}
}

// checkChanges asserts an incremental update from..to.
func checkChanges(t *testing.T, what string, u GatewayUpdate, from, to int64) {
	t.Helper()
	if u.Snapshot || u.FromRevision != from || u.Revision != to {
		t.Fatalf("%s: snapshot=%v from=%d to=%d, want changes %d..%d", what, u.Snapshot, u.FromRevision, u.Revision, from, to)
	}
}

func checkSnapshot(t *testing.T, what string, u GatewayUpdate, rev int64) {
	t.Helper()
	if !u.Snapshot || u.Revision != rev || len(u.Removes) != 0 {
		t.Fatalf("%s: snapshot=%v revision=%d removes=%v, want a snapshot at %d", what, u.Snapshot, u.Revision, u.Removes, rev)
	}
	if u.Peers == nil {
		t.Fatalf("%s: snapshot with nil peers", what)
	}
}

func TestGatewayUpdateSince(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24", "fd00:10::/64")
		secure := e.location("secure", func(in *LocationInput) { in.MFAMode = ptr(MFAInternal) }, "10.30.0.0/24")
		admins := e.location("admins-only", func(in *LocationInput) { in.AllowedGroups = &[]string{"admin"} }, "10.40.0.0/24")
		if office.Revision != 1 {
			t.Fatalf("new location at revision %d, want 1", office.Revision)
		}

		// A fresh location: a snapshot without peers, and the interface.
		u := e.update(office.ID, 0)
		checkSnapshot(t, "empty location", u, 1)
		checkPeers(t, "empty location", u.Peers)
		priv, err := wgtypes.ParseKey(u.Interface.PrivateKey)
		if err != nil {
			t.Fatalf("interface private key: %v", err)
		}
		if in := u.Interface; in.LocationID != office.ID || in.LocationName != "office" || priv.PublicKey().String() != office.PublicKey ||
			in.ListenPort != DefaultListenPort || in.MTU != DefaultMTU || in.FwMark != 0 ||
			!slices.Equal(in.Addresses, []string{"10.10.0.1/24", "fd00:10::1/64"}) {
			t.Fatalf("interface = %+v", in)
		}

		alice := e.user("alice")
		if rev := e.revision(office.ID); rev != 1 {
			t.Fatalf("a user without devices bumped the revision to %d", rev)
		}
		kA, kB, kN := newPublicKey(t), newPublicKey(t), newPublicKey(t)
		devA := e.device(NewDevice{Name: "admin-laptop", PublicKey: kA})
		devB := e.device(NewDevice{Name: "alice-laptop", PublicKey: kB, UserID: alice.ID})
		devN := e.device(NewDevice{Name: "router", PublicKey: kN, Kind: KindNetwork, LocationID: office.ID})
		pA := wantPeer(devA, kA, "10.10.0.2/32", "fd00:10::2/128")
		pB := wantPeer(devB, kB, "10.10.0.3/32", "fd00:10::3/128")
		pN := wantPeer(devN, kN, "10.10.0.4/32", "fd00:10::4/128")
		revABN := e.revision(office.ID)
		if revABN != 4 {
			t.Fatalf("revision after three devices = %d, want 4", revABN)
		}

		// From 0: a snapshot of every peer.
		u = e.update(office.ID, 0)
		checkSnapshot(t, "office from 0", u, revABN)
		checkPeers(t, "office from 0", u.Peers, pA, pB, pN)
		// Restricted to the admin group: only the admin's device.
		u = e.update(admins.ID, 0)
		checkSnapshot(t, "admins-only from 0", u, e.revision(admins.ID))
		checkPeers(t, "admins-only from 0", u.Peers, wantPeer(devA, kA, "10.40.0.2/32"))
		// MFA: the devices hold addresses there, but no peer is installed
		// without an authorized session.
		if d, err := e.svc.GetDevice(e.ctx, e.admin, devB.ID); err != nil || !slices.ContainsFunc(d.Addresses, func(a DeviceAddress) bool { return a.LocationID == secure.ID }) {
			t.Fatalf("device B has no address in the MFA location: %+v %v", d.Addresses, err)
		}
		u = e.update(secure.ID, 0)
		checkSnapshot(t, "MFA location from 0", u, e.revision(secure.ID))
		checkPeers(t, "MFA location from 0", u.Peers)
		if e.revision(secure.ID) < 3 {
			t.Fatalf("MFA location revision %d: device changes must still bump it", e.revision(secure.ID))
		}
		// From before the devices: changes with all of them.
		u = e.update(office.ID, 1)
		checkChanges(t, "office 1..", u, 1, revABN)
		checkPeers(t, "office 1..", u.Peers, pA, pB, pN)
		checkRemoves(t, "office 1..", u.Removes)

		// A new device: exactly its peer.
		adminsRev := e.revision(admins.ID)
		kC := newPublicKey(t)
		devC := e.device(NewDevice{Name: "alice-phone", PublicKey: kC, UserID: alice.ID})
		pC := wantPeer(devC, kC, "10.10.0.5/32", "fd00:10::5/128")
		u = e.update(office.ID, revABN)
		checkChanges(t, "add C", u, revABN, revABN+1)
		checkPeers(t, "add C", u.Peers, pC)
		checkRemoves(t, "add C", u.Removes)
		if e.revision(admins.ID) != adminsRev {
			t.Fatal("a device of a user outside the admin group bumped the admins-only location")
		}
		if u := e.update(admins.ID, adminsRev); u.Snapshot || len(u.Peers) != 0 || len(u.Removes) != 0 {
			t.Fatalf("admins-only at its revision: %+v", u)
		}

		// Deleting it: its key is removed.
		revC := e.revision(office.ID)
		if err := e.svc.DeleteDevice(e.ctx, e.admin, devC.ID); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, revC)
		checkChanges(t, "delete C", u, revC, revC+1)
		checkPeers(t, "delete C", u.Peers)
		checkRemoves(t, "delete C", u.Removes, kC)
		// A gateway that never saw C gets a (harmless) removal too.
		u = e.update(office.ID, revABN)
		checkChanges(t, "add+delete C", u, revABN, revC+1)
		checkPeers(t, "add+delete C", u.Peers)
		checkRemoves(t, "add+delete C", u.Removes, kC)

		// A new key: the old key leaves, the new one is upserted.
		revKey := e.revision(office.ID)
		kB2 := newPublicKey(t)
		if _, err := e.svc.UpdateDevice(e.ctx, e.admin, devB.ID, DevicePatch{PublicKey: ptr(kB2)}); err != nil {
			t.Fatal(err)
		}
		pB2 := wantPeer(devB, kB2, "10.10.0.3/32", "fd00:10::3/128")
		u = e.update(office.ID, revKey)
		checkChanges(t, "key change", u, revKey, revKey+1)
		checkPeers(t, "key change", u.Peers, pB2)
		checkRemoves(t, "key change", u.Removes, kB)
		// A rename is no peer change.
		if _, err := e.svc.UpdateDevice(e.ctx, e.admin, devB.ID, DevicePatch{Name: ptr("alice-laptop-2")}); err != nil {
			t.Fatal(err)
		}
		if rev := e.revision(office.ID); rev != revKey+1 {
			t.Fatalf("renaming a device bumped the revision to %d", rev)
		}

		// Deactivating the user removes their peers; network devices and
		// other users' devices stay.
		revActive := e.revision(office.ID)
		if _, err := e.ident.UpdateUser(e.ctx, e.admin, alice.ID, identity.UserPatch{Active: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, revActive)
		checkChanges(t, "deactivate", u, revActive, revActive+1)
		checkPeers(t, "deactivate", u.Peers)
		checkRemoves(t, "deactivate", u.Removes, kB2)
		u = e.update(office.ID, 0)
		checkSnapshot(t, "snapshot of deactivated", u, revActive+1)
		checkPeers(t, "snapshot of deactivated", u.Peers, pA, pN)
		// ... and reactivating brings them back with the same addresses.
		if _, err := e.ident.UpdateUser(e.ctx, e.admin, alice.ID, identity.UserPatch{Active: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, revActive+1)
		checkChanges(t, "reactivate", u, revActive+1, revActive+2)
		checkPeers(t, "reactivate", u.Peers, pB2)
		checkRemoves(t, "reactivate", u.Removes)

		// Deleting the user removes their peers.
		revDel := e.revision(office.ID)
		if err := e.ident.DeleteUser(e.ctx, e.admin, alice.ID); err != nil {
			t.Fatal(err)
		}
		u = e.update(office.ID, revDel)
		checkChanges(t, "delete user", u, revDel, revDel+1)
		checkPeers(t, "delete user", u.Peers)
		checkRemoves(t, "delete user", u.Removes, kB2)

		// Up to date: nothing at all.
		cur := e.revision(office.ID)
		u = e.update(office.ID, cur)
		if u.Snapshot || u.FromRevision != cur || u.Revision != cur || u.Peers != nil || u.Removes != nil {
			t.Fatalf("up to date: %+v", u)
		}
		if u.Interface.LocationID != office.ID {
			t.Fatalf("up to date without interface: %+v", u.Interface)
		}
		// Ahead of core (e.g. a database restored from a backup), or no
		// revision: a snapshot.
		for _, from := range []int64{cur + 1, cur + 100, -1} {
			u = e.update(office.ID, from)
			checkSnapshot(t, fmt.Sprintf("from %d", from), u, cur)
			checkPeers(t, fmt.Sprintf("from %d", from), u.Peers, pA, pN)
		}

		if _, err := e.svc.GatewayUpdateSince(e.ctx, "no-such-location", 0); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("unknown location: %v", err)
		}
	})
}

// Past snapshotThreshold changed peers, a snapshot is cheaper than changes.
func TestGatewayUpdateSinceSnapshotThreshold(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24")
		kA := newPublicKey(t)
		devA := e.device(NewDevice{Name: "admin-laptop", PublicKey: kA})
		start := e.revision(office.ID)
		bulk := func(keys []string) {
			t.Helper()
			err := db.Tx(e.ctx, func(tx *sql.Tx) error {
				return e.svc.newRevisions(tx).bump(e.ctx, office.ID, "test.bulk", office.ID, keys...)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		gone := make([]string, snapshotThreshold-1)
		for i := range gone {
			gone[i] = fmt.Sprintf("gone-%05d", i)
		}
		// Threshold-1 vanished keys plus a real one: still changes, the
		// lookup of present peers spans several chunks.
		bulk(append(slices.Clone(gone), kA))
		u := e.update(office.ID, start)
		checkChanges(t, "at the threshold", u, start, start+1)
		checkPeers(t, "at the threshold", u.Peers, wantPeer(devA, kA, "10.10.0.2/32"))
		checkRemoves(t, "at the threshold", u.Removes, gone...)
		// One more changed key: a snapshot.
		bulk([]string{"gone-last"})
		u = e.update(office.ID, start)
		checkSnapshot(t, "past the threshold", u, start+2)
		checkPeers(t, "past the threshold", u.Peers, wantPeer(devA, kA, "10.10.0.2/32"))
		// From the newer revision it is a small change again.
		u = e.update(office.ID, start+1)
		checkChanges(t, "after the bulk", u, start+1, start+2)
		checkRemoves(t, "after the bulk", u.Removes, "gone-last")
	})
}

func expectSignal(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Fatalf("%s: no signal", what)
	}
}

func expectNoSignal(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: unexpected signal", what)
	default:
	}
}

func TestLocationChangeSignals(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24")
		admins := e.location("admins-only", func(in *LocationInput) { in.AllowedGroups = &[]string{"admin"} }, "10.40.0.0/24")
		hub := e.svc.Hub()
		ch, stop := hub.Subscribe(office.ID)
		defer stop()
		chAdmins, stopAdmins := hub.Subscribe(admins.ID)
		defer stopAdmins()

		alice := e.user("alice")
		expectNoSignal(t, "user without devices", ch)
		e.device(NewDevice{Name: "alice-laptop", PublicKey: newPublicKey(t), UserID: alice.ID})
		expectSignal(t, "device added", ch)
		expectNoSignal(t, "device added, other location", chAdmins)

		// Every subscriber is woken; pending signals coalesce.
		ch2, stop2 := hub.Subscribe(office.ID)
		e.device(NewDevice{Name: "alice-phone", PublicKey: newPublicKey(t), UserID: alice.ID})
		e.device(NewDevice{Name: "alice-tablet", PublicKey: newPublicKey(t), UserID: alice.ID})
		expectSignal(t, "two devices, first subscriber", ch)
		expectNoSignal(t, "two devices coalesce", ch)
		expectSignal(t, "two devices, second subscriber", ch2)
		stop2()
		e.device(NewDevice{Name: "alice-watch", PublicKey: newPublicKey(t), UserID: alice.ID})
		expectSignal(t, "after unsubscribe, first subscriber", ch)
		expectNoSignal(t, "after unsubscribe, second subscriber", ch2)

		// The signal comes after the commit, not when the change is made.
		rev := e.revision(office.ID)
		err := db.Tx(e.ctx, func(tx *sql.Tx) error {
			if err := e.svc.newRevisions(tx).bump(e.ctx, office.ID, "test", "x", "committed-key"); err != nil {
				return err
			}
			select {
			case <-ch:
				t.Error("signal before commit")
			default:
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		expectSignal(t, "committed bump", ch)
		if got := e.revision(office.ID); got != rev+1 {
			t.Fatalf("revision %d, want %d", got, rev+1)
		}

		// A rolled-back transaction neither signals nor changes anything.
		boom := errors.New("boom")
		err = db.Tx(e.ctx, func(tx *sql.Tx) error {
			revs := e.svc.newRevisions(tx)
			if err := revs.bump(e.ctx, office.ID, "test", "x", "rolled-back-key"); err != nil {
				return err
			}
			if err := revs.bump(e.ctx, admins.ID, "test", "x", "rolled-back-key"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Tx = %v", err)
		}
		expectNoSignal(t, "rolled back", ch)
		expectNoSignal(t, "rolled back, other location", chAdmins)
		if got := e.revision(office.ID); got != rev+1 {
			t.Fatalf("revision after rollback %d, want %d", got, rev+1)
		}
		var n int
		if err := db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM location_change_peers WHERE public_key = 'rolled-back-key'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled back change recorded: %d %v", n, err)
		}

		// A real rollback: deactivating the only admin bumps the locations
		// of their device, then fails the last-admin check.
		e.device(NewDevice{Name: "admin-laptop", PublicKey: newPublicKey(t)})
		expectSignal(t, "admin device", ch)
		expectSignal(t, "admin device, admins-only", chAdmins)
		revOffice, revAdmins := e.revision(office.ID), e.revision(admins.ID)
		_, err = e.ident.UpdateUser(e.ctx, e.admin, e.admin.UserID, identity.UserPatch{Active: ptr(false)})
		if de, ok := core.AsError(err); !ok || de.Code != "last_admin" {
			t.Fatalf("deactivating the last admin: %v", err)
		}
		expectNoSignal(t, "refused deactivation", ch)
		expectNoSignal(t, "refused deactivation, admins-only", chAdmins)
		if e.revision(office.ID) != revOffice || e.revision(admins.ID) != revAdmins {
			t.Fatal("a refused change bumped a revision")
		}

		// One transaction touching a location several times signals once.
		err = db.Tx(e.ctx, func(tx *sql.Tx) error {
			revs := e.svc.newRevisions(tx)
			for i := range 3 {
				if err := revs.bump(e.ctx, office.ID, "test", "x", fmt.Sprintf("multi-%d", i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		expectSignal(t, "multi-bump", ch)
		if got := e.revision(office.ID); got != revOffice+1 {
			t.Fatalf("three bumps in one transaction: revision %d, want %d", got, revOffice+1)
		}
		u := e.update(office.ID, revOffice)
		checkRemoves(t, "multi-bump", u.Removes, "multi-0", "multi-1", "multi-2")
	})
}
