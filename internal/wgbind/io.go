package wgbind

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// ipv4.Message and ipv6.Message are both aliases of x/net's socket.Message,
// so one interface (and one message pool) serves both families.
type batchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

var (
	_ batchConn = (*ipv4.PacketConn)(nil)
	_ batchConn = (*ipv6.PacketConn)(nil)
)

// oobSize fits one packet-info control message of either family. Anything
// larger would only be control data we did not ask for.
var oobSize = max(
	len(ipv4.NewControlMessage(ipv4.FlagDst|ipv4.FlagInterface)),
	len(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface)),
	64,
)

// batch is the per-call scratch space for one recvmmsg or sendmmsg. It is
// pooled because wireguard-go calls Send for every batch of every peer.
type batch struct {
	msgs []ipv6.Message
	addr net.UDPAddr
	ip   [16]byte
}

func newBatch() *batch {
	bt := &batch{msgs: make([]ipv6.Message, conn.IdealBatchSize)}
	for i := range bt.msgs {
		bt.msgs[i].Buffers = make(net.Buffers, 1)
		bt.msgs[i].OOB = make([]byte, 0, oobSize)
	}
	return bt
}

func (b *Bind) getBatch() *batch { return b.batches.Get().(*batch) }

// putBatch drops references to caller buffers so the pool does not keep
// wireguard-go's packet memory alive.
func (b *Bind) putBatch(bt *batch) {
	for i := range bt.msgs {
		m := &bt.msgs[i]
		m.Buffers[0] = nil
		m.OOB = m.OOB[:0]
		m.Addr = nil
		m.N, m.NN, m.Flags = 0, 0, 0
	}
	b.batches.Put(bt)
}

// controlScratch lets Parse reuse its Dst slice across a whole batch.
type controlScratch struct {
	v4 ipv4.ControlMessage
	v6 ipv6.ControlMessage
}

// parseSource4 returns the address the datagram was sent to (our address,
// possibly the VIP) and the interface it arrived on. Dst is zeroed first
// because Parse reuses it and leaves it untouched when there is no packet
// info; an unspecified address then means "no source".
func parseSource4(oob []byte, s *controlScratch) (netip.Addr, int) {
	s.v4.Dst = zeroed(s.v4.Dst)
	s.v4.IfIndex = 0
	if s.v4.Parse(oob) != nil {
		return netip.Addr{}, 0
	}
	a, _ := netip.AddrFromSlice(s.v4.Dst)
	return usableSource(a.Unmap(), s.v4.IfIndex)
}

func parseSource6(oob []byte, s *controlScratch) (netip.Addr, int) {
	s.v6.Dst = zeroed(s.v6.Dst)
	s.v6.IfIndex = 0
	if s.v6.Parse(oob) != nil {
		return netip.Addr{}, 0
	}
	a, _ := netip.AddrFromSlice(s.v6.Dst)
	return usableSource(a, s.v6.IfIndex)
}

func usableSource(a netip.Addr, ifindex int) (netip.Addr, int) {
	if !a.IsValid() || a.IsUnspecified() {
		return netip.Addr{}, 0
	}
	return a, ifindex
}

func zeroed(ip net.IP) net.IP {
	clear(ip)
	return ip
}

type sourceParser func(oob []byte, s *controlScratch) (netip.Addr, int)

func (b *Bind) receive(bc batchConn, parse sourceParser, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	bt := b.getBatch()
	defer b.putBatch(bt)

	n := min(len(bufs), len(sizes), len(eps), len(bt.msgs))
	msgs := bt.msgs[:n]
	for i := range msgs {
		msgs[i].Buffers[0] = bufs[i]
		msgs[i].OOB = msgs[i].OOB[:cap(msgs[i].OOB)]
	}
	got, err := bc.ReadBatch(msgs, 0)
	if err != nil {
		return 0, err
	}

	var (
		scratch controlScratch
		last    *Endpoint
	)
	for i := range got {
		m := &msgs[i]
		sizes[i] = m.N
		eps[i] = nil
		ua, ok := m.Addr.(*net.UDPAddr)
		if m.N == 0 || !ok {
			sizes[i] = 0
			continue
		}
		dst := ua.AddrPort()
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		src, ifindex := parse(m.OOB[:m.NN], &scratch)
		// A batch is usually one peer's burst. Sharing the Endpoint saves an
		// allocation per packet; it is safe because the values are equal and
		// nobody else holds it before we return.
		if last != nil && last.dst == dst && last.src == src && last.ifindex == ifindex {
			eps[i] = last
			continue
		}
		last = newEndpoint(dst, src, ifindex)
		eps[i] = last
	}
	return got, nil
}

