package wgbind

import (
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

var _ conn.Endpoint = (*Endpoint)(nil)

// Endpoint is a peer's address plus the local address and interface its
// datagram arrived on. Replies are sent from that local address, which is what
// keeps a client that talks to a floating IP (VIP) talking to the VIP instead
// of roaming to whichever address the kernel would pick as source.
//
// wireguard-go keeps one Endpoint per peer and calls ClearSrc and Bind.Send on
// it from different goroutines, so the mutable source is behind a mutex. The
// destination never changes after construction.
type Endpoint struct {
	dst netip.AddrPort

	mu      sync.Mutex
	src     netip.Addr // invalid when there is no sticky source
	ifindex int
}

// newEndpoint unmaps the destination because a v4-mapped v6 address would be
// routed to the IPV6_V6ONLY socket, where it cannot be sent.
func newEndpoint(dst netip.AddrPort, src netip.Addr, ifindex int) *Endpoint {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	e := &Endpoint{dst: dst}
	if src.IsValid() && !src.IsUnspecified() {
		e.src = src.Unmap()
		e.ifindex = ifindex
	}
	return e
}

// ClearSrc forgets the sticky source; the next Send lets the kernel choose.
func (e *Endpoint) ClearSrc() {
	e.mu.Lock()
	e.src = netip.Addr{}
	e.ifindex = 0
	e.mu.Unlock()
}

// source returns the sticky source and interface index as one consistent pair.
func (e *Endpoint) source() (netip.Addr, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.src, e.ifindex
}

// clearSrcIf clears the source only if it is still the one a failed send used,
// so a concurrent sender that already moved on is not disturbed.
func (e *Endpoint) clearSrcIf(src netip.Addr, ifindex int) {
	e.mu.Lock()
	if e.src == src && e.ifindex == ifindex {
		e.src = netip.Addr{}
		e.ifindex = 0
	}
	e.mu.Unlock()
}

// SrcIP is the local address replies are sent from, or the zero Addr.
func (e *Endpoint) SrcIP() netip.Addr {
	src, _ := e.source()
	return src
}

// SrcIfIndex is the interface the datagram arrived on, or 0.
func (e *Endpoint) SrcIfIndex() int {
	_, idx := e.source()
	return idx
}

// SrcToString returns "" rather than "invalid IP" when there is no source,
// because callers print it for humans.
func (e *Endpoint) SrcToString() string {
	src := e.SrcIP()
	if !src.IsValid() {
		return ""
	}
	return src.String()
}

// DstIP is the peer's address.
func (e *Endpoint) DstIP() netip.Addr { return e.dst.Addr() }

// DstToString is the peer's address as ip:port (UAPI "endpoint=" form).
func (e *Endpoint) DstToString() string { return e.dst.String() }

// DstToBytes feeds wireguard-go's cookie (mac2) calculation, so it only has to
// be stable and unique per address and port.
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.dst.MarshalBinary()
	return b
}
