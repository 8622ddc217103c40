package gateway

import (
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// fakeEngine is an in-memory WireGuard device that records every call.
type fakeEngine struct {
	mu         sync.Mutex
	peers      map[string]wgengine.PeerState
	applies    []applyCall
	configures []wgengine.Interface
	closed     bool
	standby    bool
	actives    []bool              // every SetActive call
	initiated  []map[string]string // every Initiate call
}

type applyCall struct {
	set    []string
	remove []string
}

func newFakeEngine() *fakeEngine { return &fakeEngine{peers: map[string]wgengine.PeerState{}} }

func (f *fakeEngine) Kind() string { return "fake" }

func (f *fakeEngine) Configure(in wgengine.Interface) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configures = append(f.configures, in)
	return nil
}

func (f *fakeEngine) Peers() ([]wgengine.PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]wgengine.PeerState, 0, len(f.peers))
	for _, k := range slices.Sorted(maps.Keys(f.peers)) {
		out = append(out, f.peers[k])
	}
	return out, nil
}

func (f *fakeEngine) Apply(set []wgengine.PeerConfig, remove []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := applyCall{remove: slices.Clone(remove)}
	for _, k := range remove {
		delete(f.peers, k)
	}
	for _, p := range set {
		call.set = append(call.set, p.PublicKey)
		// A set keeps the session (and counters) of an existing peer.
		st := f.peers[p.PublicKey]
		st.PeerConfig = p
		f.peers[p.PublicKey] = st
	}
	f.applies = append(f.applies, call)
	return nil
}

func (f *fakeEngine) Up() bool { return true }

func (f *fakeEngine) SetActive(active bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.standby = !active
	f.actives = append(f.actives, active)
	return nil
}

func (f *fakeEngine) Initiate(endpoints map[string]string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.standby {
		return 0, wgengine.ErrStandby
	}
	f.initiated = append(f.initiated, maps.Clone(endpoints))
	n := 0
	for k, e := range endpoints {
		if p, ok := f.peers[k]; ok {
			p.Endpoint = e
			f.peers[k] = p
			n++
		}
	}
	return n, nil
}

func (f *fakeEngine) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeEngine) calls() []applyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applies)
}

func (f *fakeEngine) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.peers))
}

func (f *fakeEngine) peer(k string) (wgengine.PeerState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.peers[k]
	return p, ok
}

