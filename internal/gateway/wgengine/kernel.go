package wgengine

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Kernel drives the in-kernel WireGuard module through netlink and wgctrl.
type Kernel struct {
	mu   sync.Mutex
	name string
	wg   *wgctrl.Client
	link *linkConfig
	cur  Interface
	// standby: SetActive(false) set the link down; Configure leaves it so.
	standby bool
}

// ErrNoKernelModule means the kernel cannot create WireGuard links.
var ErrNoKernelModule = errors.New("kernel WireGuard is not available")

// NewKernel creates (or adopts an existing) kernel WireGuard link.
func NewKernel(name string) (*Kernel, error) {
	if _, err := netlink.LinkByName(name); err != nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.GenericLink{LinkAttrs: la, LinkType: "wireguard"}); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoKernelModule, err)
		}
	}
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	return &Kernel{name: name, wg: c, link: &linkConfig{name: name}}, nil
}

func (k *Kernel) Kind() string { return "kernel" }

func (k *Kernel) Configure(in Interface) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := wgtypes.ParseKey(in.PrivateKey)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	port, mark := in.ListenPort, in.FwMark
	if err := k.wg.ConfigureDevice(k.name, wgtypes.Config{PrivateKey: &key, ListenPort: &port, FirewallMark: &mark}); err != nil {
		return fmt.Errorf("configure %s: %w", k.name, err)
	}
	if err := k.link.apply(in.MTU, in.Addresses, !k.standby); err != nil {
		return err
	}
	k.cur = in
	return nil
}

func (k *Kernel) Apply(set []PeerConfig, remove []string) error {
	var peers []wgtypes.PeerConfig
	for _, r := range remove {
		pk, err := wgtypes.ParseKey(r)
		if err != nil {
			return err
		}
		peers = append(peers, wgtypes.PeerConfig{PublicKey: pk, Remove: true})
	}
	for _, p := range set {
		pk, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return err
		}
		pc := wgtypes.PeerConfig{PublicKey: pk, ReplaceAllowedIPs: true}
		psk := wgtypes.Key{}
		if p.PresharedKey != "" {
			if psk, err = wgtypes.ParseKey(p.PresharedKey); err != nil {
				return err
			}
		}
		pc.PresharedKey = &psk
		if p.Endpoint != "" {
			addr, err := net.ResolveUDPAddr("udp", p.Endpoint)
			if err != nil {
				return fmt.Errorf("peer endpoint %q: %w", p.Endpoint, err)
			}
			pc.Endpoint = addr
		}
		for _, ip := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(ip.Bits(), ip.Addr().BitLen())})
		}
		peers = append(peers, pc)
	}
	if len(peers) == 0 {
		return nil
	}
	return k.wg.ConfigureDevice(k.name, wgtypes.Config{Peers: peers})
}

func (k *Kernel) Peers() ([]PeerState, error) {
	d, err := k.wg.Device(k.name)
	if err != nil {
		return nil, err
	}
	out := make([]PeerState, 0, len(d.Peers))
	for _, p := range d.Peers {
		ps := PeerState{PeerConfig: PeerConfig{PublicKey: p.PublicKey.String(), Keepalive: int(p.PersistentKeepaliveInterval.Seconds())},
			LastHandshake: p.LastHandshakeTime, RxBytes: uint64(p.ReceiveBytes), TxBytes: uint64(p.TransmitBytes)}
		if p.PresharedKey != (wgtypes.Key{}) {
			ps.PresharedKey = p.PresharedKey.String()
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, n := range p.AllowedIPs {
			if pfx, ok := prefixOf(n); ok {
				ps.AllowedIPs = append(ps.AllowedIPs, pfx)
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

// Up: a standby link is down on purpose; it counts as up when it exists.
func (k *Kernel) Up() bool {
	k.mu.Lock()
	standby := k.standby
	k.mu.Unlock()
	if standby {
		return k.link.exists()
	}
	return k.link.isUp()
}

// SetActive sets the link down (standby) or up. A kernel WireGuard link
// that goes down stops its peers, clears their keys and handshakes and
// closes its socket, so it sends nothing; up reopens the socket.
//
// NOT TESTED: this machine has no kernel WireGuard module; the behaviour
// is the kernel's documented one (drivers/net/wireguard/device.c wg_stop).
func (k *Kernel) SetActive(active bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.standby = !active
	return k.link.setUp(active)
}

// Initiate sets the endpoints, then makes the kernel send a keepalive to
// each peer, which (without a session) starts a handshake: the kernel sends
// one keepalive when a peer's persistent keepalive goes from 0 to non-zero
// on a running interface. So: endpoint and keepalive 0, then 1, then the
// configured value back. There is no netlink call that starts a handshake
// directly.
//
// NOT TESTED: this machine has no kernel WireGuard module.
func (k *Kernel) Initiate(endpoints map[string]string) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.standby {
		return 0, ErrStandby
	}
	keys, eps := validEndpoints(endpoints)
	if len(keys) == 0 {
		return 0, nil
	}
	d, err := k.wg.Device(k.name)
	if err != nil {
		return 0, err
	}
	configured := make(map[wgtypes.Key]time.Duration, len(d.Peers))
	for _, p := range d.Peers {
		configured[p.PublicKey] = p.PersistentKeepaliveInterval
	}
	zero, one := time.Duration(0), time.Second
	var setEndpoint, kick, restore []wgtypes.PeerConfig
	for _, key := range keys {
		pk, err := wgtypes.ParseKey(key)
		if err != nil {
			continue
		}
		interval, ok := configured[pk]
		if !ok {
			continue
		}
		setEndpoint = append(setEndpoint, wgtypes.PeerConfig{PublicKey: pk, UpdateOnly: true, Endpoint: net.UDPAddrFromAddrPort(eps[key]),
			PersistentKeepaliveInterval: &zero})
		kick = append(kick, wgtypes.PeerConfig{PublicKey: pk, UpdateOnly: true, PersistentKeepaliveInterval: &one})
		restore = append(restore, wgtypes.PeerConfig{PublicKey: pk, UpdateOnly: true, PersistentKeepaliveInterval: &interval})
	}
	for _, batch := range [][]wgtypes.PeerConfig{setEndpoint, kick, restore} {
		if len(batch) == 0 {
			break
		}
		if err := k.wg.ConfigureDevice(k.name, wgtypes.Config{Peers: batch}); err != nil {
			return 0, fmt.Errorf("initiate handshakes: %w", err)
		}
	}
	return len(kick), nil
}

func (k *Kernel) Close() error {
	k.wg.Close()
	link, err := netlink.LinkByName(k.name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(link)
}
