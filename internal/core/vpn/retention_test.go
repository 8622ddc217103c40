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
