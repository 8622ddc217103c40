package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// floatingWatch tells whether one of the floating IPs is configured on a
// local interface, which is how keepalived (or any VRRP daemon, or an
// operator) marks the active gateway.
type floatingWatch struct {
	ips   []netip.Addr
	ns    *netns.NsHandle // nil: the process's own namespace (tests pass one)
	every time.Duration   // re-list interval: a safety net for lost events
	log   *slog.Logger
}

func (w *floatingWatch) handle() (*netlink.Handle, error) {
	if w.ns != nil {
		return netlink.NewHandleAt(*w.ns)
	}
	return netlink.NewHandle()
}

// check lists the addresses of every interface. where says on which
// interface the floating IP is (or which ones were looked for).
func (w *floatingWatch) check(h *netlink.Handle) (present bool, where string, err error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, "", fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !slices.Contains(w.ips, ip.Unmap()) {
			continue
		}
		name := fmt.Sprintf("ifindex %d", a.LinkIndex)
		if l, err := h.LinkByIndex(a.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		return true, ip.Unmap().String() + " on " + name, nil
	}
	names := make([]string, len(w.ips))
	for i, ip := range w.ips {
		names[i] = ip.String()
	}
	return false, strings.Join(names, ", ") + " on no interface", nil
}

// concerns tells whether an address update is about a floating IP.
func (w *floatingWatch) concerns(u netlink.AddrUpdate) bool {
	ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	return ok && slices.Contains(w.ips, ip.Unmap())
}

// run reports the presence at start, on every address change of a floating
// IP (netlink subscription) and every interval, until ctx ends. A failed
// subscription is retried every second; the periodic re-list keeps working
// meanwhile.
func (w *floatingWatch) run(ctx context.Context, report func(present bool, where string)) {
	h, err := w.handle()
	if err != nil {
		w.log.Error("floating IP watch: no netlink handle; the gateway stays in its current role", "err", err)
		return
	}
	defer h.Close()
	lastErr := ""
	relist := func() {
		present, where, err := w.check(h)
		if err != nil {
			// Keep the role: a transient netlink error is no evidence
			// that the address moved.
			if err.Error() != lastErr {
				w.log.Warn("floating IP watch: cannot list addresses", "err", err)
				lastErr = err.Error()
			}
			return
		}
		lastErr = ""
		report(present, where)
	}
	relist()
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var updates chan netlink.AddrUpdate
	var done chan struct{}
	resubscribe := time.NewTimer(0)
	defer resubscribe.Stop()
	stop := func() {
		if done == nil {
			return
		}
		close(done)
		// Drain so the library's reader is never stuck on a send.
		drain := time.NewTimer(time.Second)
		defer drain.Stop()
	loop:
		for {
			select {
			case _, ok := <-updates:
				if !ok {
					break loop
				}
			case <-drain.C:
				break loop
			}
		}
		updates, done = nil, nil
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resubscribe.C:
			ch, dn := make(chan netlink.AddrUpdate, 64), make(chan struct{})
			err := netlink.AddrSubscribeWithOptions(ch, dn, netlink.AddrSubscribeOptions{Namespace: w.ns,
				ErrorCallback: func(err error) { w.log.Warn("floating IP watch: netlink subscription failed", "err", err) }})
			if err != nil {
				w.log.Warn("floating IP watch: cannot subscribe to address changes; re-listing every interval", "err", err, "interval", w.every)
				resubscribe.Reset(time.Second)
				continue
			}
			updates, done = ch, dn
			relist() // a change between the first list and the subscription
		case u, ok := <-updates:
			if !ok {
				updates, done = nil, nil
				resubscribe.Reset(time.Second)
				continue
			}
			hit := w.concerns(u)
			for more := true; more; { // coalesce a burst into one re-list
				select {
				case u2, ok2 := <-updates:
					if !ok2 {
						more = false
						break
					}
					hit = hit || w.concerns(u2)
				default:
					more = false
				}
			}
			if hit {
				relist()
			}
		case <-tick.C:
			relist()
		}
	}
}

func (g *Gateway) newFloatingWatch() *floatingWatch {
	return &floatingWatch{ips: g.cfg.FloatingIPs, every: time.Second, log: g.log}
}

// checkFloatingIP takes the role from one address listing (at start).
func (g *Gateway) checkFloatingIP() {
	if len(g.cfg.FloatingIPs) == 0 {
		return
	}
	w := g.newFloatingWatch()
	h, err := w.handle()
	if err != nil {
		g.log.Warn("floating IP watch: no netlink handle; standby until the address can be read", "err", err)
		return
	}
	defer h.Close()
	present, where, err := w.check(h)
	if err != nil {
		g.log.Warn("floating IP watch: standby until the address can be read", "err", err)
		return
	}
	g.roleUpdated(g.roles.observe(present, where))
}

// watchFloatingIP follows the floating IP until ctx ends.
func (g *Gateway) watchFloatingIP(ctx context.Context) {
	g.newFloatingWatch().run(ctx, func(present bool, where string) { g.roleUpdated(g.roles.observe(present, where)) })
}
