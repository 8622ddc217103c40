package wgengine

import (
	"encoding/base64"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// testKey returns a deterministic 32-byte key in base64 and hex.
func testKey(seed byte) (b64, hx string) {
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = seed + byte(i)
	}
	return base64.StdEncoding.EncodeToString(raw), hex.EncodeToString(raw)
}

func prefixes(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

func state(pc PeerConfig) PeerState {
	// Counters and endpoints must not influence the diff.
	pc.Endpoint = "192.0.2.1:51820"
	return PeerState{PeerConfig: pc, LastHandshake: time.Unix(1700000000, 0), RxBytes: 123, TxBytes: 456}
}

func TestDiff(t *testing.T) {
	kA, _ := testKey(1)
	kB, _ := testKey(2)
	kC, _ := testKey(3)
	kD, _ := testKey(4)
	kE, _ := testKey(5)
	kF, _ := testKey(6)
	kG, _ := testKey(7)
	psk1, _ := testKey(100)
	psk2, _ := testKey(101)

	current := []PeerState{
		state(PeerConfig{PublicKey: kA, AllowedIPs: prefixes(t, "10.0.0.2/32", "fd00::2/128"), Keepalive: 25}),
		state(PeerConfig{PublicKey: kB, PresharedKey: psk1, AllowedIPs: prefixes(t, "10.0.0.3/32")}),
		state(PeerConfig{PublicKey: kC, AllowedIPs: prefixes(t, "10.0.0.4/32")}),
		state(PeerConfig{PublicKey: kD, AllowedIPs: prefixes(t, "10.0.0.5/32")}),
		state(PeerConfig{PublicKey: kF, AllowedIPs: prefixes(t, "10.0.0.7/32"), Keepalive: 25}),
		state(PeerConfig{PublicKey: kG, AllowedIPs: prefixes(t, "10.0.0.8/32", "10.9.0.0/24")}),
	}
	desired := []PeerConfig{
		// A: same allowed IPs in another order: untouched.
		{PublicKey: kA, AllowedIPs: prefixes(t, "fd00::2/128", "10.0.0.2/32"), Keepalive: 25},
		// B: new preshared key.
		{PublicKey: kB, PresharedKey: psk2, AllowedIPs: prefixes(t, "10.0.0.3/32")},
		// C: other allowed IPs.
		{PublicKey: kC, AllowedIPs: prefixes(t, "10.0.0.40/32")},
		// D is missing: removed. E is new.
		{PublicKey: kE, AllowedIPs: prefixes(t, "10.0.0.6/32")},
		// F: keepalive changed.
		{PublicKey: kF, AllowedIPs: prefixes(t, "10.0.0.7/32"), Keepalive: 0},
		// G: same count of allowed IPs, one differs only in its length.
		{PublicKey: kG, AllowedIPs: prefixes(t, "10.0.0.8/32", "10.9.0.0/16")},
	}
	set, remove := Diff(current, desired)
	var setKeys []string
	for _, p := range set {
		setKeys = append(setKeys, p.PublicKey)
	}
	if want := []string{kB, kC, kE, kF, kG}; !slices.Equal(setKeys, want) {
		t.Errorf("set = %v, want %v", setKeys, want)
	}
	if want := []string{kD}; !slices.Equal(remove, want) {
		t.Errorf("remove = %v, want %v", remove, want)
	}
	// The set entries are the desired configs, unchanged.
	for _, p := range set {
		if p.PublicKey == kC && !slices.Equal(p.AllowedIPs, prefixes(t, "10.0.0.40/32")) {
			t.Errorf("C set with %v", p.AllowedIPs)
		}
		if p.PublicKey == kB && p.PresharedKey != psk2 {
			t.Errorf("B set with psk %q", p.PresharedKey)
		}
	}
	// The inputs are not reordered by the comparison.
	if !slices.Equal(desired[0].AllowedIPs, prefixes(t, "fd00::2/128", "10.0.0.2/32")) {
		t.Errorf("Diff reordered the desired allowed IPs: %v", desired[0].AllowedIPs)
	}
	if !slices.Equal(current[0].AllowedIPs, prefixes(t, "10.0.0.2/32", "fd00::2/128")) {
		t.Errorf("Diff reordered the current allowed IPs: %v", current[0].AllowedIPs)
	}

	// A desired state equal to the device: nothing to do.
	same := make([]PeerConfig, len(current))
	for i, p := range current {
		same[len(current)-1-i] = p.PeerConfig
	}
	if set, remove := Diff(current, same); len(set) != 0 || len(remove) != 0 {
		t.Errorf("identical state: set %v remove %v", set, remove)
	}
	// Empty device: everything is set; empty desired: everything removed.
	if set, remove := Diff(nil, desired); len(set) != len(desired) || len(remove) != 0 {
		t.Errorf("empty device: set %d remove %v", len(set), remove)
	}
	set, remove = Diff(current, nil)
	if len(set) != 0 || !slices.Equal(remove, []string{kA, kB, kC, kD, kF, kG}) {
		t.Errorf("empty desired: set %v remove %v", set, remove)
	}
	if set, remove := Diff(nil, nil); set != nil || remove != nil {
		t.Errorf("nothing at all: set %v remove %v", set, remove)
	}
}

func TestParseUAPIPeers(t *testing.T) {
	_, privHex := testKey(200)
	k1, k1hex := testKey(1)
	k2, k2hex := testKey(2)
	k3, k3hex := testKey(3)
	psk, pskHex := testKey(50)
	// What wireguard-go answers to "get=1": interface lines first, then one
	// section per peer, then errno.
	text := strings.Join([]string{
		"private_key=" + privHex,
		"listen_port=51820",
		"fwmark=51",
		"public_key=" + k1hex,
		"preshared_key=" + pskHex,
		"protocol_version=1",
		"endpoint=192.0.2.10:40000",
		"last_handshake_time_sec=1700000000",
		"last_handshake_time_nsec=123456789",
		"tx_bytes=4096",
		"rx_bytes=2048",
		"persistent_keepalive_interval=25",
		"allowed_ip=10.10.0.2/32",
		"allowed_ip=fd00:10::2/128",
		"public_key=" + k2hex,
		"preshared_key=" + zeroKeyHex,
		"protocol_version=1",
		"last_handshake_time_sec=0",
		"last_handshake_time_nsec=0",
		"tx_bytes=0",
		"rx_bytes=0",
		"persistent_keepalive_interval=0",
		"allowed_ip=10.10.0.3/32",
		"public_key=" + k3hex,
		"preshared_key=" + zeroKeyHex,
		"protocol_version=1",
		"endpoint=[2001:db8::1]:51820",
		"last_handshake_time_sec=1700000100",
		"last_handshake_time_nsec=0",
		"tx_bytes=18446744073709551615",
		"rx_bytes=1",
		"persistent_keepalive_interval=0",
		"errno=0",
		"",
	}, "\n")
	peers, err := parseUAPIPeers(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Fatalf("got %d peers, want 3: %+v", len(peers), peers)
	}
	p := peers[0]
	if p.PublicKey != k1 || p.PresharedKey != psk || p.Endpoint != "192.0.2.10:40000" || p.RxBytes != 2048 || p.TxBytes != 4096 || p.Keepalive != 25 {
		t.Errorf("peer 1 = %+v", p)
	}
	if !p.LastHandshake.Equal(time.Unix(1700000000, 123456789)) {
		t.Errorf("peer 1 handshake = %v", p.LastHandshake)
	}
	if !slices.Equal(p.AllowedIPs, prefixes(t, "10.10.0.2/32", "fd00:10::2/128")) {
		t.Errorf("peer 1 allowed IPs = %v", p.AllowedIPs)
	}
	p = peers[1]
	if p.PublicKey != k2 || p.PresharedKey != "" || p.Endpoint != "" || p.RxBytes != 0 || p.TxBytes != 0 || p.Keepalive != 0 {
		t.Errorf("peer 2 = %+v", p)
	}
	if !p.LastHandshake.IsZero() {
		t.Errorf("peer 2 never shook hands but handshake = %v", p.LastHandshake)
	}
	if !slices.Equal(p.AllowedIPs, prefixes(t, "10.10.0.3/32")) {
		t.Errorf("peer 2 allowed IPs = %v", p.AllowedIPs)
	}
	p = peers[2]
	// Handshake fields of the previous peer do not leak into this one.
	if p.PublicKey != k3 || p.Endpoint != "[2001:db8::1]:51820" || p.RxBytes != 1 || p.TxBytes != 18446744073709551615 || len(p.AllowedIPs) != 0 {
		t.Errorf("peer 3 = %+v", p)
	}
	if !p.LastHandshake.Equal(time.Unix(1700000100, 0)) {
		t.Errorf("peer 3 handshake = %v", p.LastHandshake)
	}

	// The parsed state diffs as equal against the config that produced it.
	desired := []PeerConfig{
		{PublicKey: k1, PresharedKey: psk, AllowedIPs: prefixes(t, "fd00:10::2/128", "10.10.0.2/32"), Keepalive: 25},
		{PublicKey: k2, AllowedIPs: prefixes(t, "10.10.0.3/32")},
		{PublicKey: k3},
	}
	if set, remove := Diff(peers, desired); len(set) != 0 || len(remove) != 0 {
		t.Errorf("parsed state vs its config: set %v remove %v", set, remove)
	}
}

func TestParseUAPIPeersEdgeCases(t *testing.T) {
	// No peers: interface only.
	peers, err := parseUAPIPeers("private_key=" + zeroKeyHex + "\nlisten_port=51820\nerrno=0\n")
	if err != nil || len(peers) != 0 {
		t.Fatalf("interface only: %v %v", peers, err)
	}
	peers, err = parseUAPIPeers("")
	if err != nil || len(peers) != 0 {
		t.Fatalf("empty: %v %v", peers, err)
	}
	_, k1hex := testKey(1)
	for name, text := range map[string]string{
		"short public key":   "public_key=abcd\n",
		"non-hex key":        "public_key=" + strings.Repeat("zz", 32) + "\n",
		"bad preshared key":  "public_key=" + k1hex + "\npreshared_key=1234\n",
		"bad allowed ip":     "public_key=" + k1hex + "\nallowed_ip=10.0.0.300/32\n",
		"allowed ip w/o len": "public_key=" + k1hex + "\nallowed_ip=10.0.0.3\n",
	} {
		if _, err := parseUAPIPeers(text); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestKeyConversions(t *testing.T) {
	b64, hx := testKey(9)
	if got, err := keyHex(b64); err != nil || got != hx {
		t.Errorf("keyHex = %q, %v; want %q", got, err, hx)
	}
	if got, err := keyB64(hx); err != nil || got != b64 {
		t.Errorf("keyB64 = %q, %v; want %q", got, err, b64)
	}
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := keyHex(bad); err == nil {
			t.Errorf("keyHex(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "xyz", hex.EncodeToString(make([]byte, 33))} {
		if _, err := keyB64(bad); err == nil {
			t.Errorf("keyB64(%q) accepted", bad)
		}
	}
}