// newTestGateway builds an unadopted gateway in a temporary data dir whose
// data plane is the fake engine (the real one needs root and a TUN device).
func newTestGateway(t *testing.T, dir string) (*Gateway, *fakeEngine) {
	t.Helper()
	g, err := New(Config{DataDir: dir, Interface: "wgtest0", Backend: "userspace", StatsInterval: time.Second}, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fe := newFakeEngine()
	g.engine = fe
	return g, fe
}

func genKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func testInterface(t *testing.T) *gw.Interface {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &gw.Interface{LocationId: "loc-1", LocationName: "office", PrivateKey: k.String(), ListenPort: 51820,
		Addresses: []string{"10.10.0.1/24", "fd00:10::1/64"}, Mtu: 1420}
}

func peerMsg(key string, ips ...string) *gw.Peer {
	return &gw.Peer{PublicKey: key, AllowedIps: ips, Keepalive: 0, DeviceId: "dev-" + key[:6]}
}

// touched lists every key that an Apply call since call index from set or
// removed.
func touched(calls []applyCall, from int) map[string]bool {
	out := map[string]bool{}
	for _, c := range calls[from:] {
		for _, k := range c.set {
			out[k] = true
		}
		for _, k := range c.remove {
			out[k] = true
		}
	}
	return out
}

func (g *Gateway) testState() (uint64, []string, map[string]uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state.revision, slices.Sorted(maps.Keys(g.state.peers)), maps.Clone(g.generation)
}

func sortedKeys(keys ...string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	return out
}

func TestApplySnapshotAndChanges(t *testing.T) {
	g, fe := newTestGateway(t, t.TempDir())
	iface := testInterface(t)
	kA, kB, kC := genKey(t), genKey(t), genKey(t)
	pA, pB := peerMsg(kA, "10.10.0.2/32", "fd00:10::2/128"), peerMsg(kB, "10.10.0.3/32")

	if ok, err := g.applyChanges(&gw.Changes{FromRevision: 1, ToRevision: 2, Interface: iface}); !errors.Is(err, errGap) || ok {
		t.Fatalf("changes before any snapshot: ok=%v err=%v, want errGap", ok, err)
	}

	// A snapshot installs its peers.
	ok, err := g.applySnapshot(&gw.Snapshot{Revision: 5, Interface: iface, Peers: []*gw.Peer{pA, pB}})
	if err != nil || !ok {
		t.Fatalf("snapshot: ok=%v err=%v", ok, err)
	}
	if got, want := fe.keys(), sortedKeys(kA, kB); !slices.Equal(got, want) {
		t.Fatalf("device peers = %v, want %v", got, want)
	}
	if len(fe.configures) != 1 || fe.configures[0].ListenPort != 51820 || fe.configures[0].MTU != 1420 || len(fe.configures[0].Addresses) != 2 ||
		fe.configures[0].Name != "wgtest0" || fe.configures[0].PrivateKey != iface.PrivateKey {
		t.Fatalf("configure calls = %+v", fe.configures)
	}
	if p, _ := fe.peer(kA); len(p.AllowedIPs) != 2 || p.AllowedIPs[1].String() != "fd00:10::2/128" {
		t.Fatalf("peer A on device = %+v", p)
	}
	rev, keys, gen := g.testState()
	if rev != 5 || !slices.Equal(keys, sortedKeys(kA, kB)) || gen[kA] != 1 || gen[kB] != 1 {
		t.Fatalf("state after snapshot: rev %d keys %v generations %v", rev, keys, gen)
	}
	if ready, why := g.Ready(); !ready {
		t.Fatalf("not ready after a snapshot: %s", why)
	}
	callsAfterSnapshot := len(fe.calls())

	// The same snapshot again (from another core) and an older one are ignored.
	for _, r := range []uint64{5, 4} {
		ok, err := g.applySnapshot(&gw.Snapshot{Revision: r, Interface: iface, Peers: []*gw.Peer{pA}})
		if err != nil || ok {
			t.Fatalf("snapshot at revision %d: ok=%v err=%v, want ignored", r, ok, err)
		}
	}
	// Changes ending at or below the applied revision are duplicates.
	for _, c := range []*gw.Changes{{FromRevision: 3, ToRevision: 5}, {FromRevision: 1, ToRevision: 2}} {
		c.Interface, c.Removes = iface, []string{kA}
		ok, err := g.applyChanges(c)
		if err != nil || ok {
			t.Fatalf("changes %d..%d: ok=%v err=%v, want ignored", c.FromRevision, c.ToRevision, ok, err)
		}
	}
	// Changes starting beyond the applied revision leave a gap.
	ok, err = g.applyChanges(&gw.Changes{FromRevision: 6, ToRevision: 7, Interface: iface, Removes: []string{kA}})
	if !errors.Is(err, errGap) || ok {
		t.Fatalf("changes 6..7 on 5: ok=%v err=%v, want errGap", ok, err)
	}
	if len(fe.calls()) != callsAfterSnapshot || len(fe.configures) != 1 {
		t.Fatalf("ignored messages touched the device: %v", fe.calls()[callsAfterSnapshot:])
	}
	if rev, keys, _ := g.testState(); rev != 5 || !slices.Equal(keys, sortedKeys(kA, kB)) {
		t.Fatalf("ignored messages changed the state: rev %d keys %v", rev, keys)
	}

	// Incremental changes: A repeated unchanged, C added, B removed.
	ok, err = g.applyChanges(&gw.Changes{FromRevision: 5, ToRevision: 6, Interface: iface,
		Upserts: []*gw.Peer{peerMsg(kA, "10.10.0.2/32", "fd00:10::2/128"), peerMsg(kC, "10.10.0.4/32")}, Removes: []string{kB}})
	if err != nil || !ok {
		t.Fatalf("changes 5..6: ok=%v err=%v", ok, err)
	}
	calls := fe.calls()
	if len(calls) != callsAfterSnapshot+1 {
		t.Fatalf("changes 5..6 made %d apply calls", len(calls)-callsAfterSnapshot)
	}
	if c := calls[len(calls)-1]; !slices.Equal(c.set, []string{kC}) || !slices.Equal(c.remove, []string{kB}) {
		t.Fatalf("changes 5..6 applied set %v remove %v", c.set, c.remove)
	}
	if got, want := fe.keys(), sortedKeys(kA, kC); !slices.Equal(got, want) {
		t.Fatalf("device peers = %v, want %v", got, want)
	}
	rev, keys, gen = g.testState()
	if rev != 6 || !slices.Equal(keys, sortedKeys(kA, kC)) || gen[kA] != 1 || gen[kC] != 1 {
		t.Fatalf("state after 5..6: rev %d keys %v generations %v", rev, keys, gen)
	}
	if len(fe.configures) != 1 {
		t.Fatalf("an unchanged interface was configured again: %d calls", len(fe.configures))
	}

	// Overlapping changes (from below, to above the applied revision): C's
	// allowed IPs change; it is updated in place, not reinstalled.
	ok, err = g.applyChanges(&gw.Changes{FromRevision: 4, ToRevision: 7, Interface: iface,
		Upserts: []*gw.Peer{peerMsg(kC, "10.10.0.4/32", "fd00:10::4/128")}, Removes: []string{kB}})
	if err != nil || !ok {
		t.Fatalf("changes 4..7: ok=%v err=%v", ok, err)
	}
	calls = fe.calls()
	if c := calls[len(calls)-1]; !slices.Equal(c.set, []string{kC}) || len(c.remove) != 0 {
		t.Fatalf("changes 4..7 applied set %v remove %v (B is gone already)", c.set, c.remove)
	}
	if p, _ := fe.peer(kC); len(p.AllowedIPs) != 2 {
		t.Fatalf("C on device = %+v", p)
	}
	if _, _, gen = g.testState(); gen[kC] != 1 {
		t.Fatalf("updating C changed its generation: %v", gen)
	}

	// B comes back: a reinstall starts a new generation, so statistics
	// never take a delta across the restart of its counters.
	ok, err = g.applyChanges(&gw.Changes{FromRevision: 7, ToRevision: 8, Interface: iface, Upserts: []*gw.Peer{pB}})
	if err != nil || !ok {
		t.Fatalf("changes 7..8: ok=%v err=%v", ok, err)
	}
	if _, _, gen = g.testState(); gen[kB] != 2 || gen[kA] != 1 || gen[kC] != 1 {
		t.Fatalf("generations after B's reinstall = %v, want B=2 A=1 C=1", gen)
	}
	// A changed interface is configured again.
	iface2 := testInterface(t)
	iface2.ListenPort = 51821
	ok, err = g.applyChanges(&gw.Changes{FromRevision: 8, ToRevision: 9, Interface: iface2})
	if err != nil || !ok {
		t.Fatalf("changes 8..9: ok=%v err=%v", ok, err)
	}
	if len(fe.configures) != 2 || fe.configures[1].ListenPort != 51821 {
		t.Fatalf("configure calls = %+v", fe.configures)
	}

	// A was never touched after the first snapshot.
	if touched(fe.calls(), callsAfterSnapshot)[kA] {
		t.Fatalf("unchanged peer A was set or removed: %+v", fe.calls()[callsAfterSnapshot:])
	}

	// A newer snapshot is applied as a diff against the device: A is kept,
	// C removed, B updated in place, D installed.
	kD := genKey(t)
	before := len(fe.calls())
	ok, err = g.applySnapshot(&gw.Snapshot{Revision: 12, Interface: iface2,
		Peers: []*gw.Peer{peerMsg(kA, "10.10.0.2/32", "fd00:10::2/128"), peerMsg(kB, "10.10.0.33/32"), peerMsg(kD, "10.10.0.5/32")}})
	if err != nil || !ok {
		t.Fatalf("snapshot 12: ok=%v err=%v", ok, err)
	}
	calls = fe.calls()
	if len(calls) != before+1 {
		t.Fatalf("snapshot 12 made %d apply calls", len(calls)-before)
	}
	if c := calls[before]; !slices.Equal(sortedKeys(c.set...), sortedKeys(kB, kD)) || !slices.Equal(c.remove, []string{kC}) {
		t.Fatalf("snapshot 12 applied set %v remove %v", c.set, c.remove)
	}
	if touched(calls, callsAfterSnapshot)[kA] {
		t.Fatalf("unchanged peer A was touched by a snapshot")
	}
	rev, keys, gen = g.testState()
	if rev != 12 || !slices.Equal(keys, sortedKeys(kA, kB, kD)) || gen[kA] != 1 || gen[kB] != 2 || gen[kD] != 1 {
		t.Fatalf("state after snapshot 12: rev %d keys %v generations %v", rev, keys, gen)
	}
	// C, removed by the snapshot and installed again later, gets a new
	// generation too.
	if _, err := g.applyChanges(&gw.Changes{FromRevision: 12, ToRevision: 13, Interface: iface2, Upserts: []*gw.Peer{peerMsg(kC, "10.10.0.4/32")}}); err != nil {
		t.Fatal(err)
	}
	if _, _, gen = g.testState(); gen[kC] != 2 {
		t.Fatalf("generation of C after remove by snapshot and reinstall = %d, want 2", gen[kC])
	}
	if len(fe.configures) != 2 {
		t.Fatalf("configure calls = %d, want 2", len(fe.configures))
	}
}

func TestApplyRejectsBadConfig(t *testing.T) {
	g, fe := newTestGateway(t, t.TempDir())
	iface := testInterface(t)
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Peers: []*gw.Peer{peerMsg(genKey(t), "10.10.0.2/32")}}); err == nil {
		t.Fatal("snapshot without interface accepted")
	}
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: iface, Peers: []*gw.Peer{peerMsg(genKey(t), "10.10.0.300/32")}}); err == nil {
		t.Fatal("snapshot with a bad allowed IP accepted")
	}
	bad := testInterface(t)
	bad.Addresses = []string{"banana"}
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: bad}); err == nil {
		t.Fatal("snapshot with a bad interface address accepted")
	}
	if rev, _, _ := g.testState(); rev != 0 || len(fe.calls()) != 0 {
		t.Fatalf("failed snapshots changed state: rev %d, %d apply calls", rev, len(fe.calls()))
	}
	if ready, _ := g.Ready(); ready {
		t.Fatal("ready without an applied config")
	}
}

