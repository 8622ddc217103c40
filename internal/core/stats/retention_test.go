package stats_test

import (
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/store"
)

// Minutes older than MinuteDetail fold into hours without changing any
// total; recent minutes stay; a second run folds nothing; batch ids past
// their retention are purged.
func TestRollupAndPurge(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now().Truncate(time.Minute)
		old := now.Add(-stats.MinuteDetail - 3*time.Hour).Truncate(time.Hour)
		var seq uint64
		report := func(at time.Time, rx, tx uint64) {
			seq++
			f.mustIngest(stats.Report{GatewayID: "gw-1", LocationID: f.office.ID, BootID: "boot-1", Seq: seq, At: at.UnixMilli(),
				Samples: []stats.Sample{smp(f.key, 1, rx, tx, at.UnixMilli())}})
		}
		// Cumulative counters: two hours of old traffic at uneven minutes,
		// then recent traffic.
		var rx, tx uint64
		for _, m := range []time.Duration{0, 7 * time.Minute, 23 * time.Minute, 59 * time.Minute, 61 * time.Minute, 95 * time.Minute} {
			rx, tx = rx+1000, tx+3000
			report(old.Add(m), rx, tx)
		}
		for _, m := range []time.Duration{-30 * time.Minute, -10 * time.Minute, -time.Minute} {
			rx, tx = rx+500, tx+700
			report(now.Add(m), rx, tx)
		}
		from, to := old.Add(-time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli()
		before := f.location(f.office.ID, from, to, 60)
		folded, err := f.svc.Rollup(f.ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		after := f.location(f.office.ID, from, to, 60)
		if after.Totals != before.Totals {
			t.Fatalf("totals changed by the rollup: %+v -> %+v", before.Totals, after.Totals)
		}
		// The per-location series (what the overview graph reads) holds the
		// same bytes as the per-device rows, before and after the rollup,
		// in minute and in hour buckets.
		for _, step := range []time.Duration{time.Minute, time.Hour} {
			pts, err := f.svc.Series(f.ctx, f.office.ID, from, to, step)
			if err != nil {
				t.Fatal(err)
			}
			var sum stats.Totals
			for _, p := range pts {
				sum.UploadBytes += p.UploadBytes
				sum.DownloadBytes += p.DownloadBytes
			}
			if sum != before.Totals {
				t.Fatalf("location series by %s sums to %+v, device rows to %+v", step, sum, before.Totals)
			}
		}
		if folded == 0 {
			t.Fatal("nothing folded")
		}
		recentFrom := now.Add(-stats.MinuteDetail).UnixMilli()
		var oldPoints, recentPoints int
		for _, p := range after.Series {
			if p.Minute < recentFrom {
				oldPoints++
				if p.Minute%int64(time.Hour/time.Millisecond) != 0 {
					t.Errorf("old point at %s is not an hour", time.UnixMilli(p.Minute).UTC())
				}
			} else {
				recentPoints++
			}
		}
		var recentBefore int
		for _, p := range before.Series {
			if p.Minute >= recentFrom {
				recentBefore++
			}
		}
		if oldPoints > 2 || recentPoints != recentBefore {
			t.Errorf("after rollup: %d old points (want ≤ 2 hours), %d recent (want %d unchanged)", oldPoints, recentPoints, recentBefore)
		}
		if again, err := f.svc.Rollup(f.ctx, now); err != nil || again != 0 {
			t.Errorf("second rollup folded %d (%v), want 0", again, err)
		}
		if after2 := f.location(f.office.ID, from, to, 60); after2.Totals != before.Totals {
			t.Errorf("totals changed by the second rollup: %+v", after2.Totals)
		}

		var batches int
		count := func() int {
			if err := db.QueryRowContext(f.ctx, `SELECT COUNT(*) FROM stats_batches`).Scan(&batches); err != nil {
				t.Fatal(err)
			}
			return batches
		}
		if n := count(); n != int(seq) {
			t.Fatalf("%d batch ids, want %d", n, seq)
		}
		if _, err := f.svc.Purge(f.ctx, time.Now()); err != nil || count() != int(seq) {
			t.Fatalf("fresh batch ids purged (%d left, %v)", batches, err)
		}
		if _, err := f.svc.Purge(f.ctx, time.Now().Add(stats.BatchRetention+time.Minute)); err != nil || count() != 0 {
			t.Fatalf("%d batch ids left after their retention (%v)", batches, err)
		}
	})
}

// Connected counts devices and users with a handshake within their
// location's threshold (60 s for office in the fixture).
func TestConnectedByLocation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now()
		f.mustIngest(stats.Report{GatewayID: "gw-1", LocationID: f.office.ID, BootID: "b", Seq: 1, At: now.UnixMilli(),
			Samples: []stats.Sample{smp(f.key, 1, 10, 10, now.Add(-10*time.Second).UnixMilli())}})
		f.mustIngest(stats.Report{GatewayID: "gw-2", LocationID: f.branch.ID, BootID: "b", Seq: 1, At: now.UnixMilli(),
			Samples: []stats.Sample{smp(f.key, 1, 10, 10, now.Add(-time.Hour).UnixMilli())}})
		got, err := f.svc.ConnectedByLocation(f.ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if got[f.office.ID] != (stats.Connected{Devices: 1, Users: 1}) || got[f.branch.ID] != (stats.Connected{}) {
			t.Fatalf("connected %+v: want the office device only", got)
		}
		if later, _ := f.svc.ConnectedByLocation(f.ctx, now.Add(2*time.Minute)); len(later) != 0 {
			t.Fatalf("connected two minutes later: %+v", later)
		}
	})
}
