package stats_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

func ptr[T any](v T) *T { return &v }

// fixture is an instance with two locations and one device with an address
// in both.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	svc      *stats.Service
	office   vpn.Location
	branch   vpn.Location
	device   vpn.Device
	deviceID string
	key      string
}

func newFixture(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	vpnSvc := vpn.New(db, nil)
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, vpnSvc, nil)
	if _, err := ident.EnsureAdmin(ctx, "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	admin := core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}
	office, err := vpnSvc.CreateLocation(ctx, admin, vpn.LocationInput{Name: ptr("office"), Addresses: ptr([]string{"10.10.0.0/24"}),
		Endpoint: ptr("vpn.example.com"), DisconnectThreshold: ptr(60)})
	if err != nil {
		t.Fatal(err)
	}
	branch, err := vpnSvc.CreateLocation(ctx, admin, vpn.LocationInput{Name: ptr("branch"), Addresses: ptr([]string{"10.20.0.0/24"}),
		Endpoint: ptr("branch.example.com")})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := vpnSvc.CreateDevice(ctx, admin, vpn.NewDevice{Name: "laptop", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Addresses) != 2 {
		t.Fatalf("device addresses = %+v, want one per location", dev.Addresses)
	}
	return &fixture{t: t, ctx: ctx, svc: stats.New(db), office: office, branch: branch, device: dev.Device, deviceID: dev.ID, key: dev.PublicKey}
}

func (f *fixture) ingest(r stats.Report) bool {
	f.t.Helper()
	ok, err := f.svc.Ingest(f.ctx, r)
	if err != nil {
		f.t.Fatalf("ingest %s/%s/%d: %v", r.GatewayID, r.BootID, r.Seq, err)
	}
	return ok
}

func (f *fixture) mustIngest(r stats.Report) {
	f.t.Helper()
	if !f.ingest(r) {
		f.t.Fatalf("report %s/%s/%d was taken for a duplicate", r.GatewayID, r.BootID, r.Seq)
	}
}

func (f *fixture) location(id string, from, to int64, threshold int) stats.LocationStats {
	f.t.Helper()
	ls, err := f.svc.Location(f.ctx, id, from, to, threshold)
	if err != nil {
		f.t.Fatal(err)
	}
	return ls
}

func totals(up, down uint64) stats.Totals { return stats.Totals{UploadBytes: up, DownloadBytes: down} }

func (f *fixture) checkTotals(what string, ls stats.LocationStats, up, down uint64) {
	f.t.Helper()
	if ls.Totals != totals(up, down) {
		f.t.Fatalf("%s: totals up=%d down=%d, want up=%d down=%d", what, ls.Totals.UploadBytes, ls.Totals.DownloadBytes, up, down)
	}
}

func smp(key string, gen, rx, tx uint64, hs int64) stats.Sample {
	return stats.Sample{PublicKey: key, Generation: gen, RxBytes: rx, TxBytes: tx, LastHandshake: hs, Endpoint: "198.51.100.7:40000"}
}

func findDevice(ls stats.LocationStats, id string) (stats.DeviceUsage, bool) {
	for _, d := range ls.Devices {
		if d.DeviceID == id {
			return d, true
		}
	}
	return stats.DeviceUsage{}, false
}

func TestIngestSeries(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now().UnixMilli()
		m0 := (now/60000 - 10) * 60000 // a minute boundary ten minutes ago
		m1, m2 := m0+60000, m0+120000
		window := func() stats.LocationStats { return f.location(f.office.ID, m0, m2+60000, f.office.DisconnectThreshold) }
		rep := func(gw, boot string, seq uint64, at int64, s ...stats.Sample) stats.Report {
			return stats.Report{GatewayID: gw, LocationID: f.office.ID, BootID: boot, Seq: seq, At: at, Samples: s}
		}
		k := f.key
		hsOld, hsMid, hsNew := now-300_000, now-200_000, now-20_000

		// The first sample of a series counts whole: the peer was installed
		// at zero when the series began.
		f.mustIngest(rep("gw-1", "boot-a", 1, m0+5000, smp(k, 1, 1000, 5000, hsOld)))
		f.checkTotals("first sample", window(), 1000, 5000)
		// Within a series only the growth counts.
		f.mustIngest(rep("gw-1", "boot-a", 2, m0+30000, smp(k, 1, 1500, 5600, hsMid)))
		f.checkTotals("delta", window(), 1500, 5600)

		// The same batch again (another core replica, a resend): ignored,
		// whatever it carries.
		if f.ingest(rep("gw-1", "boot-a", 2, m0+30000, smp(k, 1, 1500, 5600, hsMid))) {
			t.Fatal("duplicate batch ingested")
		}
		if f.ingest(rep("gw-1", "boot-a", 2, m0+40000, smp(k, 1, 99999, 99999, hsNew))) {
			t.Fatal("batch with a reused sequence number ingested")
		}
		f.checkTotals("after duplicates", window(), 1500, 5600)

		// A counter going down starts a new series: the new value is the delta.
		f.mustIngest(rep("gw-1", "boot-a", 3, m1+1000, smp(k, 1, 200, 100, hsOld)))
		f.checkTotals("counter reset", window(), 1700, 5700)
		f.mustIngest(rep("gw-1", "boot-a", 4, m1+2000, smp(k, 1, 250, 100, 0)))
		f.checkTotals("delta in the new series", window(), 1750, 5700)
		// Only one counter going down is a reset too.
		f.mustIngest(rep("gw-1", "boot-a", 5, m1+3000, smp(k, 1, 300, 40, 0)))
		f.checkTotals("one counter reset", window(), 2050, 5740)

		// A new boot starts a new series even though its counters are
		// higher, and its sequence numbers start again.
		f.mustIngest(rep("gw-1", "boot-b", 1, m2+1000, smp(k, 1, 400, 500, 0)))
		f.checkTotals("new boot", window(), 2450, 6240)
		// A new generation (peer reinstalled) starts a new series.
		f.mustIngest(rep("gw-1", "boot-b", 2, m2+2000, smp(k, 2, 410, 510, 0)))
		f.checkTotals("new generation", window(), 2860, 6750)
		// Nothing moved: nothing counted.
		f.mustIngest(rep("gw-1", "boot-b", 3, m2+3000, smp(k, 2, 410, 510, 0)))
		f.checkTotals("no traffic", window(), 2860, 6750)
		// A late batch of the old boot is still a duplicate when it was seen.
		if f.ingest(rep("gw-1", "boot-a", 5, m1+3000, smp(k, 1, 300, 40, 0))) {
			t.Fatal("old boot's batch ingested twice")
		}

		// Only gateway 1 has reported a handshake so far: its newest one.
		ls := window()
		d, ok := findDevice(ls, f.deviceID)
		if !ok || d.LastHandshake != hsMid || d.Connected {
			t.Fatalf("device after gateway 1 = %+v (found %v), want handshake %d, not connected", d, ok, hsMid)
		}

		// A second gateway of the location has its own series of the same peer.
		f.mustIngest(rep("gw-2", "boot-x", 1, m2+4000, smp(k, 1, 7, 8, hsNew)))
		f.mustIngest(rep("gw-2", "boot-x", 2, m2+5000, smp(k, 1, 17, 28, 0)))
		// ... which does not disturb gateway 1's series.
		f.mustIngest(rep("gw-1", "boot-b", 4, m2+6000, smp(k, 2, 510, 610, hsOld)))
		// A peer core does not know (yet) is counted under its key.
		f.mustIngest(rep("gw-1", "boot-b", 5, m2+7000, smp("unknown-key", 1, 11, 22, 0)))

		ls = window()
		// Gateway 1 in the third minute: the new boot (400/500), the new
		// generation (410/510) and the growth since (100/100).
		const g1m2rx, g1m2tx = 400 + 410 + 100, 500 + 510 + 100
		f.checkTotals("two gateways", ls, 1500+550+g1m2rx+11+17, 5600+140+g1m2tx+22+28)
		wantSeries := []stats.Point{
			{Minute: m0, UploadBytes: 1500, DownloadBytes: 5600},
			{Minute: m1, UploadBytes: 550, DownloadBytes: 140},
			{Minute: m2, UploadBytes: g1m2rx + 11 + 17, DownloadBytes: g1m2tx + 22 + 28},
		}
		if len(ls.Series) != len(wantSeries) {
			t.Fatalf("series = %+v, want %+v", ls.Series, wantSeries)
		}
		for i := range wantSeries {
			if ls.Series[i] != wantSeries[i] {
				t.Fatalf("series[%d] = %+v, want %+v", i, ls.Series[i], wantSeries[i])
			}
		}
		if len(ls.Gateways) != 2 || ls.Gateways[0].GatewayID != "gw-1" || ls.Gateways[0].Totals != totals(1500+550+g1m2rx+11, 5600+140+g1m2tx+22) ||
			ls.Gateways[1].GatewayID != "gw-2" || ls.Gateways[1].Totals != totals(17, 28) {
			t.Fatalf("gateways = %+v", ls.Gateways)
		}
		if len(ls.Devices) != 2 {
			t.Fatalf("devices = %+v", ls.Devices)
		}
		d, _ = findDevice(ls, f.deviceID)
		// The newest handshake across gateways, against the location's
		// disconnect threshold (60 s).
		if d.Totals != totals(1500+550+g1m2rx+17, 5600+140+g1m2tx+28) || d.LastHandshake != hsNew || !d.Connected {
			t.Fatalf("device = %+v, want handshake %d and connected", d, hsNew)
		}
		if u, ok := findDevice(ls, "key:unknown-key"); !ok || u.Totals != totals(11, 22) || u.LastHandshake != 0 || u.Connected {
			t.Fatalf("unknown peer = %+v (found %v)", u, ok)
		}
		// A tighter threshold: the same handshake is too old.
		if d, _ := findDevice(f.location(f.office.ID, m0, m2+60000, 10), f.deviceID); d.Connected || d.LastHandshake != hsNew {
			t.Fatalf("threshold 10 s: %+v", d)
		}
		// An older handshake reported later does not move it back.
		f.mustIngest(rep("gw-2", "boot-x", 3, m2+8000, smp(k, 1, 17, 28, hsOld)))
		if d, _ := findDevice(window(), f.deviceID); d.LastHandshake != hsNew {
			t.Fatalf("handshake moved back to %d", d.LastHandshake)
		}

		// Windows select whole minutes: from is rounded down, to excludes.
		ls = f.location(f.office.ID, m1+30000, m2, 60)
		if len(ls.Series) != 1 || ls.Series[0].Minute != m1 {
			t.Fatalf("window m1: %+v", ls.Series)
		}
		f.checkTotals("window m1", ls, 550, 140)
		if len(ls.Gateways) != 1 || ls.Gateways[0].Totals != totals(550, 140) {
			t.Fatalf("window m1 gateways: %+v", ls.Gateways)
		}
		ls = f.location(f.office.ID, m2+60000, m2+120000, 60)
		if len(ls.Series) != 0 || len(ls.Devices) != 0 || len(ls.Gateways) != 0 || ls.Series == nil || ls.Devices == nil || ls.Gateways == nil {
			t.Fatalf("empty window: %+v", ls)
		}
		// Another location sees nothing of this one.
		f.checkTotals("other location", f.location(f.branch.ID, m0, m2+60000, 60), 0, 0)
	})
}

