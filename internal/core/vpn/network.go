package vpn

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"github.com/wardvpn/ward/internal/core"
)

// ifaceNet is a location's interface address with its network, e.g.
// 10.10.0.1/24: address 10.10.0.1 inside 10.10.0.0/24.
type ifaceNet struct {
	Addr   netip.Addr
	Prefix netip.Prefix // masked
}

func (n ifaceNet) String() string { return netip.PrefixFrom(n.Addr, n.Prefix.Bits()).String() }

func (n ifaceNet) family() int {
	if n.Addr.Is4() {
		return 4
	}
	return 6
}

// parseIfaceNet accepts a network ("10.10.0.0/24": the interface takes the
// first host) or an interface address with prefix ("10.10.0.1/24").
func parseIfaceNet(field, s string) (ifaceNet, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return ifaceNet{}, core.Invalid("invalid_cidr", field, "%q is not a CIDR such as 10.10.0.0/24 or fd00:10::/64", s)
	}
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8; a prefix shorter than the
		// mapping itself is no IPv4 network.
		addr, bits = addr.Unmap(), bits-96
		if bits < 0 {
			return ifaceNet{}, core.Invalid("invalid_cidr", field, "%q is not a CIDR such as 10.10.0.0/24 or fd00:10::/64", s)
		}
	}
	p = netip.PrefixFrom(addr, bits)
	masked := p.Masked()
	if addr.Is4() && p.Bits() > 30 || addr.Is6() && p.Bits() > 126 {
		return ifaceNet{}, core.Invalid("invalid_cidr", field, "%q leaves no room for devices (use at most /30 for IPv4, /126 for IPv6)", s)
	}
	if addr.Is6() && addr.Zone() != "" {
		return ifaceNet{}, core.Invalid("invalid_cidr", field, "%q: zones are not allowed", s)
	}
	n := ifaceNet{Addr: addr, Prefix: masked}
	if addr == masked.Addr() {
		n.Addr = masked.Addr().Next()
	}
	if n.Addr.Is4() && n.Addr == lastAddr(masked) {
		return ifaceNet{}, core.Invalid("invalid_cidr", field, "%q: the interface address cannot be the broadcast address", s)
	}
	return n, nil
}

// hostIndex is the offset of a within its network.
func hostIndex(p netip.Prefix, a netip.Addr) int64 {
	base := new(big.Int).SetBytes(p.Addr().AsSlice())
	v := new(big.Int).SetBytes(a.AsSlice())
	return v.Sub(v, base).Int64()
}

// addrAt returns the address at offset i inside the network.
func addrAt(p netip.Prefix, i int64) netip.Addr {
	base := new(big.Int).SetBytes(p.Addr().AsSlice())
	v := base.Add(base, big.NewInt(i)).Bytes()
	buf := make([]byte, len(p.Addr().AsSlice()))
	copy(buf[len(buf)-len(v):], v)
	a, _ := netip.AddrFromSlice(buf)
	return a
}

func lastAddr(p netip.Prefix) netip.Addr {
	return addrAt(p, maxOffset(p))
}

// maxOffset is the offset of the last address in the network, capped for
// IPv6 where /64 networks are far larger than any location will need.
func maxOffset(p netip.Prefix) int64 {
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits > 62 {
		return 1 << 62
	}
	return 1<<hostBits - 1
}

// allocRange returns the lowest and highest offsets devices may get. The
// network address (0) is never handed out, nor the IPv4 broadcast address.
func allocRange(p netip.Prefix) (lo, hi int64) {
	hi = maxOffset(p)
	if p.Addr().Is4() {
		hi--
	}
	return 1, hi
}

// allocator hands out the lowest free offsets of one location network.
type allocator struct {
	net   ifaceNet
	used  map[int64]bool
	next  int64
	iface int64
}

func newAllocator(n ifaceNet, used []int64) *allocator {
	a := &allocator{net: n, used: make(map[int64]bool, len(used)), iface: hostIndex(n.Prefix, n.Addr)}
	for _, u := range used {
		a.used[u] = true
	}
	a.next, _ = allocRange(n.Prefix)
	return a
}

// take returns the next free offset or false when the network is full.
func (a *allocator) take() (int64, bool) {
	_, hi := allocRange(a.net.Prefix)
	for ; a.next <= hi; a.next++ {
		if a.next != a.iface && !a.used[a.next] {
			a.used[a.next] = true
			return a.next, true
		}
	}
	return 0, false
}

func exhausted(n ifaceNet, locationName string) error {
	return core.Conflict("address_pool_exhausted", "", "location %q has no free address left in %s", locationName, n.Prefix)
}

// parsePrefixList validates allowed IPs such as "0.0.0.0/0, 192.168.1.0/24".
func parsePrefixList(field string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, core.Invalid("invalid_cidr", field, "%q is not a CIDR", s)
		}
		out = append(out, p.Masked().String())
	}
	return out, nil
}

// validEndpoint checks "host", "host:port" or "[v6]:port".
func validEndpoint(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", core.Invalid("invalid_endpoint", field, "%q: unbalanced brackets", s)
		}
		host, port = s[1:end], s[end+1:]
		if _, err := netip.ParseAddr(host); err != nil {
			return "", core.Invalid("invalid_endpoint", field, "%q: not an IPv6 address in brackets", s)
		}
		if port != "" {
			var ok bool
			if port, ok = strings.CutPrefix(port, ":"); !ok || port == "" {
				return "", core.Invalid("invalid_endpoint", field, "%q: port must be 1-65535", s)
			}
		}
	} else if strings.Count(s, ":") == 1 {
		host, port = s[:strings.Index(s, ":")], s[strings.Index(s, ":")+1:]
		if port == "" {
			return "", core.Invalid("invalid_endpoint", field, "%q: port must be 1-65535", s)
		}
	} else if strings.Count(s, ":") > 1 {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", core.Invalid("invalid_endpoint", field, "%q is not a host, host:port or [IPv6]:port", s)
		}
		return s, nil
	}
	if port != "" {
		var n int
		if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != port {
			return "", core.Invalid("invalid_endpoint", field, "%q: port must be 1-65535", s)
		}
	}
	if host == "" || len(host) > 253 || !validHostname(host) {
		return "", core.Invalid("invalid_endpoint", field, "%q is not a valid host name or address", s)
	}
	return s, nil
}

func validHostname(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// EndpointWithPort adds the listen port when the endpoint names none.
func EndpointWithPort(endpoint string, port int) string {
	if strings.HasPrefix(endpoint, "[") {
		if strings.Contains(endpoint, "]:") {
			return endpoint
		}
		return fmt.Sprintf("%s:%d", endpoint, port)
	}
	if a, err := netip.ParseAddr(endpoint); err == nil && a.Is6() {
		return fmt.Sprintf("[%s]:%d", endpoint, port)
	}
	if strings.Contains(endpoint, ":") {
		return endpoint
	}
	return fmt.Sprintf("%s:%d", endpoint, port)
}