func (b *Bind) batchConnFor(is6 bool) batchConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Spelled out so a nil *PacketConn never becomes a non-nil interface.
	if is6 {
		if b.pc6 == nil {
			return nil
		}
		return b.pc6
	}
	if b.pc4 == nil {
		return nil
	}
	return b.pc4
}

// Send writes bufs to ep from the address ep's datagram arrived on. If that
// address is gone (the VIP moved to the other gateway) the kernel refuses the
// packet info; the source is then cleared and the rest is sent once more
// without it, so a gateway that lost the VIP still answers from its own
// address. The next datagram from the peer brings a fresh source anyway.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	dst := e.dst
	bc := b.batchConnFor(dst.Addr().Is6())
	if bc == nil {
		return syscall.EAFNOSUPPORT
	}
	if len(bufs) == 0 {
		return nil
	}

	bt := b.getBatch()
	defer b.putBatch(bt)
	bt.setAddr(dst)

	src, ifindex := e.source()
	oob := marshalSource(dst.Addr(), src, ifindex)
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), len(bt.msgs))]
		sent, err := bt.write(bc, chunk, oob)
		if err != nil && oob != nil && sourceGone(err) {
			e.clearSrcIf(src, ifindex)
			oob = nil
			var more int
			more, err = bt.write(bc, chunk[sent:], nil)
			sent += more
		}
		if err != nil {
			return err
		}
		bufs = bufs[len(chunk):]
	}
	return nil
}

func (bt *batch) setAddr(dst netip.AddrPort) {
	a := dst.Addr()
	if a.Is4() {
		ip := a.As4()
		bt.addr.IP = bt.ip[:4]
		copy(bt.addr.IP, ip[:])
	} else {
		ip := a.As16()
		bt.addr.IP = bt.ip[:16]
		copy(bt.addr.IP, ip[:])
	}
	bt.addr.Port = int(dst.Port())
	bt.addr.Zone = a.Zone()
}

// write sends all of bufs, looping because sendmmsg may stop early. It returns
// how many were sent so a retry does not duplicate packets.
func (bt *batch) write(bc batchConn, bufs [][]byte, oob []byte) (int, error) {
	msgs := bt.msgs[:len(bufs)]
	for i := range msgs {
		m := &msgs[i]
		m.Buffers[0] = bufs[i]
		m.Addr = &bt.addr
		m.OOB = append(m.OOB[:0], oob...)
	}
	sent := 0
	for sent < len(msgs) {
		n, err := bc.WriteBatch(msgs[sent:], 0)
		sent += max(n, 0)
		if err != nil {
			return sent, err
		}
		if n <= 0 {
			return sent, io.ErrShortWrite
		}
	}
	return sent, nil
}

// marshalSource builds the IP_PKTINFO / IPV6_PKTINFO control message that
// selects the source address and outgoing interface.
func marshalSource(dst, src netip.Addr, ifindex int) []byte {
	if !src.IsValid() || src.Is4() != dst.Is4() {
		return nil
	}
	if src.Is4() {
		cm := ipv4.ControlMessage{Src: src.AsSlice(), IfIndex: ifindex}
		return cm.Marshal()
	}
	cm := ipv6.ControlMessage{Src: src.AsSlice(), IfIndex: ifindex}
	return cm.Marshal()
}

// sourceGone reports errors the kernel gives when the packet info cannot be
// honoured: the address is no longer local (EINVAL from the route lookup,
// EADDRNOTAVAIL), or the interface vanished or has no route to the peer.
// Clearing the source on a false positive costs little: the next datagram
// from the peer sets it again.
func sourceGone(err error) bool {
	for _, errno := range []error{unix.EINVAL, unix.EADDRNOTAVAIL, unix.ENETUNREACH,
		unix.EHOSTUNREACH, unix.ENODEV, unix.ENXIO} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
