package wgengine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
)

func keyPair(t *testing.T) (priv, pub string) {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	p, err := curve25519.X25519(k, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k), base64.StdEncoding.EncodeToString(p)
}

// TestNetstack runs two netstack engines on loopback (no privileges), HTTP
// over the tunnel, then moves the client's peer to a second "gateway" with
// the same key, as a failover does.
func TestNetstack(t *testing.T) {
	loop := netip.MustParseAddrPort("127.0.0.1:0")
	gwPriv, gwPub := keyPair(t)
	clPriv, clPub := keyPair(t)
	psk, _ := keyPair(t)

	newGateway := func(name string) *Netstack {
		gw := NewNetstack(NetstackOptions{ListenAddr: loop})
		t.Cleanup(func() { gw.Close() })
		if gw.Net() != nil || gw.Up() || gw.ListenAddr().IsValid() {
			t.Fatal("netstack usable before Configure")
		}
		if _, err := gw.Peers(); err == nil {
			t.Fatal("Peers before Configure")
		}
		if err := gw.Configure(Interface{PrivateKey: gwPriv, ListenPort: 51820, Addresses: prefixes(t, "10.66.0.1/24")}); err != nil {
			t.Fatal(err)
		}
		if err := gw.Apply([]PeerConfig{{PublicKey: clPub, PresharedKey: psk, AllowedIPs: prefixes(t, "10.66.0.2/32")}}, nil); err != nil {
			t.Fatal(err)
		}
		ln, err := gw.Net().ListenTCP(&net.TCPAddr{IP: net.IPv4(10, 66, 0, 1), Port: 80})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return gw
	}
	gw1, gw2 := newGateway("one"), newGateway("two")
	if !gw1.Up() || gw1.Kind() != "netstack" {
		t.Fatal("gateway not up")
	}
	ep1, ep2 := gw1.ListenAddr(), gw2.ListenAddr()
	if !ep1.Addr().IsLoopback() || ep1.Port() == 0 || ep1 == ep2 {
		t.Fatalf("listen addresses %v, %v", ep1, ep2)
	}
	// The configured listen port is ignored for the bound address, and a
	// key change keeps the socket.
	if err := gw1.Configure(Interface{PrivateKey: gwPriv, ListenPort: 51821, Addresses: prefixes(t, "10.66.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	if gw1.ListenAddr() != ep1 {
		t.Fatalf("listen address moved to %v", gw1.ListenAddr())
	}
	if err := gw1.Configure(Interface{PrivateKey: gwPriv, Addresses: prefixes(t, "10.66.0.9/24")}); err == nil || !strings.Contains(err.Error(), "addresses cannot change") {
		t.Fatalf("address change: %v", err)
	}

	cl := NewNetstack(NetstackOptions{ListenAddr: loop})
	defer cl.Close()
	if err := cl.Configure(Interface{PrivateKey: clPriv, Addresses: prefixes(t, "10.66.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	peer := PeerConfig{PublicKey: gwPub, PresharedKey: psk, AllowedIPs: prefixes(t, "10.66.0.0/24"), Endpoint: ep1.String()}
	if err := cl.Apply([]PeerConfig{peer}, nil); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: cl.Net().DialContext, DisableKeepAlives: true}}
	get := func() string {
		t.Helper()
		resp, err := hc.Get("http://10.66.0.1/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "one" {
		t.Fatalf("first gateway answered %q", got)
	}
	peers, err := cl.Peers()
	if err != nil || len(peers) != 1 || peers[0].Endpoint != ep1.String() || peers[0].LastHandshake.IsZero() || peers[0].RxBytes == 0 {
		t.Fatalf("client peers %+v, %v", peers, err)
	}
	gwPeers, err := gw1.Peers()
	if err != nil || len(gwPeers) != 1 || gwPeers[0].Endpoint != cl.ListenAddr().String() {
		t.Fatalf("gateway peers %+v (client at %v), %v", gwPeers, cl.ListenAddr(), err)
	}

	// Failover: the first gateway goes away; the peer is re-added towards
	// the second, which starts a fresh handshake.
	gw1.Close()
	if gw1.Up() {
		t.Fatal("closed engine is up")
	}
	peer.Endpoint = ep2.String()
	if err := cl.Apply(nil, []string{gwPub}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Apply([]PeerConfig{peer}, nil); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "two" {
		t.Fatalf("second gateway answered %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := cl.Net().DialContext(ctx, "tcp", "10.66.0.1:81"); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
}
