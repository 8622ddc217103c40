package vpn

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/wardvpn/ward/internal/core"
)

// wantInvalid fails unless err is a core.Error of kind invalid with the code.
func wantInvalid(t *testing.T, err error, code string) {
	t.Helper()
	de, ok := core.AsError(err)
	if !ok {
		t.Fatalf("error = %v, want a core.Error %s", err, code)
	}
	if de.Kind != core.KindInvalid || de.Code != code {
		t.Fatalf("error = kind %v code %q (%v), want invalid %q", de.Kind, de.Code, err, code)
	}
}

func TestParseIfaceNet(t *testing.T) {
	tests := []struct {
		in         string
		wantAddr   string // interface address
		wantPrefix string // masked network
		wantString string // String(): address with prefix length
		wantErr    bool
	}{
		// Network form: the interface takes the first host.
		{in: "10.10.0.0/24", wantAddr: "10.10.0.1", wantPrefix: "10.10.0.0/24", wantString: "10.10.0.1/24"},
		{in: "  10.10.0.0/24 ", wantAddr: "10.10.0.1", wantPrefix: "10.10.0.0/24", wantString: "10.10.0.1/24"},
		{in: "fd00:10::/64", wantAddr: "fd00:10::1", wantPrefix: "fd00:10::/64", wantString: "fd00:10::1/64"},
		{in: "192.168.8.0/30", wantAddr: "192.168.8.1", wantPrefix: "192.168.8.0/30", wantString: "192.168.8.1/30"},
		{in: "fd00::/126", wantAddr: "fd00::1", wantPrefix: "fd00::/126", wantString: "fd00::1/126"},
		// Host form: the given address is the interface address.
		{in: "10.10.0.1/24", wantAddr: "10.10.0.1", wantPrefix: "10.10.0.0/24", wantString: "10.10.0.1/24"},
		{in: "10.10.0.77/24", wantAddr: "10.10.0.77", wantPrefix: "10.10.0.0/24", wantString: "10.10.0.77/24"},
		{in: "10.10.0.254/24", wantAddr: "10.10.0.254", wantPrefix: "10.10.0.0/24", wantString: "10.10.0.254/24"},
		{in: "192.168.8.2/30", wantAddr: "192.168.8.2", wantPrefix: "192.168.8.0/30", wantString: "192.168.8.2/30"},
		{in: "fd00:10::abcd/64", wantAddr: "fd00:10::abcd", wantPrefix: "fd00:10::/64", wantString: "fd00:10::abcd/64"},
		// The last IPv6 address is fine: IPv6 has no broadcast.
		{in: "fd00::3/126", wantAddr: "fd00::3", wantPrefix: "fd00::/126", wantString: "fd00::3/126"},
		// An IPv4-mapped network is an IPv4 network.
		{in: "::ffff:10.20.0.0/120", wantAddr: "10.20.0.1", wantPrefix: "10.20.0.0/24", wantString: "10.20.0.1/24"},
		{in: "::ffff:10.20.0.9/120", wantAddr: "10.20.0.9", wantPrefix: "10.20.0.0/24", wantString: "10.20.0.9/24"},

		// No room for devices.
		{in: "10.0.0.0/31", wantErr: true},
		{in: "10.0.0.0/32", wantErr: true},
		{in: "10.0.0.1/32", wantErr: true},
		{in: "fd00::/127", wantErr: true},
		{in: "fd00::/128", wantErr: true},
		{in: "::ffff:10.0.0.0/127", wantErr: true},
		{in: "::ffff:10.0.0.0/80", wantErr: true},
		// Broadcast as interface address.
		{in: "10.10.0.255/24", wantErr: true},
		{in: "192.168.8.3/30", wantErr: true},
		// Not CIDRs.
		{in: "", wantErr: true},
		{in: "10.10.0.0", wantErr: true},
		{in: "10.10.0.0/33", wantErr: true},
		{in: "10.10.0/24", wantErr: true},
		{in: "fd00::/129", wantErr: true},
		{in: "fe80::1%eth0/64", wantErr: true},
		{in: "example.com/24", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := parseIfaceNet("addresses", tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseIfaceNet(%q) = %v, want an error", tt.in, n)
				}
				wantInvalid(t, err, "invalid_cidr")
				return
			}
			if err != nil {
				t.Fatalf("parseIfaceNet(%q): %v", tt.in, err)
			}
			if n.Addr != netip.MustParseAddr(tt.wantAddr) {
				t.Errorf("Addr = %v, want %s", n.Addr, tt.wantAddr)
			}
			if n.Prefix != netip.MustParsePrefix(tt.wantPrefix) {
				t.Errorf("Prefix = %v, want %s", n.Prefix, tt.wantPrefix)
			}
			if n.String() != tt.wantString {
				t.Errorf("String() = %q, want %q", n.String(), tt.wantString)
			}
			if !n.Prefix.Contains(n.Addr) {
				t.Errorf("interface address %v outside %v", n.Addr, n.Prefix)
			}
			// What String returns is stored and parsed again on every read.
			again, err := parseIfaceNet("addresses", n.String())
			if err != nil || again != n {
				t.Errorf("re-parse of %q = %v, %v; want %v", n.String(), again, err, n)
			}
		})
	}
}

