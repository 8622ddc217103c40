package api_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// outcome is what one concurrent request ended with.
type outcome struct {
	status int
	code   string
	device createdDevice
	err    error
}

// createConcurrently fires the bodies at POST /devices from workers
// goroutines at once and returns the outcome of each body, in order.
func createConcurrently(c *client, workers int, bodies []map[string]any) []outcome {
	out := make([]outcome, len(bodies))
	jobs := make(chan int)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range jobs {
				r, err := c.try("POST", v1+"/devices", bodies[i])
				if err != nil {
					out[i].err = err
					continue
				}
				out[i].status = r.Status
				if r.Status == http.StatusCreated {
					out[i].err = jsonUnmarshal(r.Body, &out[i].device)
				} else if e, ok := r.errorOf(); ok {
					out[i].code = e.Code
				} else {
					out[i].err = fmt.Errorf("status %d without error body: %q", r.Status, r.Body)
				}
			}
		}()
	}
	close(start)
	for i := range bodies {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out
}

// addressesIn returns the stored addresses of one family in a location and
// fails on duplicates.
func (f *fixture) addressesIn(locationID string, family int) []netip.Addr {
	f.t.Helper()
	var total, distinct int
	if err := f.db.QueryRowContext(f.ctx, `SELECT COUNT(*), COUNT(DISTINCT address) FROM device_addresses WHERE location_id = $1 AND family = $2`,
		locationID, family).Scan(&total, &distinct); err != nil {
		f.t.Fatal(err)
	}
	if total != distinct {
		f.t.Fatalf("location %s family %d: %d addresses but only %d distinct", locationID, family, total, distinct)
	}
	if n := f.count(`SELECT COUNT(DISTINCT host_index) FROM device_addresses WHERE location_id = $1 AND family = $2`, locationID, family); n != total {
		f.t.Fatalf("location %s family %d: %d addresses but %d distinct host indexes", locationID, family, total, n)
	}
	rows, err := f.db.QueryContext(f.ctx, `SELECT address FROM device_addresses WHERE location_id = $1 AND family = $2`, locationID, family)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []netip.Addr
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, netip.MustParseAddr(s))
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// hostRange returns the n addresses starting at first.
func hostRange(first string, n int) []netip.Addr {
	a := netip.MustParseAddr(first)
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	return out
}

