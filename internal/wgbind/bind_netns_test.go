package wgbind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// roundTrip sends a datagram from client to `to`, takes it from the Bind,
// answers it with b.Send on the endpoint the Bind produced, and returns that
// endpoint plus the source address the client saw on the answer. Sending is
// retried because a fresh veth (and IPv6 neighbour discovery) may drop the
// first datagrams.
func roundTrip(t *testing.T, b conn.Bind, rx <-chan received, client *net.UDPConn, to netip.AddrPort, tag string) (conn.Endpoint, netip.AddrPort) {
	t.Helper()
	var got received
	ok := false
	for i := 0; i < 20 && !ok; i++ {
		payload := fmt.Sprintf("%s#%d", tag, i)
		if _, err := client.WriteToUDPAddrPort([]byte(payload), to); err != nil {
			t.Fatalf("client send to %v: %v", to, err)
		}
		got, ok = waitFor(rx, payload, 250*time.Millisecond)
		if !ok {
			t.Logf("%s: attempt %d to %v not received", tag, i, to)
		}
	}
	if !ok {
		t.Fatalf("bind never received %q sent to %v", tag, to)
	}
	if err := b.Send([][]byte{[]byte("re:" + tag)}, got.ep); err != nil {
		t.Fatalf("Send to %s: %v", got.ep.DstToString(), err)
	}
	return got.ep, readReply(t, client, "re:"+tag)
}

// readReply skips stale datagrams and returns the source of the one wanted.
func readReply(t *testing.T, client *net.UDPConn, want string) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 2048)
	_ = client.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, from, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("client waiting for %q: %v", want, err)
		}
		if string(buf[:n]) == want {
			return netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		}
	}
}

func TestBindAnswersFromDestinationAddress(t *testing.T) {
	n := newTestNet(t)
	for _, name := range []string{"ipv4", "ipv6"} {
		t.Run(name, func(t *testing.T) {
			f := n.family(t, name)
			b := New()
			rx, port := openBindIn(t, n.gwNS, b, 0)
			vip := netip.AddrPortFrom(f.vip, port)
			primary := netip.AddrPortFrom(f.primary, port)
			client := listenUDPIn(t, n.clNS, f.network, netip.AddrPortFrom(f.client, 0))
			clientAddr := netip.AddrPortFrom(f.client, uint16(client.LocalAddr().(*net.UDPAddr).Port))

			t.Run("vip", func(t *testing.T) {
				ep, from := roundTrip(t, b, rx, client, vip, "vip")
				if from != vip {
					t.Errorf("reply to a datagram sent to %v came from %v", vip, from)
				}
				e := ep.(*Endpoint)
				if e.SrcIP() != f.vip || e.SrcIfIndex() <= 0 {
					t.Errorf("endpoint source = %v if %d, want %v on the veth", e.SrcIP(), e.SrcIfIndex(), f.vip)
				}
				if ep.DstToString() != clientAddr.String() {
					t.Errorf("endpoint destination = %s, want %s", ep.DstToString(), clientAddr)
				}
			})

			t.Run("primary", func(t *testing.T) {
				ep, from := roundTrip(t, b, rx, client, primary, "primary")
				if from != primary {
					t.Errorf("reply to a datagram sent to %v came from %v", primary, from)
				}
				if ep.SrcIP() != f.primary {
					t.Errorf("endpoint source = %v, want %v", ep.SrcIP(), f.primary)
				}
			})

			t.Run("batch", func(t *testing.T) { testBatch(t, b, rx, client, vip) })
			t.Run("concurrent", func(t *testing.T) { testConcurrentSend(t, n, f, b, rx, vip) })

			// Last: it removes the VIP from the gateway.
			t.Run("vip-lost", func(t *testing.T) {
				ep, from := roundTrip(t, b, rx, client, vip, "before-loss")
				if from != vip {
					t.Fatalf("reply came from %v, want %v", from, vip)
				}
				mustIP(t, "-n", n.gwName, "addr", "del", cidr(f.vip, f.bits), "dev", n.gwIf)
				for i := range 2 {
					msg := fmt.Sprintf("after-loss-%d", i)
					if err := b.Send([][]byte{[]byte(msg)}, ep); err != nil {
						t.Fatalf("Send after the VIP left: %v", err)
					}
					if from := readReply(t, client, msg); from != primary {
						t.Errorf("after the VIP left the reply came from %v, want %v", from, primary)
					}
				}
				if ep.SrcIP().IsValid() {
					t.Errorf("endpoint still has source %v after the VIP left", ep.SrcIP())
				}
			})
		})
	}
}

