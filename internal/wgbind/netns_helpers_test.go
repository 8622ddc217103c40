package wgbind

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
)

// family is one address family of a testNet: the gateway's primary address,
// the VIP added as a second address (so the kernel would never choose it as
// source on its own), and the client's address.
type family struct {
	name    string // "ipv4" / "ipv6"
	network string // "udp4" / "udp6"
	bits    int
	primary netip.Addr
	vip     netip.Addr
	client  netip.Addr
}

// testNet is a gateway and a client namespace joined by a veth pair.
type testNet struct {
	id     string // unique per run, ≤ 8 chars so derived link names fit in 15
	gwNS   netns.NsHandle
	clNS   netns.NsHandle
	gwName string
	clName string
	gwIf   string
	clIf   string
	v4     family
	v6     family
	no6    string // why IPv6 is unusable, "" when it works
}

func requireRootAndIP(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN for network namespaces, CAP_NET_ADMIN for links)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to build network namespaces")
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func mustIP(t *testing.T, args ...string) {
	t.Helper()
	if err := ipCmd(args...); err != nil {
		t.Fatal(err)
	}
}

// newTestNet builds the namespaces with random names and subnets; cleanup
// removes them whatever happens to the test.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRootAndIP(t)

	r := randomBytes(t, 3+2+5)
	id := "wb" + hex.EncodeToString(r[:3])
	n := &testNet{
		id:     id,
		gwName: id + "g",
		clName: id + "c",
		gwIf:   id + "g",
		clIf:   id + "c",
	}
	x, y := r[3], r[4]
	n.v4 = family{
		name: "ipv4", network: "udp4", bits: 24,
		primary: netip.AddrFrom4([4]byte{10, x, y, 1}),
		vip:     netip.AddrFrom4([4]byte{10, x, y, 100}),
		client:  netip.AddrFrom4([4]byte{10, x, y, 10}),
	}
	var p [16]byte
	p[0] = 0xfd
	copy(p[1:6], r[5:10])
	v6 := func(last byte) netip.Addr { a := p; a[15] = last; return netip.AddrFrom16(a) }
	n.v6 = family{
		name: "ipv6", network: "udp6", bits: 64,
		primary: v6(1), vip: v6(0x64), client: v6(0x10),
	}

	mustIP(t, "netns", "add", n.gwName)
	t.Cleanup(func() { _ = ipCmd("netns", "del", n.gwName) })
	mustIP(t, "netns", "add", n.clName)
	t.Cleanup(func() { _ = ipCmd("netns", "del", n.clName) })

	var err error
	if n.gwNS, err = netns.GetFromName(n.gwName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.gwNS.Close() })
	if n.clNS, err = netns.GetFromName(n.clName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.clNS.Close() })

	mustIP(t, "link", "add", n.gwIf, "netns", n.gwName, "type", "veth",
		"peer", "name", n.clIf, "netns", n.clName)
	for _, ns := range []string{n.gwName, n.clName} {
		mustIP(t, "-n", ns, "link", "set", "lo", "up")
	}
	// Primary first: the kernel picks the first address of a subnet as
	// source, which is exactly the situation of a VRRP VIP.
	mustIP(t, "-n", n.gwName, "addr", "add", cidr(n.v4.primary, 24), "dev", n.gwIf)
	mustIP(t, "-n", n.gwName, "addr", "add", cidr(n.v4.vip, 24), "dev", n.gwIf)
	mustIP(t, "-n", n.clName, "addr", "add", cidr(n.v4.client, 24), "dev", n.clIf)
	n.no6 = n.addV6()
	mustIP(t, "-n", n.gwName, "link", "set", n.gwIf, "up")
	mustIP(t, "-n", n.clName, "link", "set", n.clIf, "up")
	return n
}

// addV6 returns why IPv6 cannot be used instead of failing: a kernel or
// namespace without IPv6 is a legitimate environment for the IPv4 tests.
func (n *testNet) addV6() string {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return "kernel has no IPv6 (/proc/sys/net/ipv6 missing)"
	}
	// Unlike IPv4, Linux prefers the newest of equally good IPv6 addresses
	// as source, so the VIP goes in first to keep it the non-preferred one.
	steps := [][]string{
		{"-n", n.gwName, "addr", "add", cidr(n.v6.vip, 64), "dev", n.gwIf, "nodad"},
		{"-n", n.gwName, "addr", "add", cidr(n.v6.primary, 64), "dev", n.gwIf, "nodad"},
		{"-n", n.clName, "addr", "add", cidr(n.v6.client, 64), "dev", n.clIf, "nodad"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return "IPv6 addresses in a namespace are not available: " + err.Error()
		}
	}
	return ""
}

func cidr(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }

func (n *testNet) family(t *testing.T, name string) family {
	t.Helper()
	if name == "ipv6" {
		if n.no6 != "" {
			t.Skip(n.no6)
		}
		return n.v6
	}
	return n.v4
}

// runIn runs fn on a fresh OS thread switched into ns. Sockets and TUN devices
// stay in the namespace they were created in, so fn only has to create them.
// If the thread cannot be switched back it stays locked and Go discards it
// when the goroutine ends, instead of handing a foreign namespace to others.
func runIn(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restoring namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nsBind opens the wrapped Bind inside a namespace. wireguard-go opens its
// Bind from whatever goroutine calls Up or sets listen_port.
type nsBind struct {
	conn.Bind
	ns netns.NsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = runIn(b.ns, func() error {
		var e error
		fns, actual, e = b.Bind.Open(port)
		return e
	})
	return fns, actual, err
}

func listenUDPIn(t *testing.T, ns netns.NsHandle, network string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := runIn(ns, func() error {
		var e error
		c, e = net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
		return e
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// received is one datagram taken from a Bind's ReceiveFunc.
type received struct {
	data []byte
	ep   conn.Endpoint
}

// openBindIn opens b in ns and pumps every ReceiveFunc into the returned
// channel until the Bind is closed (which cleanup does).
func openBindIn(t *testing.T, ns netns.NsHandle, b conn.Bind, port uint16) (<-chan received, uint16) {
	t.Helper()
	fns, actual, err := (&nsBind{Bind: b, ns: ns}).Open(port)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	out := make(chan received, 1024)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs := b.BatchSize()
			bufs := make([][]byte, bs)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, bs)
			eps := make([]conn.Endpoint, bs)
			for {
				n, err := fn(bufs, sizes, eps)
				if err != nil {
					return
				}
				for i := range n {
					if sizes[i] == 0 {
						continue
					}
					select {
					case out <- received{data: append([]byte(nil), bufs[i][:sizes[i]]...), ep: eps[i]}:
					case <-done:
						return
					}
				}
			}
		}()
	}
	t.Cleanup(func() {
		_ = b.Close()
		close(done)
		wg.Wait()
	})
	return out, actual
}

// waitFor returns the next received datagram whose payload is want, dropping
// stragglers from earlier attempts.
func waitFor(ch <-chan received, want string, timeout time.Duration) (received, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case r := <-ch:
			if string(r.data) == want {
				return r, true
			}
		case <-deadline:
			return received{}, false
		}
	}
}
