package wgbind

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

func TestParseEndpoint(t *testing.T) {
	b := New()
	tests := []struct {
		in      string
		wantDst string // DstToString; "" means a parse error is expected
		wantIP  netip.Addr
	}{
		{in: "10.0.0.100:51820", wantDst: "10.0.0.100:51820", wantIP: netip.MustParseAddr("10.0.0.100")},
		{in: "[fd00::64]:51820", wantDst: "[fd00::64]:51820", wantIP: netip.MustParseAddr("fd00::64")},
		{in: "[fe80::1%eth0]:1", wantDst: "[fe80::1%eth0]:1", wantIP: netip.MustParseAddr("fe80::1%eth0")},
		// A v4-mapped address would go to the IPV6_V6ONLY socket and fail.
		{in: "[::ffff:192.0.2.1]:53", wantDst: "192.0.2.1:53", wantIP: netip.MustParseAddr("192.0.2.1")},
		{in: ""},
		{in: "10.0.0.1"},
		{in: "fd00::1:51820"},
		{in: "vpn.example.com:51820"},
		{in: "10.0.0.1:65536"},
		{in: "300.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := b.ParseEndpoint(tt.in)
			if tt.wantDst == "" {
				if err == nil {
					t.Fatalf("ParseEndpoint(%q) = %v, want error", tt.in, ep.DstToString())
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEndpoint(%q): %v", tt.in, err)
			}
			if got := ep.DstToString(); got != tt.wantDst {
				t.Errorf("DstToString = %q, want %q", got, tt.wantDst)
			}
			if got := ep.DstIP(); got != tt.wantIP {
				t.Errorf("DstIP = %v, want %v", got, tt.wantIP)
			}
			if ep.SrcIP().IsValid() || ep.SrcToString() != "" {
				t.Errorf("parsed endpoint has source %q", ep.SrcToString())
			}
		})
	}
}

func TestDstToBytes(t *testing.T) {
	parse := func(s string) conn.Endpoint { return newEndpoint(netip.MustParseAddrPort(s), netip.Addr{}, 0) }
	tests := []struct {
		a, b  string
		equal bool
	}{
		{"10.0.0.1:51820", "10.0.0.1:51820", true},
		{"10.0.0.1:51820", "10.0.0.1:51821", false},
		{"10.0.0.1:51820", "10.0.0.2:51820", false},
		{"10.0.0.1:51820", "[::ffff:10.0.0.1]:51820", true},
		{"[fd00::1]:51820", "[fd00::1]:51820", true},
		{"[fd00::1]:51820", "[fd00::2]:51820", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_"+tt.b, func(t *testing.T) {
			ba, bb := parse(tt.a).DstToBytes(), parse(tt.b).DstToBytes()
			if len(ba) == 0 {
				t.Fatal("DstToBytes is empty")
			}
			if bytes.Equal(ba, bb) != tt.equal {
				t.Errorf("DstToBytes(%s)=%x, DstToBytes(%s)=%x, want equal=%v", tt.a, ba, tt.b, bb, tt.equal)
			}
		})
	}
}

func TestEndpointSource(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.10:40000")
	tests := []struct {
		name    string
		src     netip.Addr
		ifindex int
		wantSrc string
		wantIdx int
	}{
		{"vip", netip.MustParseAddr("10.0.0.100"), 3, "10.0.0.100", 3},
		{"v6", netip.MustParseAddr("fd00::64"), 7, "fd00::64", 7},
		{"mapped source is unmapped", netip.MustParseAddr("::ffff:10.0.0.100"), 3, "10.0.0.100", 3},
		{"none", netip.Addr{}, 0, "", 0},
		{"unspecified means none", netip.IPv4Unspecified(), 4, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEndpoint(dst, tt.src, tt.ifindex)
			if got := e.SrcToString(); got != tt.wantSrc {
				t.Errorf("SrcToString = %q, want %q", got, tt.wantSrc)
			}
			if got := e.SrcIfIndex(); got != tt.wantIdx {
				t.Errorf("SrcIfIndex = %d, want %d", got, tt.wantIdx)
			}
			e.ClearSrc()
			if e.SrcIP().IsValid() || e.SrcToString() != "" || e.SrcIfIndex() != 0 {
				t.Errorf("after ClearSrc: %q if %d", e.SrcToString(), e.SrcIfIndex())
			}
			if e.DstToString() != dst.String() {
				t.Errorf("ClearSrc changed the destination to %s", e.DstToString())
			}
		})
	}
}