// TestConcurrentDeviceCreation: 200 devices created through the API by 20
// goroutines at once get 200 distinct addresses, packed from the bottom of
// the network, on both engines.
func TestConcurrentDeviceCreation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		loc := f.createLocation(map[string]any{"name": "busy", "addresses": []string{"10.50.0.0/24", "fd00:50::/64"}, "endpoint": "busy.example.com"})
		const users, perUser = 20, 10
		owners := make([]identity.User, users)
		for i := range owners {
			f.admin.mustDo(http.StatusCreated, "POST", v1+"/users", map[string]any{
				"username": fmt.Sprintf("user%02d", i), "email": fmt.Sprintf("user%02d@example.com", i),
			}).decode(t, &owners[i])
		}
		var bodies []map[string]any
		for d := 0; d < perUser; d++ {
			for _, u := range owners {
				bodies = append(bodies, map[string]any{"name": fmt.Sprintf("dev%02d", d), "public_key": newPublicKey(t), "user_id": u.ID})
			}
		}

		results := createConcurrently(f.admin, users, bodies)
		byV4 := map[string]string{}
		for i, r := range results {
			if r.err != nil || r.status != http.StatusCreated {
				t.Errorf("device %d: status %d code %q err %v", i, r.status, r.code, r.err)
				continue
			}
			if len(r.device.Addresses) != 2 {
				t.Errorf("device %d addresses %v, want one per family", i, r.device.Addresses)
				continue
			}
			v4 := r.device.Addresses[0].Address
			if other, dup := byV4[v4]; dup {
				t.Errorf("address %s given to %s and %s", v4, other, r.device.ID)
			}
			byV4[v4] = r.device.ID
		}
		if t.Failed() {
			t.FailNow()
		}

		// The database agrees: 200 rows per family, all distinct, exactly
		// the lowest 200 host addresses after the interface.
		if got, want := f.addressesIn(loc.ID, 4), hostRange("10.50.0.2", users*perUser); !slices.Equal(got, want) {
			t.Errorf("IPv4 addresses %v, want %v..%v", got, want[0], want[len(want)-1])
		}
		if got, want := f.addressesIn(loc.ID, 6), hostRange("fd00:50::2", users*perUser); !slices.Equal(got, want) {
			t.Errorf("IPv6 addresses %v, want %v..%v", got, want[0], want[len(want)-1])
		}
		if n := f.count(`SELECT COUNT(*) FROM devices`); n != users*perUser {
			t.Errorf("%d device rows, want %d", n, users*perUser)
		}

		// And so does the API.
		var list struct {
			Items []vpn.Device `json:"items"`
			Total int          `json:"total"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/devices?limit=500&location_id="+loc.ID, nil).decode(t, &list)
		if list.Total != users*perUser || len(list.Items) != users*perUser {
			t.Fatalf("API lists %d of %d devices, want %d", len(list.Items), list.Total, users*perUser)
		}
		seen := map[string]bool{}
		for _, d := range list.Items {
			for _, a := range d.Addresses {
				if seen[a.Address] {
					t.Errorf("API shows %s twice", a.Address)
				}
				seen[a.Address] = true
			}
		}
		if len(seen) != 2*users*perUser {
			t.Errorf("API shows %d distinct addresses, want %d", len(seen), 2*users*perUser)
		}
		// Each creation bumped the revision once, with one change row each.
		if l := f.location(loc.ID); l.Revision != int64(1+users*perUser) {
			t.Errorf("revision %d, want %d", l.Revision, 1+users*perUser)
		}
		if n := f.count(`SELECT COUNT(DISTINCT revision) FROM location_changes WHERE location_id = $1`, loc.ID); n != 1+users*perUser {
			t.Errorf("%d distinct change revisions, want %d", n, 1+users*perUser)
		}
	})
}

// smallPool is a /29: 8 addresses minus network, broadcast and the
// interface leave 5 for devices.
var smallPool = hostRange("10.99.0.2", 5)

// TestSmallPoolSequential: a /29 takes exactly 5 devices; the 6th is
// refused without a trace, and a freed address is handed out again.
func TestSmallPoolSequential(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		loc := f.createLocation(map[string]any{"name": "small", "addresses": []string{"10.99.0.0/29"}, "endpoint": "small.example.com"})
		if !slices.Equal(loc.Addresses, []string{"10.99.0.1/29"}) {
			t.Fatalf("location addresses %v", loc.Addresses)
		}
		var devs []createdDevice
		for i := range 5 {
			d := f.createDevice(f.admin, map[string]any{"name": fmt.Sprintf("d%d", i), "public_key": newPublicKey(t)})
			if want := smallPool[i].String(); len(d.Addresses) != 1 || d.Addresses[0].Address != want {
				t.Fatalf("device %d addresses %v, want %s", i, d.Addresses, want)
			}
			devs = append(devs, d)
		}
		before := f.snapshot()
		expectError(t, f.admin.do("POST", v1+"/devices", map[string]any{"name": "d5", "public_key": newPublicKey(t)}), http.StatusConflict, "address_pool_exhausted", "")
		expectError(t, f.admin.do("POST", v1+"/devices", map[string]any{"name": "d6", "generate_key": true}), http.StatusConflict, "address_pool_exhausted", "")
		assertUnchanged(t, before, f.snapshot())
		if got := f.addressesIn(loc.ID, 4); !slices.Equal(got, smallPool) {
			t.Fatalf("addresses %v, want %v", got, smallPool)
		}

		// Free the middle address: the next device gets exactly that one.
		f.admin.mustDo(http.StatusNoContent, "DELETE", v1+"/devices/"+devs[2].ID, nil)
		d := f.createDevice(f.admin, map[string]any{"name": "d5", "public_key": newPublicKey(t)})
		if len(d.Addresses) != 1 || d.Addresses[0].Address != smallPool[2].String() {
			t.Fatalf("device after a free slot got %v, want %s", d.Addresses, smallPool[2])
		}
		expectError(t, f.admin.do("POST", v1+"/devices", map[string]any{"name": "d6", "public_key": newPublicKey(t)}), http.StatusConflict, "address_pool_exhausted", "")
		if got := f.addressesIn(loc.ID, 4); !slices.Equal(got, smallPool) {
			t.Fatalf("addresses %v, want %v", got, smallPool)
		}
	})
}

// TestSmallPoolConcurrent: 10 goroutines race for the 5 addresses of a /29.
// Exactly 5 win, the rest get address_pool_exhausted, and no address is
// given twice.
func TestSmallPoolConcurrent(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		loc := f.createLocation(map[string]any{"name": "small", "addresses": []string{"10.99.0.0/29"}, "endpoint": "small.example.com"})
		var bodies []map[string]any
		for i := range 10 {
			bodies = append(bodies, map[string]any{"name": fmt.Sprintf("d%d", i), "public_key": newPublicKey(t)})
		}
		results := createConcurrently(f.admin, len(bodies), bodies)
		var won []netip.Addr
		lost := 0
		for i, r := range results {
			switch {
			case r.err != nil:
				t.Errorf("request %d: %v", i, r.err)
			case r.status == http.StatusCreated:
				if len(r.device.Addresses) != 1 {
					t.Errorf("request %d: addresses %v", i, r.device.Addresses)
					continue
				}
				won = append(won, netip.MustParseAddr(r.device.Addresses[0].Address))
			case r.status == http.StatusConflict && r.code == "address_pool_exhausted":
				lost++
			default:
				t.Errorf("request %d: status %d code %q", i, r.status, r.code)
			}
		}
		slices.SortFunc(won, netip.Addr.Compare)
		if !slices.Equal(won, smallPool) || lost != 5 {
			t.Fatalf("winners got %v (want %v), %d refused (want 5)", won, smallPool, lost)
		}
		if got := f.addressesIn(loc.ID, 4); !slices.Equal(got, smallPool) {
			t.Fatalf("stored addresses %v, want %v", got, smallPool)
		}
		if n := f.count(`SELECT COUNT(*) FROM devices`); n != 5 {
			t.Fatalf("%d device rows, want 5: losers left rows behind", n)
		}
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'device.create'`); n != 5 {
			t.Fatalf("%d device.create audit entries, want 5", n)
		}
		if l := f.location(loc.ID); l.Revision != 6 {
			t.Fatalf("revision %d, want 6 (one per winner)", l.Revision)
		}
	})
}