// testBatch checks both directions of batched I/O: 64 datagrams to the VIP all
// carry the VIP as source in their endpoints, and 64 answers written by a
// single Send all leave from the VIP.
func testBatch(t *testing.T, b conn.Bind, rx <-chan received, client *net.UDPConn, vip netip.AddrPort) {
	const count = 64
	// Warm up so neighbour resolution cannot eat part of the burst.
	roundTrip(t, b, rx, client, vip, "warm")
	for i := range count {
		if _, err := client.WriteToUDPAddrPort(fmt.Appendf(nil, "batch-%02d", i), vip); err != nil {
			t.Fatal(err)
		}
	}
	var eps []conn.Endpoint
	deadline := time.After(5 * time.Second)
	for len(eps) < count {
		select {
		case r := <-rx:
			if strings.HasPrefix(string(r.data), "batch-") {
				eps = append(eps, r.ep)
			}
		case <-deadline:
			t.Fatalf("bind received %d of %d datagrams", len(eps), count)
		}
	}
	for i, ep := range eps {
		if ep.SrcIP() != vip.Addr() {
			t.Fatalf("datagram %d: endpoint source %v, want %v", i, ep.SrcIP(), vip.Addr())
		}
	}

	bufs := make([][]byte, count)
	for i := range bufs {
		bufs[i] = fmt.Appendf(nil, "rb-%02d", i)
	}
	if err := b.Send(bufs, eps[0]); err != nil {
		t.Fatalf("batched Send: %v", err)
	}
	seen := map[string]bool{}
	buf := make([]byte, 2048)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(seen) < count {
		n, from, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("got %d of %d batched replies: %v", len(seen), count, err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "rb-") {
			continue
		}
		if got := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); got != vip {
			t.Errorf("batched reply %s came from %v, want %v", msg, got, vip)
		}
		seen[msg] = true
	}
}

// testConcurrentSend mimics wireguard-go: several goroutines send on one
// endpoint while another clears its source. Run under -race.
func testConcurrentSend(t *testing.T, n *testNet, f family, b conn.Bind, rx <-chan received, vip netip.AddrPort) {
	client := listenUDPIn(t, n.clNS, f.network, netip.AddrPortFrom(f.client, 0))
	ep, _ := roundTrip(t, b, rx, client, vip, "conc")

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := b.Send([][]byte{fmt.Appendf(nil, "c%d-%d", g, i)}, ep); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			ep.ClearSrc()
			_ = ep.SrcToString()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Send: %v", err)
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// TestStdNetBindSourceObservation documents why this package exists: the
// stock Bind in the same setup. It reports rather than fails, because the
// result depends on the kernel (UDP GRO) and on wireguard-go's version.
func TestStdNetBindSourceObservation(t *testing.T) {
	n := newTestNet(t)
	for _, name := range []string{"ipv4", "ipv6"} {
		t.Run(name, func(t *testing.T) {
			f := n.family(t, name)
			b := conn.NewStdNetBind()
			rx, port := openBindIn(t, n.gwNS, b, 0)
			vip := netip.AddrPortFrom(f.vip, port)
			client := listenUDPIn(t, n.clNS, f.network, netip.AddrPortFrom(f.client, 0))
			ep, from := roundTrip(t, b, rx, client, vip, "std")
			switch from.Addr() {
			case f.vip:
				t.Logf("kernel %s: stock StdNetBind answered from the VIP %v (endpoint src %q); the GRO sticky-source bug did not show",
					kernelRelease(), from, ep.SrcToString())
			case f.primary:
				t.Logf("kernel %s: stock StdNetBind answered a datagram sent to %v from %v (endpoint src %q): sticky source lost, bug reproduced",
					kernelRelease(), vip, from, ep.SrcToString())
			default:
				t.Errorf("stock StdNetBind answered from unexpected %v", from)
			}
		})
	}
}

func TestOpenCloseContract(t *testing.T) {
	n := newTestNet(t)
	b := New()
	opener := &nsBind{Bind: b, ns: n.gwNS}
	fns, port, err := opener.Open(0)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if port == 0 || len(fns) == 0 {
		t.Fatalf("Open(0) = %d funcs on port %d", len(fns), port)
	}
	for _, fn := range fns {
		if pn := fn.PrettyName(); pn != "v4" && pn != "v6" {
			t.Errorf("receive func name %q; wireguard-go's logs expect v4/v6", pn)
		}
	}
	if _, _, err := opener.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Errorf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
	if err := b.SetMark(0x51820); err != nil {
		t.Errorf("SetMark: %v", err)
	}

	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			bufs, sizes, eps := [][]byte{make([]byte, 1500)}, make([]int, 1), make([]conn.Endpoint, 1)
			_, err := fn(bufs, sizes, eps)
			errc <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let the readers block in recvmmsg
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range fns {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("receive after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a ReceiveFunc did not return after Close")
		}
	}
	if err := b.Send([][]byte{[]byte("x")}, newEndpoint(netip.MustParseAddrPort("10.0.0.1:1"), netip.Addr{}, 0)); err == nil {
		t.Error("Send on a closed Bind succeeded")
	}

	// The same fixed port must be reusable by both families right after Close.
	fns, got, err := opener.Open(port)
	if err != nil || got != port || len(fns) == 0 {
		t.Fatalf("reopen on %d: port %d, %d funcs, err %v", port, got, len(fns), err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