func TestClearSrcIfKeepsNewerSource(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	e := newEndpoint(netip.MustParseAddrPort("10.0.0.10:1"), vip, 2)
	e.clearSrcIf(netip.MustParseAddr("10.0.0.1"), 2)
	if e.SrcIP() != vip {
		t.Fatalf("clearSrcIf with another address cleared %v", vip)
	}
	e.clearSrcIf(vip, 2)
	if e.SrcIP().IsValid() {
		t.Fatal("clearSrcIf with the current address kept it")
	}
}

func TestSourceControlRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		dst     netip.Addr
		src     netip.Addr
		ifindex int
		parse   sourceParser
		wantNil bool
	}{
		{name: "v4", dst: netip.MustParseAddr("10.0.0.10"), src: netip.MustParseAddr("10.0.0.100"), ifindex: 5, parse: parseSource4},
		{name: "v6", dst: netip.MustParseAddr("fd00::10"), src: netip.MustParseAddr("fd00::64"), ifindex: 6, parse: parseSource6},
		{name: "no source", dst: netip.MustParseAddr("10.0.0.10"), wantNil: true},
		{name: "family mismatch", dst: netip.MustParseAddr("fd00::10"), src: netip.MustParseAddr("10.0.0.100"), wantNil: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oob := marshalSource(tt.dst, tt.src, tt.ifindex)
			if tt.wantNil {
				if oob != nil {
					t.Fatalf("marshalSource = %x, want nil", oob)
				}
				return
			}
			if len(oob) == 0 || len(oob) > oobSize {
				t.Fatalf("control message of %d bytes, receive buffers hold %d", len(oob), oobSize)
			}
			// What we send as "source" is what the kernel reports as
			// "destination" on receive, in the same packet-info layout.
			if tt.src.Is4() {
				var cm ipv4.ControlMessage
				if err := cm.Parse(oob); err != nil || cm.IfIndex != tt.ifindex {
					t.Fatalf("parse back: %v, ifindex %d", err, cm.IfIndex)
				}
			} else {
				var cm ipv6.ControlMessage
				if err := cm.Parse(oob); err != nil || cm.IfIndex != tt.ifindex {
					t.Fatalf("parse back: %v, ifindex %d", err, cm.IfIndex)
				}
				// IPV6_PKTINFO carries one address for both directions.
				var s controlScratch
				if a, idx := tt.parse(oob, &s); a != tt.src || idx != tt.ifindex {
					t.Errorf("parseSource6 = %v/%d, want %v/%d", a, idx, tt.src, tt.ifindex)
				}
			}
		})
	}
	var s controlScratch
	if a, idx := parseSource4(nil, &s); a.IsValid() || idx != 0 {
		t.Errorf("parseSource4(no control data) = %v/%d", a, idx)
	}
	if a, _ := parseSource6([]byte{1, 2, 3}, &s); a.IsValid() {
		t.Errorf("parseSource6(garbage) = %v", a)
	}
}

func TestSendRejectsForeignEndpoint(t *testing.T) {
	std, err := conn.NewStdNetBind().ParseEndpoint("10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := New().Send([][]byte{{1}}, std); err != conn.ErrWrongEndpointType {
		t.Fatalf("Send(std endpoint) = %v, want ErrWrongEndpointType", err)
	}
}
