package gwsign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

func config() (*gw.Interface, []*gw.Peer) {
	iface := &gw.Interface{LocationId: "loc", LocationName: "office", PrivateKey: "cHJpdmF0ZQ==", ListenPort: 51820,
		Addresses: []string{"10.0.0.1/24", "fd00::1/64"}, Mtu: 1420}
	peers := []*gw.Peer{
		{PublicKey: "b", AllowedIps: []string{"10.0.0.3/32", "fd00::3/128"}, DeviceId: "d2"},
		{PublicKey: "a", AllowedIps: []string{"10.0.0.2/32"}, PresharedKey: "cHNr", ExpiresAt: 1893456000000, DeviceId: "d1"},
	}
	return iface, peers
}

func TestSignVerify(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iface, peers := config()
	d, err := Digest(7, iface, peers)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := Sign(key, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(&key.PublicKey, d, sig); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if err := Verify(&other.PublicKey, d, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another CA's key verified the signature: %v", err)
	}

	// The same configuration in another order digests the same.
	reordered := []*gw.Peer{proto.Clone(peers[1]).(*gw.Peer), proto.Clone(peers[0]).(*gw.Peer)}
	reordered[1].AllowedIps = []string{"fd00::3/128", "10.0.0.3/32"}
	iface2 := proto.Clone(iface).(*gw.Interface)
	iface2.Addresses = []string{"fd00::1/64", "10.0.0.1/24"}
	if d2, _ := Digest(7, iface2, reordered); d2 != d {
		t.Fatal("order of peers or addresses changed the digest")
	}
	if peers[0].AllowedIps[0] != "10.0.0.3/32" {
		t.Fatal("Digest modified its input")
	}

	tampered := []struct {
		name string
		edit func(*gw.Interface, []*gw.Peer) (uint64, []*gw.Peer)
	}{
		{"revision", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { return 8, p }},
		{"added peer", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) {
			return 7, append(p, &gw.Peer{PublicKey: "evil", AllowedIps: []string{"10.0.0.0/8"}})
		}},
		{"removed peer", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { return 7, p[:1] }},
		{"allowed ip", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) {
			p[0].AllowedIps[0] = "0.0.0.0/0"
			return 7, p
		}},
		{"preshared key", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { p[1].PresharedKey = ""; return 7, p }},
		{"expiry", func(_ *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { p[1].ExpiresAt = 0; return 7, p }},
		{"private key", func(i *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { i.PrivateKey = "b3RoZXI="; return 7, p }},
		{"listen port", func(i *gw.Interface, p []*gw.Peer) (uint64, []*gw.Peer) { i.ListenPort = 51821; return 7, p }},
	}
	for _, tt := range tampered {
		t.Run(tt.name, func(t *testing.T) {
			i, p := config()
			rev, p := tt.edit(i, p)
			d2, err := Digest(rev, i, p)
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(&key.PublicKey, d2, sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("tampered configuration (%s) verified: %v", tt.name, err)
			}
		})
	}
}
