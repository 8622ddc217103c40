package stats_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/store"
)

func TestRecentEndpoints(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now()
		ms := func(ago time.Duration) int64 { return now.Add(-ago).UnixMilli() }
		sample := func(key, endpoint string, hs int64) stats.Sample {
			return stats.Sample{PublicKey: key, Generation: 1, RxBytes: 1, TxBytes: 1, LastHandshake: hs, Endpoint: endpoint}
		}
		report := func(gw, loc string, seq uint64, s ...stats.Sample) stats.Report {
			return stats.Report{GatewayID: gw, LocationID: loc, BootID: "boot-" + gw, Seq: seq, At: now.UnixMilli(), Samples: s}
		}
		k := f.key
		const (
			kOld   = "old-peer-key"
			kTie   = "tie-peer-key"
			kQuiet = "never-shook-hands"
			kBare  = "no-endpoint-key"
		)
		f.mustIngest(report("gw-1", f.office.ID, 1,
			sample(k, "198.51.100.1:1000", ms(60*time.Second)),
			sample(kOld, "198.51.100.2:2000", ms(6*time.Minute)), // outside the window
			sample(kTie, "198.51.100.3:3000", ms(30*time.Second)),
			sample(kQuiet, "198.51.100.4:4000", 0),
			sample(kBare, "", ms(10*time.Second)),
		))
		// Gateway 2 saw the device later, somewhere else (the client roamed
		// or went through the other gateway): its endpoint wins. Equal
		// handshakes resolve to the lowest gateway id, whatever the order.
		f.mustIngest(report("gw-2", f.office.ID, 1,
			sample(k, "203.0.113.9:5555", ms(20*time.Second)),
			sample(kTie, "203.0.113.3:3333", ms(30*time.Second)),
		))
		// An older handshake on a third gateway does not win.
		f.mustIngest(report("gw-3", f.office.ID, 1, sample(k, "192.0.2.77:7777", ms(40*time.Second))))
		// The same device in another location is that location's business.
		f.mustIngest(report("gw-b", f.branch.ID, 1, sample(k, "192.0.2.200:9999", ms(5*time.Second))))

		got, err := f.svc.RecentEndpoints(f.ctx, f.office.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, slices.Sorted(slices.Values([]string{k, kTie}))) {
			t.Fatalf("keys = %v, want only the device and the tie (old, never, no-endpoint and other-location entries excluded)", keys)
		}
		if e := got[k]; e.Endpoint != "203.0.113.9:5555" || e.LastHandshake != ms(20*time.Second) || e.PublicKey != k {
			t.Errorf("device = %+v, want gateway 2's newest handshake", e)
		}
		if e := got[kTie]; e.Endpoint != "198.51.100.3:3000" {
			t.Errorf("tie = %+v, want gw-1's endpoint (lowest gateway id)", e)
		}

		branch, err := f.svc.RecentEndpoints(f.ctx, f.branch.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(branch) != 1 || branch[k].Endpoint != "192.0.2.200:9999" {
			t.Errorf("branch = %+v, want only its own gateway's entry", branch)
		}

		// Five minutes on, the device's handshakes are all stale.
		later, err := f.svc.RecentEndpoints(f.ctx, f.office.ID, now.Add(stats.EndpointWindow+21*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(later) != 0 {
			t.Errorf("after the window: %+v, want none", later)
		}
		if none, err := f.svc.RecentEndpoints(f.ctx, "no-such-location", now); err != nil || len(none) != 0 {
			t.Errorf("unknown location: %v, %v", none, err)
		}
	})
}
