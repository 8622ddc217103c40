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
	current  int // index into Endpoints
	switches int
}

// Open creates the interface, configures it and installs routes for the
// allowed IPs (a default route is split into two /1 routes, with the
// endpoint pinned to the current path so the tunnel does not route itself).
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

func (t *Tunnel) peer(endpoint string) wgengine.PeerConfig {
	return wgengine.PeerConfig{PublicKey: t.cfg.PeerKey, PresharedKey: t.cfg.PresharedKey, AllowedIPs: t.cfg.AllowedIPs,
		Keepalive: t.cfg.Keepalive, Endpoint: endpoint}
}

// setPeer (re)installs the peer towards endpoint i. Removing and adding it
// drops the old session, so the next packet starts a fresh handshake at
// once instead of after WireGuard's rekey timeout.
func (t *Tunnel) setPeer(i int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.eng.Apply(nil, []string{t.cfg.PeerKey}); err != nil {
		return err
	}
	if err := t.eng.Apply([]wgengine.PeerConfig{t.peer(t.cfg.Endpoints[i])}, nil); err != nil {
		return err
	}
	t.current = i
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

// Watch runs the watchdog until ctx ends: when data goes out but nothing
// comes back for StallAfter, it moves to the next endpoint (with a single
// endpoint: re-handshakes with the same one).
func (t *Tunnel) Watch(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastRx, txAtLastRx uint64
	lastRxAt := time.Now()
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
		if st.RxBytes != lastRx {
			lastRx, txAtLastRx, lastRxAt = st.RxBytes, st.TxBytes, now
			continue
		}
		// More than a keepalive or a handshake initiation went out since
		// the last packet came in, and the silence lasts: the path is dead.
		if st.TxBytes-txAtLastRx > 160 && now.Sub(lastRxAt) > t.cfg.StallAfter {
			next := (t.currentIndex() + 1) % len(t.cfg.Endpoints)
			if err := t.setPeer(next); err != nil {
				t.log.Error("tunnel failover failed", "err", err)
				continue
			}
			t.mu.Lock()
			t.switches++
			t.mu.Unlock()
			t.log.Warn("tunnel stalled: switched endpoint", "endpoint", t.cfg.Endpoints[next], "silent_for", now.Sub(lastRxAt).Round(time.Millisecond))
			// Counters restart with the new peer.
			lastRx, txAtLastRx, lastRxAt = 0, 0, now
		}
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
