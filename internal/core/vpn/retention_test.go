package vpn

import (
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// Purged change records: a gateway behind the purge gets a snapshot, one
// at or after it still gets only the changes.
func TestPurgeChangesForcesSnapshotsBehindIt(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24")
		e.device(NewDevice{Name: "one", PublicKey: newPublicKey(t)})
		mid := e.revision(office.ID)
		e.device(NewDevice{Name: "two", PublicKey: newPublicKey(t)})
		head := e.revision(office.ID)
		if mid <= 1 || head <= mid {
			t.Fatalf("revisions %d, %d", mid, head)
		}
		// Nothing is old yet.
		if n, err := e.svc.PurgeChanges(e.ctx, time.Now()); err != nil || n != 0 {
			t.Fatalf("fresh changes purged: %d, %v", n, err)
		}
		checkChanges(t, "before the purge", e.update(office.ID, 1), 1, head)
		// Age the records up to mid, then purge as of now.
		if _, err := db.ExecContext(e.ctx, `UPDATE location_changes SET created_at = $1 WHERE location_id = $2 AND revision <= $3`,
			time.Now().Add(-ChangeRetention-time.Hour).UnixMilli(), office.ID, mid); err != nil {
			t.Fatal(err)
		}
		n, err := e.svc.PurgeChanges(e.ctx, time.Now())
		if err != nil || n != mid {
			t.Fatalf("purged %d change records (%v), want %d", n, err, mid)
		}
		checkSnapshot(t, "gateway behind the purge", e.update(office.ID, mid-1), head)
		u := e.update(office.ID, mid)
		checkChanges(t, "gateway at the purge", u, mid, head)
		if len(u.Peers) != 1 {
			t.Fatalf("changes since the purge: %d peers, want the one added after it", len(u.Peers))
		}
	})
}

// Device search: names case-insensitively, keys (base64, mixed case) as typed,
// on both databases (PostgreSQL's LIKE is case-sensitive).
func TestListDevicesSearch(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		e.location("office", nil, "10.10.0.0/24")
		key := newPublicKey(t)
		d := e.device(NewDevice{Name: "Laptop-Alice", PublicKey: key})
		e.device(NewDevice{Name: "phone", PublicKey: newPublicKey(t)})
		for _, q := range []string{"laptop", "LAPTOP-alice", key[:12], key} {
			got, total, err := e.svc.ListDevices(e.ctx, e.admin, DeviceFilter{ListParams: ListParams{Search: q, Limit: 10}})
			if err != nil || total != 1 || len(got) != 1 || got[0].ID != d.ID {
				t.Fatalf("search %q: %d devices (total %d), %v", q, len(got), total, err)
			}
		}
	})
}

// PurgeRevoked forgets tombstones whose revocation is past its retention
// or that were never adopted, and keeps a fresh one of an adopted
// gateway (core still has to tell it); none of the purged is a target.
func TestPurgeRevoked(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		office := e.location("office", nil, "10.10.0.0/24")
		ids := map[string]string{}
		for _, name := range []string{"fresh", "stale", "unadopted"} {
			g, err := e.svc.CreateGateway(e.ctx, e.admin, office.ID, ComponentInput{Name: ptr(name), ControlAddress: ptr("10.0.0.1:50066")})
			if err != nil {
				t.Fatal(err)
			}
			ids[name] = g.ID
		}
		now := time.Now()
		for name, tomb := range map[string]struct {
			revokedAt int64
			serial    string
		}{
			"fresh":     {now.Add(-time.Hour).UnixMilli(), "aa"},
			"stale":     {now.Add(-RevocationRetention - time.Hour).UnixMilli(), "bb"},
			"unadopted": {now.Add(-time.Minute).UnixMilli(), ""},
		} {
			if _, err := db.ExecContext(e.ctx, `UPDATE gateways SET revoked_at = $1, cert_serial = $2 WHERE id = $3`, tomb.revokedAt, tomb.serial, ids[name]); err != nil {
				t.Fatal(err)
			}
		}
		targets, err := e.svc.GatewayTargets(e.ctx)
		if err != nil || len(targets) != 1 || targets[0].ID != ids["fresh"] {
			t.Fatalf("targets before the purge: %+v (%v), want only the fresh tombstone", targets, err)
		}
		n, err := e.svc.PurgeRevoked(e.ctx, now)
		if err != nil || n != 2 {
			t.Fatalf("purged %d (%v), want 2", n, err)
		}
		var left int
		if err := db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM gateways`).Scan(&left); err != nil || left != 1 {
			t.Fatalf("%d gateways left (%v), want the fresh tombstone", left, err)
		}
	})
}
