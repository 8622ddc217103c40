// Package client is `ward client`: the end-user side. This file is the data
// plane: a userspace WireGuard tunnel with addresses and routes, and a
// watchdog that moves to the next endpoint (or re-handshakes) by itself
// when the tunnel stalls, instead of waiting WireGuard's 15 s or more.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
)

// TunnelConfig describes one location's tunnel on this device.
type TunnelConfig struct {
	Interface    string
	PrivateKey   string
	Addresses    []netip.Prefix // the device's addresses (/32, /128)
	MTU          int
	PeerKey      string // the location's public key
	PresharedKey string // the MFA session's key, if any
	AllowedIPs   []netip.Prefix
	Keepalive    int
	// Endpoints in order of preference; the watchdog rotates through them.
	Endpoints []string
	// StallAfter: data sent but nothing received for this long means the
	// path is dead (default 1.5 s).
	StallAfter time.Duration
}

// Tunnel is an open tunnel.
type Tunnel struct {
	cfg    TunnelConfig
	eng    *wgengine.Userspace
	log    *slog.Logger
	routes []*netlink.Route

	mu       sync.Mutex
	current  int       // index into Endpoints
	setAt    time.Time // when the peer was (re)installed
	switches int
}

// Open creates the interface, configures it and installs routes for the
// allowed IPs (a default route is split into two /1 routes, with the
// endpoint pinned to the current path so the tunnel does not route itself).
// It starts the handshake with the first endpoint at once.
func Open(cfg TunnelConfig, log *slog.Logger) (*Tunnel, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("location has no endpoint")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1420
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = 1500 * time.Millisecond
	}
	eng, err := wgengine.NewUserspace(cfg.Interface, cfg.MTU, false, log)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{cfg: cfg, eng: eng, log: log}
	if err := eng.Configure(wgengine.Interface{Name: cfg.Interface, PrivateKey: cfg.PrivateKey, MTU: cfg.MTU, Addresses: cfg.Addresses}); err != nil {
		eng.Close()
		return nil, err
	}
	if err := t.setPeer(0); err != nil {
		eng.Close()
		return nil, err
	}
	if err := t.addRoutes(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *Tunnel) peer(endpoint string, keepalive int) wgengine.PeerConfig {
	return wgengine.PeerConfig{PublicKey: t.cfg.PeerKey, PresharedKey: t.cfg.PresharedKey, AllowedIPs: t.cfg.AllowedIPs,
		Keepalive: keepalive, Endpoint: endpoint}
}

// setPeer (re)installs the peer towards endpoint i. Removing and adding it
// drops the old session; the handshake with the new endpoint starts at once
// (a peer added with a persistent keepalive sends one immediately; without
// one, the keepalive is switched on and off again to the same effect), so
// a dead endpoint shows within StallAfter and a live one is ready before
// the next packet.
func (t *Tunnel) setPeer(i int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.eng.Apply(nil, []string{t.cfg.PeerKey}); err != nil {
		return err
	}
	ep := t.cfg.Endpoints[i]
	if err := t.eng.Apply([]wgengine.PeerConfig{t.peer(ep, max(t.cfg.Keepalive, 1))}, nil); err != nil {
		return err
	}
	if t.cfg.Keepalive == 0 {
		if err := t.eng.Apply([]wgengine.PeerConfig{t.peer(ep, 0)}, nil); err != nil {
			return err
		}
	}
	t.current, t.setAt = i, time.Now()
	return nil
}

// Endpoint is the endpoint in use.
func (t *Tunnel) Endpoint() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg.Endpoints[t.current]
}

// Switches counts how often the watchdog moved the tunnel.
func (t *Tunnel) Switches() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.switches
}

// Stats reads the peer's counters.
func (t *Tunnel) Stats() (wgengine.PeerState, error) {
	peers, err := t.eng.Peers()
	if err != nil {
		return wgengine.PeerState{}, err
	}
	for _, p := range peers {
		if p.PublicKey == t.cfg.PeerKey {
			return p, nil
		}
	}
	return wgengine.PeerState{}, errors.New("peer missing from the device")
}

// noAnswerWait is how long a handshake may stay unanswered before the
// watchdog moves on: StallAfter for the first round over the endpoints,
// then doubling per round (up to 16x) so a tunnel whose gateways are all
// away does not keep knocking several times a second.
func (t *Tunnel) noAnswerWait(misses int) time.Duration {
	rounds := misses / len(t.cfg.Endpoints)
	return t.cfg.StallAfter << min(rounds, 4)
}

