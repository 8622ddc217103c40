package gateway

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// haGateway is a gateway whose engine (the fake) is created by the first
// config, as in production, so the role applies from the start.
func haGateway(t *testing.T, floating ...netip.Addr) (*Gateway, *fakeEngine) {
	t.Helper()
	fe := newFakeEngine()
	g, err := New(Config{DataDir: t.TempDir(), Interface: "wgtest0", StatsInterval: time.Second, FloatingIPs: floating,
		NewEngine: func(int) (wgengine.Engine, error) { return fe, nil }}, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return g, fe
}

// calledActive lists the SetActive calls, repeats folded (a standby is
// re-asserted on every round of the role loop).
func (f *fakeEngine) calledActive() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Compact(slices.Clone(f.actives))
}

func (f *fakeEngine) initiations() []map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.initiated)
}

func (f *fakeEngine) sawHandshake(key, endpoint string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peers[key]
	p.Endpoint, p.LastHandshake = endpoint, at
	f.peers[key] = p
}

func ep(key, endpoint string, ago time.Duration) *gw.PeerEndpoint {
	return &gw.PeerEndpoint{PublicKey: key, Endpoint: endpoint, LastHandshake: time.Now().Add(-ago).UnixMilli()}
}

// TestTakeoverFromStandby: a gateway whose floating IP is not on this host
// (TEST-NET address, really looked up through netlink) starts standby; the
// engine is told before its first Configure. Endpoints from core are kept;
// becoming master initiates to the installed peers only, with the newest
// endpoint from core or the device; late endpoints right after taking over
// are initiated too; backup takes the engine out of service again.
func TestTakeoverFromStandby(t *testing.T) {
	g, fe := haGateway(t, netip.MustParseAddr("192.0.2.254"))
	if info := g.roles.get(); info.Role != RoleStandby || !info.HA {
		t.Fatalf("start: %+v, want standby in active-passive mode (192.0.2.254 is on no interface)", info)
	}
	kA, kB, kC, kGone := genKey(t), genKey(t), genKey(t), genKey(t)
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: testInterface(t),
		Peers: []*gw.Peer{peerMsg(kA, "10.10.0.2/32"), peerMsg(kB, "10.10.0.3/32"), peerMsg(kC, "10.10.0.4/32")}}); err != nil {
		t.Fatal(err)
	}
	if got := fe.calledActive(); !slices.Equal(got, []bool{false}) {
		t.Fatalf("SetActive calls after the first config = %v, want [false] before it came up", got)
	}
	if ok, why := g.Ready(); !ok {
		t.Fatalf("a configured standby is not ready: %s", why)
	}

	g.mergeEndpoints([]*gw.PeerEndpoint{
		ep(kA, "198.51.100.1:1000", 30*time.Second),
		ep(kB, "198.51.100.2:2000", 30*time.Second),
		ep(kGone, "198.51.100.9:9000", 10*time.Second), // not a peer (any more)
		ep(kC, "198.51.100.3:3000", 2*time.Hour),       // too old to try
	})
	// An older entry for A (from a lagging core replica) does not win.
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(kA, "192.0.2.50:5000", 4*time.Minute)})
	// The device saw B itself, more recently than core's entry.
	fe.sawHandshake(kB, "203.0.113.2:2222", time.Now().Add(-5*time.Second))
	g.syncRole()
	if len(fe.initiations()) != 0 {
		t.Fatalf("a standby initiated: %v", fe.initiations())
	}
	if st := g.Status(); st.Role != RoleStandby || st.KnownEndpoints != 3 || !st.Ready {
		t.Fatalf("standby status: role %s, known %d, ready %v", st.Role, st.KnownEndpoints, st.Ready)
	}

	info, changed, err := g.roles.notify(NotifyMaster)
	if err != nil || !changed || info.Role != RoleActive {
		t.Fatalf("notify master: %+v %v %v", info, changed, err)
	}
	g.syncRole()
	if got := fe.calledActive(); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("SetActive calls = %v, want [false true]", got)
	}
	ini := fe.initiations()
	want := map[string]string{kA: "198.51.100.1:1000", kB: "203.0.113.2:2222"}
	if len(ini) != 1 || !maps.Equal(ini[0], want) {
		t.Fatalf("initiated %v, want %v", ini, want)
	}
	st := g.Status()
	if st.LastTakeover == nil || st.LastTakeover.Initiated != 2 || st.LastTakeover.Candidates != 2 || st.RoleChanges != 1 {
		t.Fatalf("takeover status %+v, role changes %d", st.LastTakeover, st.RoleChanges)
	}
	// Settled: the loop's next rounds initiate nothing more.
	g.syncRole()
	g.syncRole()
	if n := len(fe.initiations()); n != 1 {
		t.Fatalf("%d initiations after settling, want 1", n)
	}

	// Right after taking over, a new endpoint for C (which has not talked
	// to this gateway yet) is initiated at once.
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(kC, "198.51.100.33:3333", time.Second)})
	ini = fe.initiations()
	if len(ini) != 2 || !maps.Equal(ini[1], map[string]string{kC: "198.51.100.33:3333"}) {
		t.Fatalf("late endpoint: initiations %v", ini)
	}
	// A peer that already shook hands here since activation is left alone.
	fe.sawHandshake(kA, "198.51.100.1:1000", time.Now())
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(kA, "198.51.100.111:1111", 0)})
	if n := len(fe.initiations()); n != 2 {
		t.Fatalf("initiated a peer already connected here: %v", fe.initiations())
	}

	// backup: out of service again; applies keep working.
	if _, _, err := g.roles.notify(NotifyBackup); err != nil {
		t.Fatal(err)
	}
	g.syncRole()
	if got := fe.calledActive(); got[len(got)-1] {
		t.Fatalf("SetActive calls = %v, want the last to be false", got)
	}
	if _, err := g.applyChanges(&gw.Changes{FromRevision: 1, ToRevision: 2, Interface: testInterface(t), Removes: []string{kC}}); err != nil {
		t.Fatalf("apply on a standby: %v", err)
	}
	if ok, _ := g.Ready(); !ok || g.Status().Role != RoleStandby {
		t.Fatal("standby not ready after an apply")
	}
}

