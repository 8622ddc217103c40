package wgengine

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

const inNetnsEnv = "WARD_WGENGINE_TEST_IN_NETNS"

// TestUserspaceStandbyTUN checks standby on the production engine: a
// wireguard-go device on a real TUN, whose Linux driver sends EventUp (and
// wireguard-go then brings the device up by itself) on every link
// notification of the running interface. The test re-runs itself inside a
// fresh network namespace (one process per namespace, as in the e2e
// harness), so it needs root and /dev/net/tun.
func TestUserspaceStandbyTUN(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		if os.Getuid() != 0 {
			t.Skip("needs root for a network namespace and a TUN device")
		}
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			t.Skip("no /dev/net/tun")
		}
		name := fmt.Sprintf("wardwg%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Skipf("ip netns add: %v: %s", err, out)
		}
		defer exec.Command("ip", "netns", "del", name).Run()
		cmd := exec.Command("ip", "netns", "exec", name, os.Args[0], "-test.run=^TestUserspaceStandbyTUN$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in namespace %s:\n%s", name, out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}

	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	const port = 51999
	portFree := func() bool {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	gwPriv, gwPub := keyPair(t)
	clPriv, clPub := keyPair(t)
	gw, err := NewUserspace("wgsb0", 1420, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if err := gw.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if err := gw.Configure(Interface{PrivateKey: gwPriv, ListenPort: port, Addresses: prefixes(t, "10.79.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	if !gw.Up() {
		t.Fatal("configured standby TUN engine not Up")
	}
	// Link notifications (the link came up; an MTU change) must not wake it.
	poke := func(mtu int) {
		t.Helper()
		l, err := netlink.LinkByName("wgsb0")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	poke(1400)
	time.Sleep(1200 * time.Millisecond) // the TUN driver's hack listener polls every second
	if !portFree() {
		t.Fatal("a standby device opened its UDP socket (woken by a TUN event)")
	}

	cl := NewNetstack(NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	defer cl.Close()
	if err := cl.Configure(Interface{PrivateKey: clPriv, Addresses: prefixes(t, "10.79.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Apply([]PeerConfig{{PublicKey: gwPub, AllowedIPs: prefixes(t, "10.79.0.0/24"), Endpoint: fmt.Sprintf("127.0.0.1:%d", port)}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := gw.Apply([]PeerConfig{{PublicKey: clPub, AllowedIPs: prefixes(t, "10.79.0.2/32"), Keepalive: 1}}, nil); err != nil {
		t.Fatal(err)
	}

	before := time.Now()
	if err := gw.SetActive(true); err != nil {
		t.Fatal(err)
	}
	if portFree() {
		t.Fatal("active device has no socket")
	}
	if n, err := gw.Initiate(map[string]string{clPub: cl.ListenAddr().String()}); err != nil || n != 1 {
		t.Fatalf("Initiate = %d, %v", n, err)
	}
	for {
		g, c := onlyPeer(t, gw), onlyPeer(t, cl)
		if g.LastHandshake.After(before.Add(-time.Second)) && c.LastHandshake.After(before.Add(-time.Second)) {
			t.Logf("TUN engine: handshake %s after SetActive(true)+Initiate", time.Since(before).Round(100*time.Microsecond))
			break
		}
		if time.Since(before) > time.Second {
			t.Fatalf("no handshake within 1s: gateway %+v client %+v", g, c)
		}
		time.Sleep(2 * time.Millisecond)
	}

	if err := gw.SetActive(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	base := onlyPeer(t, cl).RxBytes
	poke(1420)
	time.Sleep(2 * time.Second)
	if rx := onlyPeer(t, cl).RxBytes; rx != base {
		t.Fatalf("standby TUN engine sent to the client: rx %d -> %d", base, rx)
	}
	if !portFree() {
		t.Fatal("standby device woke up after a link notification")
	}
	if !gw.Up() {
		t.Fatal("standby TUN engine not Up")
	}
	t.Logf("standby for 2s with keepalive 1 s and an MTU change: client rx stayed at %d bytes, UDP port free", base)
}