func TestParseIfaceNetFamily(t *testing.T) {
	for in, want := range map[string]int{"10.0.0.0/8": 4, "fd00::/64": 6, "::ffff:10.0.0.0/104": 4} {
		n, err := parseIfaceNet("addresses", in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if n.family() != want {
			t.Errorf("family(%s) = %d, want %d", in, n.family(), want)
		}
	}
}

func TestHostIndexAddrAtRoundTrip(t *testing.T) {
	tests := []struct {
		prefix string
		addr   string
		index  int64
	}{
		{"10.10.0.0/24", "10.10.0.0", 0},
		{"10.10.0.0/24", "10.10.0.1", 1},
		{"10.10.0.0/24", "10.10.0.254", 254},
		{"10.10.0.0/24", "10.10.0.255", 255},
		{"10.10.0.0/16", "10.10.1.0", 256},
		{"10.10.0.0/16", "10.10.255.255", 65535},
		{"10.0.0.0/8", "10.1.2.3", 1<<16 + 2<<8 + 3},
		{"0.0.0.0/0", "255.255.255.255", 1<<32 - 1},
		{"fd00:10::/64", "fd00:10::", 0},
		{"fd00:10::/64", "fd00:10::1", 1},
		{"fd00:10::/64", "fd00:10::ff", 255},
		{"fd00:10::/64", "fd00:10::1:0", 1 << 16},
		{"fd00:10::/64", "fd00:10::1:0:0:0", 1 << 48},
		{"fd00:10::/64", "fd00:10::3fff:ffff:ffff:ffff", 1<<62 - 1},
		{"fd00::/126", "fd00::3", 3},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"/"+tt.addr, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.prefix)
			a := netip.MustParseAddr(tt.addr)
			if got := hostIndex(p, a); got != tt.index {
				t.Errorf("hostIndex(%v, %v) = %d, want %d", p, a, got, tt.index)
			}
			if got := addrAt(p, tt.index); got != a {
				t.Errorf("addrAt(%v, %d) = %v, want %v", p, tt.index, got, a)
			}
			if got := addrAt(p, tt.index); got.Is4() != a.Is4() {
				t.Errorf("addrAt(%v, %d) changed the family: %v", p, tt.index, got)
			}
		})
	}
	// Every address of a small network survives the round trip.
	for _, s := range []string{"192.168.7.0/28", "fd00:7::/124"} {
		p := netip.MustParsePrefix(s)
		i := int64(0)
		for a := p.Addr(); p.Contains(a); a = a.Next() {
			if got := hostIndex(p, a); got != i {
				t.Fatalf("hostIndex(%v, %v) = %d, want %d", p, a, got, i)
			}
			if got := addrAt(p, i); got != a {
				t.Fatalf("addrAt(%v, %d) = %v, want %v", p, i, got, a)
			}
			i++
		}
		if i != 16 {
			t.Fatalf("%v holds %d addresses, want 16", p, i)
		}
	}
}

func TestMaxOffsetAndAllocRange(t *testing.T) {
	tests := []struct {
		prefix     string
		max        int64
		wantLo     int64
		wantHi     int64
		lastAddrIs string
	}{
		{"10.0.0.0/30", 3, 1, 2, "10.0.0.3"},
		{"10.0.0.0/29", 7, 1, 6, "10.0.0.7"},
		{"10.10.0.0/24", 255, 1, 254, "10.10.0.255"},
		{"10.0.0.0/8", 1<<24 - 1, 1, 1<<24 - 2, "10.255.255.255"},
		{"fd00::/126", 3, 1, 3, "fd00::3"},
		{"fd00::/120", 255, 1, 255, "fd00::ff"},
		{"fd00::/96", 1<<32 - 1, 1, 1<<32 - 1, "fd00::ffff:ffff"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.prefix)
			if got := maxOffset(p); got != tt.max {
				t.Errorf("maxOffset = %d, want %d", got, tt.max)
			}
			lo, hi := allocRange(p)
			if lo != tt.wantLo || hi != tt.wantHi {
				t.Errorf("allocRange = %d..%d, want %d..%d", lo, hi, tt.wantLo, tt.wantHi)
			}
			if got := lastAddr(p); got != netip.MustParseAddr(tt.lastAddrIs) {
				t.Errorf("lastAddr = %v, want %s", got, tt.lastAddrIs)
			}
		})
	}
	// Large IPv6 networks are capped, but every offset stays inside the network.
	for _, s := range []string{"fd00::/64", "fd00::/65", "fd00::/66", "fd00::/67", "fd00::/48", "::/0"} {
		p := netip.MustParsePrefix(s)
		_, hi := allocRange(p)
		if hi <= 0 || hi > 1<<62 {
			t.Errorf("%s: hi = %d, want a positive cap of at most 2^62", s, hi)
		}
		if last := addrAt(p, hi); !p.Contains(last) {
			t.Errorf("%s: highest offset %d is %v, outside the network", s, hi, last)
		}
	}
}