func TestDeviceStats(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now().UnixMilli()
		m0 := (now/60000 - 5) * 60000
		m1 := m0 + 60000
		k := f.key
		hs1, hs2, hsBranch := now-90_000, now-30_000, now-50_000
		for _, r := range []stats.Report{
			{GatewayID: "gw-1", LocationID: f.office.ID, BootID: "b1", Seq: 1, At: m0 + 100, Samples: []stats.Sample{smp(k, 1, 100, 1000, hs1)}},
			{GatewayID: "gw-1", LocationID: f.office.ID, BootID: "b1", Seq: 2, At: m1 + 100, Samples: []stats.Sample{smp(k, 1, 150, 1300, hs1)}},
			{GatewayID: "gw-2", LocationID: f.office.ID, BootID: "b9", Seq: 1, At: m1 + 200, Samples: []stats.Sample{smp(k, 1, 5, 6, hs2)}},
			{GatewayID: "gw-3", LocationID: f.branch.ID, BootID: "b3", Seq: 1, At: m0 + 300, Samples: []stats.Sample{smp(k, 1, 70, 80, hsBranch)}},
		} {
			f.mustIngest(r)
		}
		ds, err := f.svc.Device(f.ctx, f.deviceID, k, m0, m1+60000)
		if err != nil {
			t.Fatal(err)
		}
		if ds.DeviceID != f.deviceID || ds.From != m0 || ds.To != m1+60000 || ds.Totals != totals(100+50+5+70, 1000+300+6+80) || len(ds.Locations) != 2 {
			t.Fatalf("device stats = %+v", ds)
		}
		for _, l := range ds.Locations {
			switch l.LocationID {
			case f.office.ID:
				want := []stats.Point{{Minute: m0, UploadBytes: 100, DownloadBytes: 1000}, {Minute: m1, UploadBytes: 55, DownloadBytes: 306}}
				if len(l.Series) != 2 || l.Series[0] != want[0] || l.Series[1] != want[1] || l.Totals != totals(155, 1306) || l.LastHandshake != hs2 {
					t.Fatalf("office usage = %+v, want series %+v, handshake %d", l, want, hs2)
				}
			case f.branch.ID:
				if len(l.Series) != 1 || l.Series[0] != (stats.Point{Minute: m0, UploadBytes: 70, DownloadBytes: 80}) || l.Totals != totals(70, 80) || l.LastHandshake != hsBranch {
					t.Fatalf("branch usage = %+v", l)
				}
			default:
				t.Fatalf("unexpected location %s", l.LocationID)
			}
		}
		// A window with only the second minute.
		ds, err = f.svc.Device(f.ctx, f.deviceID, k, m1, m1+60000)
		if err != nil {
			t.Fatal(err)
		}
		if ds.Totals != totals(55, 306) || len(ds.Locations) != 1 || ds.Locations[0].LocationID != f.office.ID {
			t.Fatalf("second minute = %+v", ds)
		}
		// A device without traffic.
		ds, err = f.svc.Device(f.ctx, "no-such-device", "no-key", m0, m1+60000)
		if err != nil || ds.Locations == nil || len(ds.Locations) != 0 || ds.Totals != (stats.Totals{}) {
			t.Fatalf("no traffic: %+v %v", ds, err)
		}
	})
}