// Watch runs the watchdog until ctx ends. It moves to the next endpoint
// (with a single endpoint: re-handshakes with the same one) when
//   - the handshake with the current endpoint stays unanswered for
//     StallAfter (a dead gateway, or one that does not know this peer), or
//   - after a handshake, data goes out but nothing comes back for
//     StallAfter. Unanswered keepalives alone never count: a pause in
//     sending longer than StallAfter starts the count again.
func (t *Tunnel) Watch(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var (
		lastRx, lastTx         uint64
		burstBase              uint64    // tx when the current unanswered burst began
		burstStart, lastTxMove time.Time // zero burstStart: nothing unanswered
		misses                 int       // switches in a row without a handshake
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := t.Stats()
		if err != nil {
			t.log.Warn("tunnel watchdog cannot read the device", "err", err)
			continue
		}
		now := time.Now()
		t.mu.Lock()
		setAt := t.setAt
		t.mu.Unlock()
		// The peer is new after every switch, so any handshake it reports
		// was made with the current endpoint.
		handshook := !st.LastHandshake.IsZero()
		if handshook {
			misses = 0
		}
		if st.RxBytes != lastRx {
			lastRx, lastTx, lastTxMove, burstStart = st.RxBytes, st.TxBytes, now, time.Time{}
			continue
		}
		if st.TxBytes != lastTx {
			if burstStart.IsZero() || now.Sub(lastTxMove) > t.cfg.StallAfter {
				burstStart, burstBase = now, lastTx
			}
			lastTx, lastTxMove = st.TxBytes, now
		}
		var why string
		switch {
		case !handshook && now.Sub(setAt) > t.noAnswerWait(misses):
			why = "handshake unanswered"
		case handshook && !burstStart.IsZero() && st.TxBytes-burstBase > 160 && now.Sub(burstStart) > t.cfg.StallAfter:
			why = "no answer to traffic"
		default:
			continue
		}
		next := (t.currentIndex() + 1) % len(t.cfg.Endpoints)
		if err := t.setPeer(next); err != nil {
			t.log.Error("tunnel failover failed", "err", err)
			continue
		}
		if !handshook {
			misses++
		}
		t.mu.Lock()
		t.switches++
		t.mu.Unlock()
		silent := now.Sub(setAt)
		if handshook {
			silent = now.Sub(burstStart)
		}
		t.log.Warn("tunnel stalled: switched endpoint", "reason", why, "endpoint", t.cfg.Endpoints[next], "silent_for", silent.Round(time.Millisecond))
		// Counters restart with the new peer.
		lastRx, lastTx, burstStart, lastTxMove = 0, 0, time.Time{}, now
	}
}

func (t *Tunnel) currentIndex() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

func (t *Tunnel) addRoutes() error {
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return err
	}
	var dsts []netip.Prefix
	for _, p := range t.cfg.AllowedIPs {
		if p.Bits() == 0 {
			// A default route would also capture the tunnel's own packets:
			// pin every endpoint to today's path first, then split.
			if err := t.pinEndpoints(p.Addr().Is4()); err != nil {
				return err
			}
			if p.Addr().Is4() {
				dsts = append(dsts, netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1"))
			} else {
				dsts = append(dsts, netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1"))
			}
			continue
		}
		dsts = append(dsts, p)
	}
	for _, d := range dsts {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipnet(d)}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", d, t.cfg.Interface, err)
		}
		t.routes = append(t.routes, r)
	}
	return nil
}

func (t *Tunnel) pinEndpoints(v4 bool) error {
	for _, ep := range t.cfg.Endpoints {
		host, _, err := net.SplitHostPort(ep)
		if err != nil {
			return err
		}
		ips, err := net.LookupIP(host)
		if err != nil {
			return fmt.Errorf("resolve endpoint %s: %w", host, err)
		}
		for _, ip := range ips {
			if (ip.To4() != nil) != v4 {
				continue
			}
			via, err := netlink.RouteGet(ip)
			if err != nil || len(via) == 0 {
				return fmt.Errorf("no route to endpoint %s: %v", ip, err)
			}
			bits := 32
			if !v4 {
				bits = 128
			}
			r := &netlink.Route{Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, Gw: via[0].Gw, LinkIndex: via[0].LinkIndex}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("pin endpoint %s: %w", ip, err)
			}
			t.routes = append(t.routes, r)
		}
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Close removes the routes and the interface.
func (t *Tunnel) Close() error {
	for _, r := range t.routes {
		_ = netlink.RouteDel(r)
	}
	return t.eng.Close()
}
