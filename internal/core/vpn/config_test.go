package vpn

import (
	"strings"
	"testing"
)

func TestRenderConfig(t *testing.T) {
	const locKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	base := func() Location {
		return Location{Name: "office", Endpoint: "vpn.example.com", ListenPort: 51820, AllowedIPs: []string{"10.10.0.0/24"},
			DNS: []string{}, ExtraEndpoints: []string{}, Keepalive: DefaultKeepalive, MTU: DefaultMTU, PublicKey: locKey}
	}
	dev := Device{Name: "laptop"}
	tests := []struct {
		name       string
		loc        func(*Location)
		addrs      []string
		privateKey string
		want       string
	}{
		{
			name:  "defaults with placeholder",
			addrs: []string{"10.10.0.2"},
			want: `# ward: device "laptop" in location "office"
[Interface]
PrivateKey = REPLACE_WITH_DEVICE_PRIVATE_KEY
Address = 10.10.0.2/32
MTU = 1420

[Peer]
PublicKey = AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
AllowedIPs = 10.10.0.0/24
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25
`,
		},
		{
			name: "dual stack, DNS, extra endpoints, no keepalive, private key",
			loc: func(l *Location) {
				l.Endpoint = "2001:db8::1"
				l.ListenPort = 443
				l.ExtraEndpoints = []string{"backup.example.com", "203.0.113.9:51821", "[2001:db8::2]"}
				l.DNS = []string{"10.10.0.1", "fd00:10::1", "corp.example"}
				l.AllowedIPs = []string{"10.10.0.0/24", "fd00:10::/64", "192.168.0.0/16"}
				l.Keepalive = 0
				l.MTU = 1380
			},
			addrs:      []string{"10.10.0.2", "fd00:10::2"},
			privateKey: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
			want: `# ward: device "laptop" in location "office"
# ward-endpoints = [2001:db8::1]:443, backup.example.com:443, 203.0.113.9:51821, [2001:db8::2]:443
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.10.0.2/32, fd00:10::2/128
DNS = 10.10.0.1, fd00:10::1, corp.example
MTU = 1380

[Peer]
PublicKey = AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
AllowedIPs = 10.10.0.0/24, fd00:10::/64, 192.168.0.0/16
Endpoint = [2001:db8::1]:443
`,
		},
		{
			name:  "endpoint with its own port",
			loc:   func(l *Location) { l.Endpoint = "vpn.example.com:1194"; l.Keepalive = 1 },
			addrs: []string{"fd00:10::5"},
			want: `# ward: device "laptop" in location "office"
[Interface]
PrivateKey = REPLACE_WITH_DEVICE_PRIVATE_KEY
Address = fd00:10::5/128
MTU = 1420

[Peer]
PublicKey = AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
AllowedIPs = 10.10.0.0/24
Endpoint = vpn.example.com:1194
PersistentKeepalive = 1
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := base()
			if tt.loc != nil {
				tt.loc(&l)
			}
			got := renderConfig(dev, l, tt.addrs, tt.privateKey)
			if got != tt.want {
				t.Fatalf("renderConfig:\n--- got\n%s--- want\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderConfigLines(t *testing.T) {
	l := Location{Name: "lab", Endpoint: "198.51.100.1", ListenPort: 51820, AllowedIPs: []string{"0.0.0.0/0"}, MTU: 1420, PublicKey: "k"}
	has := func(cfg, prefix string) bool {
		for _, line := range strings.Split(cfg, "\n") {
			if strings.HasPrefix(line, prefix) {
				return true
			}
		}
		return false
	}
	tests := []struct {
		name   string
		mutate func(*Location)
		line   string
		want   bool
	}{
		{"keepalive 0 omits the line", func(l *Location) { l.Keepalive = 0 }, "PersistentKeepalive", false},
		{"keepalive set", func(l *Location) { l.Keepalive = 25 }, "PersistentKeepalive = 25", true},
		{"no DNS omits the line", func(l *Location) { l.DNS = nil }, "DNS", false},
		{"DNS set", func(l *Location) { l.DNS = []string{"1.1.1.1"} }, "DNS = 1.1.1.1", true},
		{"no extra endpoints omits the comment", func(l *Location) { l.ExtraEndpoints = nil }, "# ward-endpoints", false},
		{"extra endpoints listed after the main one", func(l *Location) { l.ExtraEndpoints = []string{"198.51.100.2"} },
			"# ward-endpoints = 198.51.100.1:51820, 198.51.100.2:51820", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := l
			tt.mutate(&loc)
			cfg := renderConfig(Device{Name: "d"}, loc, []string{"10.0.0.2"}, "")
			if got := has(cfg, tt.line); got != tt.want {
				t.Fatalf("line %q present = %v, want %v in:\n%s", tt.line, got, tt.want, cfg)
			}
			// Exactly one of each section.
			if strings.Count(cfg, "[Interface]") != 1 || strings.Count(cfg, "[Peer]") != 1 {
				t.Fatalf("sections:\n%s", cfg)
			}
		})
	}
	// Names are quoted, so characters in them stay on the comment line.
	cfg := renderConfig(Device{Name: `a "b" [Peer]`}, l, []string{"10.0.0.2"}, "")
	if first := strings.SplitN(cfg, "\n", 2)[0]; first != `# ward: device "a \"b\" [Peer]" in location "lab"` {
		t.Fatalf("comment line = %q", first)
	}
}