func TestIngestConcurrentDuplicates(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		at := (time.Now().UnixMilli()/60000 - 1) * 60000
		r := stats.Report{GatewayID: "gw-1", LocationID: f.office.ID, BootID: "b", Seq: 1, At: at, Samples: []stats.Sample{smp(f.key, 1, 1234, 5678, 0)}}
		const replicas = 5
		var wg sync.WaitGroup
		results := make([]bool, replicas)
		errs := make([]error, replicas)
		start := make(chan struct{})
		for i := range replicas {
			wg.Go(func() {
				<-start
				results[i], errs[i] = f.svc.Ingest(f.ctx, r)
			})
		}
		close(start)
		wg.Wait()
		taken := 0
		for i := range replicas {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if results[i] {
				taken++
			}
		}
		if taken != 1 {
			t.Fatalf("%d replicas ingested the batch, want exactly 1", taken)
		}
		f.checkTotals("concurrent duplicates", f.location(f.office.ID, at, at+60000, 60), 1234, 5678)
	})
}

func TestIngestValidation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		for _, r := range []stats.Report{
			{LocationID: f.office.ID, BootID: "b", Seq: 1},
			{GatewayID: "gw", LocationID: f.office.ID, Seq: 1},
			{GatewayID: "gw", BootID: "b", Seq: 1},
		} {
			ok, err := f.svc.Ingest(f.ctx, r)
			if ok || !errors.Is(err, core.ErrInvalid) {
				t.Errorf("report %+v: ok=%v err=%v, want invalid", r, ok, err)
			}
		}
		// A batch without samples still counts as received.
		if !f.ingest(stats.Report{GatewayID: "gw", LocationID: f.office.ID, BootID: "b", Seq: 1, At: time.Now().UnixMilli()}) {
			t.Fatal("empty batch not taken")
		}
		if f.ingest(stats.Report{GatewayID: "gw", LocationID: f.office.ID, BootID: "b", Seq: 1, At: time.Now().UnixMilli()}) {
			t.Fatal("empty batch taken twice")
		}
	})
}

