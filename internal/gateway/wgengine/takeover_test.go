package wgengine

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// takeoverPair is a gateway and a client on netstack engines over
// loopback. The client knows the gateway's endpoint but never sends on its
// own (no traffic, persistent keepalive 0); the gateway has the client as
// a peer without an endpoint, as after a failover to a gateway that never
// heard from it.
type takeoverPair struct {
	gw, cl        *Netstack
	gwPub, clPub  string
	clientTunnel  netip.Addr
	gatewayConfig PeerConfig
}

func newTakeoverPair(t *testing.T) *takeoverPair {
	t.Helper()
	loop := netip.MustParseAddrPort("127.0.0.1:0")
	gwPriv, gwPub := keyPair(t)
	clPriv, clPub := keyPair(t)
	p := &takeoverPair{gwPub: gwPub, clPub: clPub, clientTunnel: netip.MustParseAddr("10.77.0.2")}
	p.gw = NewNetstack(NetstackOptions{ListenAddr: loop})
	t.Cleanup(func() { p.gw.Close() })
	if err := p.gw.Configure(Interface{PrivateKey: gwPriv, Addresses: prefixes(t, "10.77.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	p.gatewayConfig = PeerConfig{PublicKey: clPub, AllowedIPs: prefixes(t, "10.77.0.2/32")}
	if err := p.gw.Apply([]PeerConfig{p.gatewayConfig}, nil); err != nil {
		t.Fatal(err)
	}
	p.cl = NewNetstack(NetstackOptions{ListenAddr: loop})
	t.Cleanup(func() { p.cl.Close() })
	if err := p.cl.Configure(Interface{PrivateKey: clPriv, Addresses: prefixes(t, "10.77.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	if err := p.cl.Apply([]PeerConfig{{PublicKey: gwPub, AllowedIPs: prefixes(t, "10.77.0.0/24"), Endpoint: p.gw.ListenAddr().String()}}, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func onlyPeer(t *testing.T, e Engine) PeerState {
	t.Helper()
	peers, err := e.Peers()
	if err != nil || len(peers) != 1 {
		t.Fatalf("peers = %+v, %v; want exactly one", peers, err)
	}
	return peers[0]
}

// waitHandshakes polls both devices (UAPI get) until each reports a
// handshake newer than after, and returns how long that took.
func (p *takeoverPair) waitHandshakes(t *testing.T, after time.Time, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		g, c := onlyPeer(t, p.gw), onlyPeer(t, p.cl)
		if g.LastHandshake.After(after) && c.LastHandshake.After(after) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("no handshake within %s: gateway %v, client %v (after %v)", limit, g.LastHandshake, c.LastHandshake, after)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestInitiateAndStandby proves the two halves of a fast, clean failover
// on real wireguard-go devices: the gateway that takes over reaches a silent
// client by itself (Initiate), and a standby sends nothing at all, even
// with a persistent keepalive configured and traffic waiting for the peer.
func TestInitiateAndStandby(t *testing.T) {
	p := newTakeoverPair(t)
	clientAddr := p.cl.ListenAddr().String()

	// Nobody talks first: no handshake happens by itself.
	time.Sleep(300 * time.Millisecond)
	if g, c := onlyPeer(t, p.gw), onlyPeer(t, p.cl); !g.LastHandshake.IsZero() || !c.LastHandshake.IsZero() || c.RxBytes != 0 {
		t.Fatalf("handshake without anyone initiating: gateway %+v client %+v", g, c)
	}

	// Takeover: the gateway learns the client's endpoint only here.
	before := time.Now()
	n, err := p.gw.Initiate(map[string]string{
		p.clPub: clientAddr,
		"bogus": "192.0.2.1:1",     // bad key: skipped
		p.gwPub: "not an endpoint", // malformed: skipped
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=": "192.0.2.1:51820", // not a peer: update_only skips it
	})
	if err != nil || n != 1 {
		t.Fatalf("Initiate = %d, %v; want 1 handshake", n, err)
	}
	took := p.waitHandshakes(t, before.Add(-time.Second), time.Second)
	t.Logf("handshake completed %s after Initiate (both sides' last_handshake set)", took)
	if ep := onlyPeer(t, p.gw).Endpoint; ep != clientAddr {
		t.Fatalf("gateway's endpoint for the client = %q, want %q", ep, clientAddr)
	}
	if !p.gw.Up() {
		t.Fatal("gateway not up")
	}

	// Make the gateway noisy: a 1 s persistent keepalive reaches the
	// client, so silence later is the standby's doing, not the absence of
	// anything to send.
	noisy := p.gatewayConfig
	noisy.Keepalive = 1
	if err := p.gw.Apply([]PeerConfig{noisy}, nil); err != nil {
		t.Fatal(err)
	}
	rx0 := onlyPeer(t, p.cl).RxBytes
	time.Sleep(2200 * time.Millisecond)
	rx1 := onlyPeer(t, p.cl).RxBytes
	if rx1 <= rx0 {
		t.Fatalf("an active gateway with keepalive 1 s sent nothing in 2.2 s (client rx %d -> %d)", rx0, rx1)
	}
	t.Logf("active gateway with keepalive 1 s: client received %d bytes in 2.2 s", rx1-rx0)

	// Standby: nothing leaves the gateway for 2 s, although its keepalive
	// is still configured and a connection attempt to the client waits.
	if err := p.gw.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if !p.gw.Up() {
		t.Fatal("a healthy standby must stay Up (readiness)")
	}
	time.Sleep(50 * time.Millisecond) // a packet already on its way may land
	base := onlyPeer(t, p.cl)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	_, dialErr := p.gw.Net().DialContext(ctx, "tcp", net.JoinHostPort(p.clientTunnel.String(), "80"))
	cancel()
	if dialErr == nil {
		t.Fatal("a standby gateway reached the client")
	}
	time.Sleep(500 * time.Millisecond)
	after := onlyPeer(t, p.cl)
	if after.RxBytes != base.RxBytes || !after.LastHandshake.Equal(base.LastHandshake) {
		t.Fatalf("standby gateway sent to the client: rx %d -> %d, handshake %v -> %v", base.RxBytes, after.RxBytes, base.LastHandshake, after.LastHandshake)
	}
	t.Logf("standby for 2s with keepalive 1 s and a pending dial: client rx stayed at %d bytes", after.RxBytes)
	if _, err := p.gw.Initiate(map[string]string{p.clPub: clientAddr}); !errors.Is(err, ErrStandby) {
		t.Fatalf("Initiate on a standby = %v, want ErrStandby", err)
	}
	// Configuration keeps applying on a standby.
	if err := p.gw.Apply([]PeerConfig{p.gatewayConfig}, nil); err != nil {
		t.Fatalf("apply on a standby: %v", err)
	}
	if k := onlyPeer(t, p.gw).Keepalive; k != 0 {
		t.Fatalf("keepalive on the standby = %d after apply, want 0", k)
	}

	// Active again: the handshake happens again at once.
	before = time.Now()
	if err := p.gw.SetActive(true); err != nil {
		t.Fatal(err)
	}
	if n, err := p.gw.Initiate(map[string]string{p.clPub: clientAddr}); err != nil || n != 1 {
		t.Fatalf("Initiate after activation = %d, %v", n, err)
	}
	took = p.waitHandshakes(t, before, time.Second)
	t.Logf("re-activated: handshake completed %s after SetActive(true)+Initiate", took)
	if !p.gw.ListenAddr().IsValid() {
		t.Fatal("no socket after activation")
	}
}

// TestStandbyBeforeConfigure: an engine told to be standby before its first
// Configure never comes up (a gateway that starts without the floating IP
// must not send even once).
func TestStandbyBeforeConfigure(t *testing.T) {
	gwPriv, _ := keyPair(t)
	e := NewNetstack(NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	defer e.Close()
	if err := e.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if err := e.Configure(Interface{PrivateKey: gwPriv, Addresses: prefixes(t, "10.78.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	if e.ListenAddr().IsValid() {
		t.Fatalf("standby engine opened a socket at %v", e.ListenAddr())
	}
	if !e.Up() {
		t.Fatal("configured standby engine not Up")
	}
	if err := e.SetActive(true); err != nil {
		t.Fatal(err)
	}
	if !e.ListenAddr().IsValid() {
		t.Fatal("activated engine has no socket")
	}
}
