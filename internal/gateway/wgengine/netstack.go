package wgengine

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// NetstackOptions configure a Netstack engine.
type NetstackOptions struct {
	// ListenAddr, when valid, is the one address the device's UDP socket
	// binds to (e.g. 127.0.0.1:0 for a random loopback port), in place of
	// every address on Interface.ListenPort. Its port, when not 0, wins
	// over Interface.ListenPort; a random port is kept across rebinds.
	ListenAddr netip.AddrPort
	// MTU is used when Interface.MTU is 0 (default 1420).
	MTU int
	Log *slog.Logger
}

// Netstack is wireguard-go on gVisor's userspace TCP/IP stack
// (golang.zx2c4.com/wireguard/tun/netstack): no TUN device, no routes, no
// privileges. The interface exists only inside the process: Net() dials and
// listens on its addresses. It is for embedders (`ward demo`, tests).
//
// The stack is created by the first Configure, with that configuration's
// addresses and MTU; later configurations may change key, port and fwmark
// but not addresses or MTU.
type Netstack struct {
	opts NetstackOptions
	log  *slog.Logger

	mu      sync.Mutex
	dev     *device.Device
	tnet    *netstack.Net
	bind    *addrBind
	cur     Interface
	closed  bool
	standby bool // SetActive(false): the device is kept down
	gate    *standbyGate
}

// NewNetstack returns an engine whose stack is created on Configure.
func NewNetstack(opts NetstackOptions) *Netstack {
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Netstack{opts: opts, log: log}
}

func (n *Netstack) Kind() string { return "netstack" }

func (n *Netstack) Configure(in Interface) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("netstack: engine closed")
	}
	addrs := make([]netip.Addr, len(in.Addresses))
	for i, p := range in.Addresses {
		addrs[i] = p.Addr()
	}
	mtu := in.MTU
	if mtu == 0 {
		mtu = n.opts.MTU
	}
	if n.dev == nil {
		t, tnet, err := netstack.CreateNetTUN(addrs, nil, mtu)
		if err != nil {
			return fmt.Errorf("netstack: create stack: %w", err)
		}
		var b conn.Bind = conn.NewDefaultBind()
		if n.opts.ListenAddr.IsValid() {
			n.bind = &addrBind{addr: n.opts.ListenAddr}
			b = n.bind
		}
		n.gate = newStandbyGate(t, n.standby, nil) // created in its role: no window
		dev := device.NewDevice(n.gate, b, newDeviceLogger(n.log))
		if err := ipcConfigure(dev, Interface{}, in, n.bind == nil); err != nil {
			dev.Close()
			return err
		}
		if !n.standby {
			if err := dev.Up(); err != nil {
				dev.Close()
				return fmt.Errorf("netstack: device up: %w", err)
			}
		}
		n.dev, n.tnet, n.cur = dev, tnet, in
		return nil
	}
	have := make([]netip.Addr, len(n.cur.Addresses))
	for i, p := range n.cur.Addresses {
		have[i] = p.Addr()
	}
	if !slices.Equal(have, addrs) {
		return fmt.Errorf("netstack: the interface addresses cannot change (have %v, want %v)", have, addrs)
	}
	if mtu != n.mtuLocked() {
		return fmt.Errorf("netstack: the MTU cannot change (have %d, want %d)", n.mtuLocked(), mtu)
	}
	if err := ipcConfigure(n.dev, n.cur, in, n.bind == nil); err != nil {
		return err
	}
	n.cur = in
	return nil
}

func (n *Netstack) mtuLocked() int {
	if n.cur.MTU != 0 {
		return n.cur.MTU
	}
	return n.opts.MTU
}

func (n *Netstack) device() (*device.Device, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev == nil || n.closed {
		return nil, errors.New("netstack: not configured")
	}
	return n.dev, nil
}

func (n *Netstack) Apply(set []PeerConfig, remove []string) error {
	dev, err := n.device()
	if err != nil {
		return err
	}
	return ipcApply(dev, set, remove)
}

func (n *Netstack) Peers() ([]PeerState, error) {
	dev, err := n.device()
	if err != nil {
		return nil, err
	}
	return ipcPeers(dev)
}

// SetActive takes the device down (standby: sessions dropped, socket
// closed, nothing sent) or up, as Userspace does.
func (n *Netstack) SetActive(active bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("netstack: engine closed")
	}
	n.standby = !active
	if n.gate != nil {
		n.gate.standby.Store(!active)
	}
	if n.dev == nil {
		return nil
	}
	return setDeviceActive(n.dev, active)
}

func (n *Netstack) Initiate(endpoints map[string]string) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev == nil || n.closed {
		return 0, errors.New("netstack: not configured")
	}
	if n.standby {
		return 0, ErrStandby
	}
	return ipcInitiate(n.dev, endpoints)
}

func (n *Netstack) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dev != nil && !n.closed
}

// Net is the interface's network: dial and listen on its addresses. It is
// nil until the first Configure.
func (n *Netstack) Net() *netstack.Net {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tnet
}

// ListenAddr is where the device's UDP socket is bound, when the engine was
// given NetstackOptions.ListenAddr and is up; otherwise it is invalid.
func (n *Netstack) ListenAddr() netip.AddrPort {
	n.mu.Lock()
	b := n.bind
	n.mu.Unlock()
	if b == nil {
		return netip.AddrPort{}
	}
	return b.boundAddr()
}

func (n *Netstack) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.dev != nil {
		n.dev.Close() // closes the stack and the socket
	}
	return nil
}

// addrBind is a conn.Bind with one UDP socket bound to a given address,
// where wireguard-go's default bind takes every address of the host.
type addrBind struct {
	mu   sync.Mutex
	addr netip.AddrPort
	conn *net.UDPConn
}

var _ conn.Bind = (*addrBind)(nil)

func (b *addrBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(b.addr))
	if err != nil {
		return nil, 0, err
	}
	b.conn = c
	// A random port stays the same when the device rebinds.
	b.addr = c.LocalAddr().(*net.UDPAddr).AddrPort()
	b.addr = netip.AddrPortFrom(b.addr.Addr().Unmap(), b.addr.Port())
	receive := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, from, err := c.ReadFromUDPAddrPort(bufs[0])
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		eps[0] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		return 1, nil
	}
	return []conn.ReceiveFunc{receive}, b.addr.Port(), nil
}

func (b *addrBind) boundAddr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return netip.AddrPort{}
	}
	return b.addr
}

func (b *addrBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil
	}
	err := b.conn.Close()
	b.conn = nil
	return err
}

func (b *addrBind) SetMark(uint32) error { return nil }

func (b *addrBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	for _, buf := range bufs {
		if _, err := c.WriteToUDPAddrPort(buf, se.AddrPort); err != nil {
			return err
		}
	}
	return nil
}

func (b *addrBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func (b *addrBind) BatchSize() int { return 1 }