func TestRange(t *testing.T) {
	hour := int64(time.Hour / time.Millisecond)
	year := int64(366 * 24 * time.Hour / time.Millisecond)
	before := time.Now().UnixMilli()
	from, to, err := stats.Range(0, 0)
	after := time.Now().UnixMilli()
	if err != nil || to < before || to > after || from != to-hour {
		t.Fatalf("Range(0, 0) = %d, %d, %v; want the last hour", from, to, err)
	}
	if from, to, err := stats.Range(0, 10*hour); err != nil || from != 9*hour || to != 10*hour {
		t.Fatalf("Range(0, to) = %d, %d, %v", from, to, err)
	}
	if from, to, err := stats.Range(5, 10); err != nil || from != 5 || to != 10 {
		t.Fatalf("Range(5, 10) = %d, %d, %v", from, to, err)
	}
	if _, _, err := stats.Range(1000, 1000+year); err != nil {
		t.Fatalf("a window of 366 days: %v", err)
	}
	for _, c := range [][2]int64{{10, 10}, {11, 10}, {1000, 1000 + year + 1}, {before + hour, 0}} {
		if _, _, err := stats.Range(c[0], c[1]); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Range(%d, %d): %v, want invalid", c[0], c[1], err)
		}
	}
}

// A batch that arrives after a newer one of the same boot (relayed late by a
// lagging core replica) carries older cumulative counters: it must be
// skipped, not taken for a counter reset.
func TestIngestOutOfOrderBatches(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		now := time.Now().UnixMilli()
		rep := func(seq, rx uint64) stats.Report {
			return stats.Report{GatewayID: "gw-a", LocationID: f.office.ID, BootID: "boot-1", Seq: seq, At: now,
				Samples: []stats.Sample{smp(f.key, 1, rx, rx/2, now)}}
		}
		for _, r := range []stats.Report{rep(1, 1000), rep(3, 3000), rep(2, 2000), rep(4, 4000)} {
			f.mustIngest(r)
		}
		f.checkTotals("seq 1,3,2,4", f.location(f.office.ID, now-60_000, now+60_000, 60), 4000, 2000)
	})
}
