// Package wgbind is a wireguard-go conn.Bind for Linux that always answers a
// peer from the local address its datagram was sent to.
//
// wireguard-go's StdNetBind is meant to do the same ("sticky sockets"), but
// with UDP GRO enabled it drops the IP_PKTINFO control data while splitting
// coalesced reads, so replies leave from the kernel's preferred source. For a
// gateway behind a floating IP (VIP) that is fatal: WireGuard roaming moves the
// client to the node's own address and a VRRP failover can never reach it.
// This Bind does not use GRO or GSO at all (recvmmsg/sendmmsg batching is
// enough for a gateway) and keeps the packet info of every datagram.
package wgbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// socketBufferSize matches wireguard-go: a small buffer drops bursts on fast
// or long links long before the CPU is the limit.
const socketBufferSize = 7 << 20

// openRetries bounds the search for a port free on both address families when
// the caller lets us pick one.
const openRetries = 100

var _ conn.Bind = (*Bind)(nil)

// Bind is the conn.Bind returned by New. The zero value is not usable.
type Bind struct {
	mu  sync.Mutex // guards the connections; Send takes it only to read them
	v4  *net.UDPConn
	v6  *net.UDPConn
	pc4 *ipv4.PacketConn
	pc6 *ipv6.PacketConn

	batches sync.Pool // *batch, shared by receive and send
}

// New returns a closed Bind; wireguard-go opens it on device.Up.
func New() conn.Bind {
	b := &Bind{}
	b.batches.New = func() any { return newBatch() }
	return b
}

// ParseEndpoint accepts only literal ip:port (what UAPI "endpoint=" carries);
// name resolution is the caller's business.
func (*Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return newEndpoint(ap, netip.Addr{}, 0), nil
}

// BatchSize is wireguard-go's ideal batch; recvmmsg/sendmmsg handle it in one
// system call each.
func (*Bind) BatchSize() int { return conn.IdealBatchSize }

// Open listens on port for IPv4 and IPv6. With port 0 both families must end up
// on the same random port, so a port taken on the other family is retried.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.v4 != nil || b.v6 != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}

	var (
		v4, v6 *net.UDPConn
		actual uint16
		err    error
	)
	for tries := 0; ; tries++ {
		v4, v6, actual, err = listenBoth(port)
		if err == nil {
			break
		}
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < openRetries {
			continue
		}
		return nil, 0, err
	}

	var fns []conn.ReceiveFunc
	if v4 != nil {
		b.v4, b.pc4 = v4, ipv4.NewPacketConn(v4)
		fns = append(fns, b.makeReceiveIPv4(b.pc4))
	}
	if v6 != nil {
		b.v6, b.pc6 = v6, ipv6.NewPacketConn(v6)
		fns = append(fns, b.makeReceiveIPv6(b.pc6))
	}
	return fns, actual, nil
}

// The function names end in IPv4/IPv6 because wireguard-go derives the "v4" /
// "v6" label in its logs from them (conn.ReceiveFunc.PrettyName).
func (b *Bind) makeReceiveIPv4(pc *ipv4.PacketConn) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(pc, parseSource4, bufs, sizes, eps)
	}
}

func (b *Bind) makeReceiveIPv6(pc *ipv6.PacketConn) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(pc, parseSource6, bufs, sizes, eps)
	}
}

// listenBoth opens the IPv4 socket first and puts IPv6 on the same port. A
// kernel without one of the families (EAFNOSUPPORT) still gets a working Bind.
func listenBoth(port uint16) (v4, v6 *net.UDPConn, actual uint16, err error) {
	v4, actual, err = listen("udp4", port)
	if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
		return nil, nil, 0, err
	}
	if v4 != nil {
		port = actual
	}
	v6, actual6, err := listen("udp6", port)
	if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
		if v4 != nil {
			_ = v4.Close()
		}
		return nil, nil, 0, err
	}
	if v4 == nil && v6 == nil {
		return nil, nil, 0, syscall.EAFNOSUPPORT
	}
	if v4 == nil {
		actual = actual6
	}
	return v4, v6, actual, nil
}

func listen(network string, port uint16) (*net.UDPConn, uint16, error) {
	lc := net.ListenConfig{Control: controlSocket}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, 0, err
	}
	uc := pc.(*net.UDPConn)
	ap, err := netip.ParseAddrPort(uc.LocalAddr().String())
	if err != nil {
		_ = uc.Close()
		return nil, 0, fmt.Errorf("wgbind: local address of %s socket: %w", network, err)
	}
	return uc, ap.Port(), nil
}

// controlSocket runs before bind(2). Packet info is essential (without it this
// Bind is no better than the stock one), buffer sizes are best effort: the
// *FORCE variants need CAP_NET_ADMIN and otherwise the kernel clamps to
// net.core.[rw]mem_max.
func controlSocket(network, _ string, rc syscall.RawConn) error {
	var opErr error
	err := rc.Control(func(fd uintptr) {
		s := int(fd)
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufferSize)
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)
		switch network {
		case "udp4":
			opErr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		case "udp6":
			opErr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			if opErr == nil {
				// The IPv4 socket owns the same port number, so this one
				// must not claim v4-mapped addresses as well.
				opErr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
		default:
			opErr = fmt.Errorf("wgbind: unexpected network %q: %w", network, unix.EINVAL)
		}
	})
	if err != nil {
		return err
	}
	if opErr != nil {
		return fmt.Errorf("wgbind: %s packet info: %w", network, opErr)
	}
	return nil
}

// Close makes the ReceiveFuncs return net.ErrClosed (the closed socket's
// error), which is how wireguard-go tells them to stop.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err4, err6 error
	if b.v4 != nil {
		err4 = b.v4.Close()
	}
	if b.v6 != nil {
		err6 = b.v6.Close()
	}
	b.v4, b.v6, b.pc4, b.pc6 = nil, nil, nil, nil
	return errors.Join(err4, err6)
}

// SetMark sets SO_MARK so policy routing can keep tunnel packets out of the
// tunnel.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range []*net.UDPConn{b.v4, b.v6} {
		if c == nil {
			continue
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var opErr error
		if err := rc.Control(func(fd uintptr) {
			opErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if opErr != nil {
			return fmt.Errorf("wgbind: SO_MARK: %w", opErr)
		}
	}
	return nil
}
