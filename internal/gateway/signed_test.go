package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/gwsign"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// testCA stands in for core's CA: it signs what a gateway applied.
type testCA struct{ key *ecdsa.PrivateKey }

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: k}
}

func (c *testCA) use(g *Gateway) { g.caKey = func() crypto.PublicKey { return &c.key.PublicKey } }

// sign signs the gateway's applied configuration as core would (core signs
// its own copy; the same content gives the same digest).
func (c *testCA) sign(t *testing.T, g *Gateway) *gw.ConfigSignature {
	t.Helper()
	g.mu.Lock()
	rev, iface, peers := g.state.revision, g.state.iface, slices.Collect(maps.Values(g.state.peers))
	g.mu.Unlock()
	d, err := gwsign.Digest(rev, iface, peers)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := gwsign.Sign(c.key, d)
	if err != nil {
		t.Fatal(err)
	}
	return &gw.ConfigSignature{Revision: rev, Signature: sig}
}

func TestSignedRestore(t *testing.T) {
	iface := testInterface(t)
	kA, kB, kC := genKey(t), genKey(t), genKey(t)
	setup := func(t *testing.T) (string, *testCA) {
		dir := t.TempDir()
		g, _ := newTestGateway(t, dir)
		ca := newTestCA(t)
		ca.use(g)
		if _, err := g.applySnapshot(&gw.Snapshot{Revision: 7, Interface: iface, Peers: []*gw.Peer{peerMsg(kA, "10.10.0.2/32"), peerMsg(kB, "10.10.0.3/32")}}); err != nil {
			t.Fatal(err)
		}
		g.handleSignature(ca.sign(t, g))
		// Changed after the signature: B removed, C added (not signed yet).
		if _, err := g.applyChanges(&gw.Changes{FromRevision: 7, ToRevision: 8, Interface: iface, Upserts: []*gw.Peer{peerMsg(kC, "10.10.0.4/32")},
			Removes: []string{kB}}); err != nil {
			t.Fatal(err)
		}
		g.persistNow()
		return dir, ca
	}
	restored := func(t *testing.T, dir string, ca *testCA) (*Gateway, *fakeEngine, error) {
		g, fe := newTestGateway(t, dir)
		if ca != nil {
			ca.use(g)
		}
		err := g.restore()
		return g, fe, err
	}

	t.Run("signed base without what changed after it", func(t *testing.T) {
		dir, ca := setup(t)
		g, fe, err := restored(t, dir, ca)
		if err != nil {
			t.Fatal(err)
		}
		// B was removed after the signature: it must not come back; C
		// is not signed yet: not restored either.
		if got := fe.keys(); !slices.Equal(got, []string{kA}) {
			t.Fatalf("restored peers %v, want only %s", got, kA)
		}
		g.mu.Lock()
		dirty, rev := g.localDirty, g.state.revision
		g.mu.Unlock()
		if !dirty || rev != 7 {
			t.Fatalf("after a partial restore: dirty %v revision %d; it must ask core for a snapshot", dirty, rev)
		}
		// Core's snapshot of the same revision is taken (it brings back
		// what core still wants) and clears the flag.
		if ok, err := g.applySnapshot(&gw.Snapshot{Revision: 8, Interface: iface, Peers: []*gw.Peer{peerMsg(kA, "10.10.0.2/32"), peerMsg(kC, "10.10.0.4/32")}}); !ok || err != nil {
			t.Fatalf("snapshot after a partial restore: %v %v", ok, err)
		}
		if got := fe.keys(); !slices.Equal(got, sortedKeys(kA, kC)) {
			t.Fatalf("after core's snapshot: %v", got)
		}
	})
	t.Run("tampered file refused", func(t *testing.T) {
		dir, ca := setup(t)
		raw, _ := os.ReadFile(filepath.Join(dir, configFile))
		var saved savedConfig
		if err := json.Unmarshal(raw, &saved); err != nil {
			t.Fatal(err)
		}
		saved.Peers = append(saved.Peers, peerMsg(genKey(t), "0.0.0.0/0"))
		raw, _ = json.Marshal(saved)
		if err := os.WriteFile(filepath.Join(dir, configFile), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, fe, err := restored(t, dir, ca)
		if err == nil || len(fe.keys()) != 0 {
			t.Fatalf("a configuration with a peer added on disk was restored: err %v, peers %v", err, fe.keys())
		}
	})
	t.Run("another CA refused", func(t *testing.T) {
		dir, _ := setup(t)
		_, fe, err := restored(t, dir, newTestCA(t))
		if err == nil || len(fe.keys()) != 0 {
			t.Fatalf("restored under another CA: err %v, peers %v", err, fe.keys())
		}
	})
	t.Run("signature of another state ignored", func(t *testing.T) {
		g, _ := newTestGateway(t, t.TempDir())
		ca := newTestCA(t)
		ca.use(g)
		if _, err := g.applySnapshot(&gw.Snapshot{Revision: 3, Interface: iface, Peers: []*gw.Peer{peerMsg(kA, "10.10.0.2/32")}}); err != nil {
			t.Fatal(err)
		}
		sig := ca.sign(t, g)
		sig.Signature[len(sig.Signature)-1] ^= 1
		g.handleSignature(sig)
		stale := ca.sign(t, g)
		stale.Revision = 2
		g.handleSignature(stale)
		if g.signed != nil {
			t.Fatal("a bad or stale signature was taken")
		}
	})
}

func TestExpiryWithoutCore(t *testing.T) {
	iface := testInterface(t)
	iface.MfaDisconnectThreshold = 300
	g, fe := newTestGateway(t, t.TempDir())
	ca := newTestCA(t)
	ca.use(g)
	now := time.Now()
	kLive, kStale, kNew, kDead := genKey(t), genKey(t), genKey(t), genKey(t)
	dead := peerMsg(kDead, "10.10.0.5/32")
	dead.ExpiresAt = now.Add(-time.Second).UnixMilli()
	fresh := peerMsg(kNew, "10.10.0.4/32")
	fresh.ExpiresAt = now.Add(time.Minute).UnixMilli()
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 5, Interface: iface, Peers: []*gw.Peer{peerMsg(kLive, "10.10.0.2/32"),
		peerMsg(kStale, "10.10.0.3/32"), fresh, dead}}); err != nil {
		t.Fatal(err)
	}
	g.handleSignature(ca.sign(t, g))
	// The sessions were installed ten minutes ago; the handshakes below
	// belong to them.
	for k := range g.installed {
		g.installed[k] = now.Add(-10 * time.Minute)
	}
	g.mergeEndpoints([]*gw.PeerEndpoint{
		{PublicKey: kLive, Endpoint: "192.0.2.1:1000", LastHandshake: now.Add(-time.Minute).UnixMilli()},
		{PublicKey: kStale, Endpoint: "192.0.2.2:1000", LastHandshake: now.Add(-6 * time.Minute).UnixMilli()},
	})
	if err := g.expireOnce(now, now.Add(-10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := fe.keys(); !slices.Equal(got, sortedKeys(kLive, kNew)) {
		t.Fatalf("after expiry: %v, want the live and the not-yet-due sessions", got)
	}
	if !g.localDirty || !g.touched[kStale] || !g.touched[kDead] {
		t.Fatalf("expiry must mark the state dirty and the keys touched: dirty %v touched %v", g.localDirty, g.touched)
	}
	// Restarted later, still without core: the restore applies the same
	// rules (the fresh session's deadline has passed by then).
	g.persistNow()
	g2, fe2 := newTestGateway(t, g.cfg.DataDir)
	ca.use(g2)
	if err := g2.restore(); err != nil {
		t.Fatal(err)
	}
	if got := fe2.keys(); !slices.Equal(got, []string{kLive}) && !slices.Equal(got, sortedKeys(kLive, kNew)) {
		t.Fatalf("restored %v", got)
	}
	if slices.Contains(fe2.keys(), kStale) || slices.Contains(fe2.keys(), kDead) {
		t.Fatalf("an expired MFA peer was restored: %v", fe2.keys())
	}
}
