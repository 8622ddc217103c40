package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

type presence struct {
	present bool
	where   string
	at      time.Time
}

// TestFloatingWatchNetlink follows a floating IP on the loopback interface of a
// network namespace of its own, through real netlink events: the re-list
// interval is an hour, so every report after the first comes from the
// subscription. Needs root (ip netns).
func TestFloatingWatchNetlink(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	name := fmt.Sprintf("wardfw%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The floating IP goes on the namespace's loopback, as in the
	// harness's failover recipe (no dummy module on this kernel).
	link, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	addr := func(s string) *netlink.Addr {
		p := netip.MustParsePrefix(s)
		return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	}

	w := &floatingWatch{ips: []netip.Addr{netip.MustParseAddr("10.99.0.100"), netip.MustParseAddr("fd99::100")}, ns: &ns, every: time.Hour,
		log: slog.New(slog.DiscardHandler)}
	reports := make(chan presence, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, func(p bool, where string) { reports <- presence{p, where, time.Now()} })
	}()
	defer func() { cancel(); <-done }()
	next := func(what string) presence {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: no report", what)
		}
		return presence{}
	}
	// The start and the subscription's catch-up list both report absence.
	if r := next("start"); r.present || !strings.Contains(r.where, "on no interface") {
		t.Fatalf("start: %+v", r)
	}
	if r := next("subscribed"); r.present {
		t.Fatalf("after subscribing: %+v", r)
	}

	start := time.Now()
	if err := h.AddrAdd(link, addr("10.99.0.100/32")); err != nil {
		t.Fatal(err)
	}
	r := next("address added")
	if !r.present || r.where != "10.99.0.100 on lo" {
		t.Fatalf("after add: %+v", r)
	}
	t.Logf("floating IP added -> reported present in %s (netlink event)", r.at.Sub(start).Round(10*time.Microsecond))

	// Other addresses do not trigger anything.
	if err := h.AddrAdd(link, addr("10.99.0.5/24")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reports:
		t.Fatalf("report for an unrelated address: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}

	start = time.Now()
	if err := h.AddrDel(link, addr("10.99.0.100/32")); err != nil {
		t.Fatal(err)
	}
	if r := next("address removed"); r.present {
		t.Fatalf("after delete: %+v", r)
	} else {
		t.Logf("floating IP removed -> reported absent in %s", r.at.Sub(start).Round(10*time.Microsecond))
	}
	// IPv6 works the same way (nodad: no tentative state to wait for).
	v6 := addr("fd99::100/128")
	v6.Flags = 0x02 // IFA_F_NODAD
	if err := h.AddrAdd(link, v6); err != nil {
		t.Fatal(err)
	}
	if r := next("v6 added"); !r.present || r.where != "fd99::100 on lo" {
		t.Fatalf("after v6 add: %+v", r)
	}
}
