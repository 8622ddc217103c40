package gateway

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseFloatingIPs(t *testing.T) {
	addrs := func(s ...string) []netip.Addr {
		out := make([]netip.Addr, len(s))
		for i, v := range s {
			out[i] = netip.MustParseAddr(v)
		}
		return out
	}
	tests := []struct {
		name string
		env  string
		args []string
		want []netip.Addr
		err  string
	}{
		{name: "none"},
		{name: "variable, comma list", env: "10.0.0.100, fd00::100", want: addrs("10.0.0.100", "fd00::100")},
		{name: "flag repeated and comma list", args: []string{"--floating-ip", "10.0.0.100", "--floating-ip=10.0.0.101,10.0.0.102"},
			want: addrs("10.0.0.100", "10.0.0.101", "10.0.0.102")},
		{name: "flags replace the variable", env: "10.9.9.9", args: []string{"--floating-ip", "10.0.0.100"}, want: addrs("10.0.0.100")},
		{name: "mapped v4 is v4", args: []string{"--floating-ip", "::ffff:10.0.0.100"}, want: addrs("10.0.0.100")},
		{name: "not an address", args: []string{"--floating-ip", "vip.example.com"}, err: "not an IP address"},
		{name: "prefix is not an address", args: []string{"--floating-ip", "10.0.0.100/24"}, err: "not an IP address"},
		{name: "unspecified", args: []string{"--floating-ip", "0.0.0.0"}, err: "not a usable address"},
		{name: "bad variable", env: "nope", err: "environment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WARD_FLOATING_IP", tt.env)
			c, err := ParseConfig(tt.args, io.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.FloatingIPs, tt.want) {
				t.Fatalf("floating IPs %v, want %v", c.FloatingIPs, tt.want)
			}
		})
	}
}