// TestNoTakeoverWithoutHA: a lone or load-balanced gateway never initiates
// (its replies would not come from a shared address), though it keeps the
// endpoints it hears.
func TestNoTakeoverWithoutHA(t *testing.T) {
	g, fe := haGateway(t)
	k := genKey(t)
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(k, "198.51.100.1:1000", time.Second)})
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: testInterface(t), Peers: []*gw.Peer{peerMsg(k, "10.10.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	g.syncRole()
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(k, "198.51.100.2:1000", 0)})
	if len(fe.initiations()) != 0 || len(fe.calledActive()) != 0 {
		t.Fatalf("initiated %v, SetActive %v", fe.initiations(), fe.calledActive())
	}
	if st := g.Status(); st.Role != RoleActive || st.KnownEndpoints != 1 || st.RoleReason != "no floating IP configured: always active" {
		t.Fatalf("status: %s %q known %d", st.Role, st.RoleReason, st.KnownEndpoints)
	}
}

// TestActiveAtStartInitiates: a gateway that (re)starts holding the floating
// IP (here: the notify arrived before the first config) takes over with the
// endpoints it restored, once its peers are applied.
func TestActiveAtStartInitiates(t *testing.T) {
	g, fe := haGateway(t, netip.MustParseAddr("192.0.2.254"))
	if _, _, err := g.roles.notify(NotifyMaster); err != nil {
		t.Fatal(err)
	}
	k := genKey(t)
	g.mergeEndpoints([]*gw.PeerEndpoint{ep(k, "198.51.100.1:1000", time.Minute)})
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: testInterface(t), Peers: []*gw.Peer{peerMsg(k, "10.10.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.roleLoop(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for len(fe.initiations()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if ini := fe.initiations(); len(ini) != 1 || ini[0][k] != "198.51.100.1:1000" {
		t.Fatalf("initiations %v", ini)
	}
	if got := fe.calledActive(); len(got) != 0 {
		t.Fatalf("an engine created active was toggled: %v", got)
	}
}