func TestAllocator(t *testing.T) {
	take := func(a *allocator, n int) []string {
		var out []string
		for range n {
			i, ok := a.take()
			if !ok {
				break
			}
			out = append(out, addrAt(a.net.Prefix, i).String())
		}
		return out
	}
	mustNet := func(s string) ifaceNet {
		n, err := parseIfaceNet("addresses", s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		name string
		net  string
		used []int64
		want []string
	}{
		{name: "network form skips the interface", net: "10.0.0.0/29",
			want: []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{name: "interface in the middle", net: "10.0.0.4/29",
			want: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"}},
		{name: "interface at the top", net: "10.0.0.6/29",
			want: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}},
		{name: "used offsets are skipped", net: "10.0.0.0/29", used: []int64{2, 4},
			want: []string{"10.0.0.3", "10.0.0.5", "10.0.0.6"}},
		{name: "full", net: "10.0.0.0/29", used: []int64{2, 3, 4, 5, 6}},
		{name: "smallest IPv4", net: "10.0.0.0/30", want: []string{"10.0.0.2"}},
		{name: "IPv6 has no broadcast", net: "fd00::/126", want: []string{"fd00::2", "fd00::3"}},
		{name: "IPv6 /125", net: "fd00::/125", used: []int64{3},
			want: []string{"fd00::2", "fd00::4", "fd00::5", "fd00::6", "fd00::7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := mustNet(tt.net)
			a := newAllocator(n, tt.used)
			got := take(a, 100)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("allocated %v, want %v", got, tt.want)
			}
			if _, ok := a.take(); ok {
				t.Fatal("take succeeded on an exhausted network")
			}
			for _, s := range got {
				addr := netip.MustParseAddr(s)
				if addr == n.Addr || addr == n.Prefix.Addr() || (addr.Is4() && addr == lastAddr(n.Prefix)) {
					t.Errorf("handed out reserved address %s", s)
				}
			}
		})
	}

	t.Run("a /29 is exhausted after 5 devices", func(t *testing.T) {
		a := newAllocator(mustNet("10.9.0.0/29"), nil)
		for i := range 5 {
			if _, ok := a.take(); !ok {
				t.Fatalf("take %d failed", i+1)
			}
		}
		if idx, ok := a.take(); ok {
			t.Fatalf("6th take = %d, want exhaustion", idx)
		}
		err := exhausted(a.net, "office")
		de, ok := core.AsError(err)
		if !ok || de.Kind != core.KindConflict || de.Code != "address_pool_exhausted" {
			t.Fatalf("exhausted() = %v, want conflict address_pool_exhausted", err)
		}
	})

	t.Run("IPv6 /64 hands out low addresses", func(t *testing.T) {
		a := newAllocator(mustNet("fd00:10::/64"), []int64{2})
		if got := take(a, 3); !slices.Equal(got, []string{"fd00:10::3", "fd00:10::4", "fd00:10::5"}) {
			t.Fatalf("allocated %v", got)
		}
	})
}

func TestParsePrefixList(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: []string{}, want: []string{}},
		{in: []string{"0.0.0.0/0", "::/0"}, want: []string{"0.0.0.0/0", "::/0"}},
		{in: []string{"192.168.1.77/24"}, want: []string{"192.168.1.0/24"}},
		{in: []string{" 10.1.2.3/8 ", "fd00:10::1/64"}, want: []string{"10.0.0.0/8", "fd00:10::/64"}},
		{in: []string{"10.1.2.3/32"}, want: []string{"10.1.2.3/32"}},
		{in: []string{"10.0.0.0/24", "10.0.0.0"}, wantErr: true},
		{in: []string{"not-a-cidr"}, wantErr: true},
		{in: []string{"10.0.0.0/33"}, wantErr: true},
		{in: []string{""}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parsePrefixList("allowed_ips", tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parsePrefixList(%q) = %q, want an error", tt.in, got)
				continue
			}
			wantInvalid(t, err, "invalid_cidr")
			continue
		}
		if err != nil {
			t.Errorf("parsePrefixList(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parsePrefixList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidEndpoint(t *testing.T) {
	valid := map[string]string{
		"vpn.example.com":           "vpn.example.com",
		"  vpn.example.com:51820  ": "vpn.example.com:51820",
		"VPN-1.Example.COM":         "VPN-1.Example.COM",
		"localhost":                 "localhost",
		"203.0.113.7":               "203.0.113.7",
		"203.0.113.7:1":             "203.0.113.7:1",
		"203.0.113.7:65535":         "203.0.113.7:65535",
		"2001:db8::1":               "2001:db8::1",
		"[2001:db8::1]":             "[2001:db8::1]",
		"[2001:db8::1]:51820":       "[2001:db8::1]:51820",
		"[::1]:443":                 "[::1]:443",
	}
	for in, want := range valid {
		got, err := validEndpoint("endpoint", in)
		if err != nil {
			t.Errorf("validEndpoint(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("validEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
	invalid := []string{
		"",
		"   ",
		":51820",
		"vpn.example.com:",
		"vpn.example.com:0",
		"vpn.example.com:65536",
		"vpn.example.com:-1",
		"vpn.example.com:+80",
		"vpn.example.com:080",
		"vpn.example.com:http",
		"vpn.example.com:51820x",
		"vpn.example.com:51 820",
		"[2001:db8::1",
		"[2001:db8::1]:",
		"[2001:db8::1]:0",
		"[2001:db8::1]:70000",
		"[2001:db8::1]51820",
		"[vpn.example.com]:51820",
		"2001:db8::zz",
		"2001:db8::1:51820:x",
		"-vpn.example.com",
		"vpn-.example.com",
		"vpn..example.com",
		"vpn.example.com.",
		"vpn_example.com",
		"vpn example.com",
		"http://vpn.example.com",
		"vpn.example.com/path",
		"vpné.example.com",
		string(bytesOf('a', 64)) + ".example.com",
	}
	for _, in := range invalid {
		got, err := validEndpoint("endpoint", in)
		if err == nil {
			t.Errorf("validEndpoint(%q) = %q, want an error", in, got)
			continue
		}
		wantInvalid(t, err, "invalid_endpoint")
	}
	long := string(bytesOf('a', 60)) + "." + string(bytesOf('b', 60)) + "." + string(bytesOf('c', 60)) + "." + string(bytesOf('d', 60)) + ".example.com"
	if _, err := validEndpoint("endpoint", long); err == nil {
		t.Errorf("validEndpoint accepted a %d-byte host name", len(long))
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func TestEndpointWithPort(t *testing.T) {
	tests := []struct {
		endpoint string
		port     int
		want     string
	}{
		{"vpn.example.com", 51820, "vpn.example.com:51820"},
		{"vpn.example.com:443", 51820, "vpn.example.com:443"},
		{"203.0.113.7", 51821, "203.0.113.7:51821"},
		{"203.0.113.7:1194", 51820, "203.0.113.7:1194"},
		{"2001:db8::1", 51820, "[2001:db8::1]:51820"},
		{"::1", 7, "[::1]:7"},
		{"[2001:db8::1]:443", 51820, "[2001:db8::1]:443"},
		{"[2001:db8::1]", 51820, "[2001:db8::1]:51820"},
	}
	for _, tt := range tests {
		if got := EndpointWithPort(tt.endpoint, tt.port); got != tt.want {
			t.Errorf("EndpointWithPort(%q, %d) = %q, want %q", tt.endpoint, tt.port, got, tt.want)
		}
	}
	// Whatever validEndpoint accepts becomes a host:port WireGuard can parse.
	for _, in := range []string{"vpn.example.com", "vpn.example.com:1", "10.0.0.1", "fd00::1", "[fd00::1]", "[fd00::1]:9"} {
		ep, err := validEndpoint("endpoint", in)
		if err != nil {
			t.Fatalf("validEndpoint(%q): %v", in, err)
		}
		full := EndpointWithPort(ep, 51820)
		if _, err := netip.ParseAddrPort(full); err != nil && !hostPortName(full) {
			t.Errorf("EndpointWithPort(%q) = %q: not host:port", ep, full)
		}
	}
}

// hostPortName reports whether s is "name:port" with a DNS name.
func hostPortName(s string) bool {
	i := len(s) - 1
	for i >= 0 && s[i] != ':' {
		i--
	}
	if i <= 0 || i == len(s)-1 {
		return false
	}
	return validHostname(s[:i])
}