func TestPersistAndRestore(t *testing.T) {
	dir := t.TempDir()
	g, _ := newTestGateway(t, dir)
	// Nothing applied: nothing written.
	g.persistNow()
	if _, err := os.Stat(filepath.Join(dir, configFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("config written before anything was applied: %v", err)
	}
	iface := testInterface(t)
	kA, kB, kC := genKey(t), genKey(t), genKey(t)
	psk := genKey(t)
	pA := peerMsg(kA, "10.10.0.2/32", "fd00:10::2/128")
	pA.PresharedKey, pA.Keepalive, pA.ExpiresAt = psk, 25, 1893456000000
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 3, Interface: iface, Peers: []*gw.Peer{pA, peerMsg(kB, "10.10.0.3/32")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.applyChanges(&gw.Changes{FromRevision: 3, ToRevision: 4, Interface: iface, Upserts: []*gw.Peer{peerMsg(kC, "10.10.0.4/32")}, Removes: []string{kB}}); err != nil {
		t.Fatal(err)
	}
	// Not signed by core yet: nothing of the configuration is written.
	g.persistNow()
	if saved, err := loadConfig(dir); err != nil || saved == nil || saved.Revision != 0 || len(saved.Peers) != 0 {
		t.Fatalf("unsigned configuration written: %+v, %v", saved, err)
	}
	ca := newTestCA(t)
	ca.use(g)
	g.handleSignature(ca.sign(t, g))
	g.persistNow()
	saved, err := loadConfig(dir)
	if err != nil || saved == nil {
		t.Fatalf("load saved config: %v %v", saved, err)
	}
	if saved.Revision != 4 || saved.Interface.GetPrivateKey() != iface.PrivateKey || len(saved.Peers) != 2 {
		t.Fatalf("saved config = rev %d, %d peers", saved.Revision, len(saved.Peers))
	}
	if info, err := os.Stat(filepath.Join(dir, configFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v (it holds the private key and must be 0600)", info, err)
	}

	// A new gateway on the same data dir restores the last known good config.
	g2, fe2 := newTestGateway(t, dir)
	ca.use(g2)
	if err := g2.restore(); err != nil {
		t.Fatal(err)
	}
	rev, keys, gen := g2.testState()
	if rev != 4 || !slices.Equal(keys, sortedKeys(kA, kC)) || gen[kA] != 1 || gen[kC] != 1 {
		t.Fatalf("restored state: rev %d keys %v generations %v", rev, keys, gen)
	}
	if got := fe2.keys(); !slices.Equal(got, sortedKeys(kA, kC)) {
		t.Fatalf("restored device peers = %v", got)
	}
	p, _ := fe2.peer(kA)
	if p.PresharedKey != psk || p.Keepalive != 25 || len(p.AllowedIPs) != 2 {
		t.Fatalf("restored peer A = %+v", p)
	}
	g2.mu.Lock()
	restoredA := g2.state.peers[kA]
	ifaceOK := g2.state.iface.GetPrivateKey() == iface.PrivateKey && g2.state.iface.GetLocationId() == "loc-1" && g2.state.iface.GetListenPort() == 51820
	g2.mu.Unlock()
	if !ifaceOK || restoredA.GetExpiresAt() != 1893456000000 || restoredA.GetDeviceId() != pA.DeviceId || !samePeerMsg(restoredA, pA) {
		t.Fatalf("restored state lost fields: iface ok %v, peer A %v", ifaceOK, restoredA)
	}
	if len(fe2.configures) != 1 || fe2.configures[0].PrivateKey != iface.PrivateKey {
		t.Fatalf("restore configured %+v", fe2.configures)
	}
	// It continues from the restored revision: duplicates are ignored, the
	// next changes apply.
	if ok, err := g2.applySnapshot(&gw.Snapshot{Revision: 4, Interface: iface}); ok || err != nil {
		t.Fatalf("snapshot at the restored revision: ok=%v err=%v", ok, err)
	}
	if ok, err := g2.applyChanges(&gw.Changes{FromRevision: 4, ToRevision: 5, Interface: iface, Removes: []string{kA}}); !ok || err != nil {
		t.Fatalf("changes after restore: ok=%v err=%v", ok, err)
	}
	if got := fe2.keys(); !slices.Equal(got, []string{kC}) {
		t.Fatalf("device peers after changes = %v", got)
	}

	// A gateway on an empty data dir restores nothing.
	g3, fe3 := newTestGateway(t, t.TempDir())
	if err := g3.restore(); err != nil {
		t.Fatal(err)
	}
	if rev, _, _ := g3.testState(); rev != 0 || len(fe3.calls()) != 0 {
		t.Fatalf("restore from nothing: rev %d", rev)
	}
	// A corrupt file is an error, not a silent empty config.
	if err := os.WriteFile(filepath.Join(dir, configFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	g4, _ := newTestGateway(t, dir)
	if err := g4.restore(); err == nil {
		t.Fatal("corrupt config restored without error")
	}
}

// Applying never blocks on the persist signal, even when nobody drains it
// (before Serve starts or after it stopped the persist loop).
func TestApplyDoesNotBlockWithoutPersistLoop(t *testing.T) {
	g, _ := newTestGateway(t, t.TempDir())
	iface := testInterface(t)
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = genKey(t)
	}
	done := make(chan error, 1)
	go func() {
		if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: iface}); err != nil {
			done <- err
			return
		}
		for r := uint64(1); r < 20; r++ {
			if _, err := g.applyChanges(&gw.Changes{FromRevision: r, ToRevision: r + 1, Interface: iface, Upserts: []*gw.Peer{peerMsg(keys[r], "10.10.0.2/32")}}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("applying blocked: the persist signal is not coalesced")
	}
	if rev, _, _ := g.testState(); rev != 20 {
		t.Fatalf("revision = %d, want 20", rev)
	}
}
