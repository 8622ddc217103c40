package vpn

import (
	"encoding/base64"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestParsePublicKey(t *testing.T) {
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	genuine := priv.PublicKey().String()
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i + 1)
	}
	fixed := base64.StdEncoding.EncodeToString(raw)

	// A canonical key ends in "=" after a character whose two low bits are
	// zero; setting them gives a string that decodes to the same bytes
	// under lenient decoding.
	nonCanonical := []byte(fixed)
	last := nonCanonical[len(nonCanonical)-2]
	idx := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", last)
	nonCanonical[len(nonCanonical)-2] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[idx|1]

	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "generated", in: genuine, want: genuine},
		{name: "fixed bytes", in: fixed, want: fixed},
		{name: "surrounding space is trimmed", in: " \t" + fixed + "\n", want: fixed},
		{name: "empty", in: "", wantErr: true},
		{name: "all zero", in: base64.StdEncoding.EncodeToString(make([]byte, 32)), wantErr: true},
		{name: "31 bytes", in: base64.StdEncoding.EncodeToString(raw[:31]), wantErr: true},
		{name: "33 bytes", in: base64.StdEncoding.EncodeToString(append(raw, 1)), wantErr: true},
		{name: "64 bytes", in: base64.StdEncoding.EncodeToString(append(raw, raw...)), wantErr: true},
		{name: "non-canonical trailing bits", in: string(nonCanonical), wantErr: true},
		{name: "missing padding", in: strings.TrimSuffix(fixed, "="), wantErr: true},
		{name: "URL alphabet", in: base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff}), wantErr: true},
		{name: "embedded newline", in: fixed[:20] + "\n" + fixed[20:], wantErr: true},
		{name: "hex", in: "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20", wantErr: true},
		{name: "garbage", in: "not a key", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublicKey("public_key", tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParsePublicKey(%q) = %q, want an error", tt.in, got)
				}
				wantInvalid(t, err, "invalid_public_key")
				return
			}
			if err != nil {
				t.Fatalf("ParsePublicKey(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParsePublicKey(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// The non-canonical form really decodes to the same bytes leniently, so
	// the test above exercises the canonical check and not the decoder.
	if b, err := base64.StdEncoding.DecodeString(string(nonCanonical)); err != nil || string(b) != string(raw) {
		t.Fatalf("non-canonical fixture decodes to %x, %v", b, err)
	}
}

func TestGenerateKeyPair(t *testing.T) {
	seen := map[string]bool{}
	for range 8 {
		priv, pub, err := GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		k, err := wgtypes.ParseKey(priv)
		if err != nil {
			t.Fatalf("private key %q: %v", priv, err)
		}
		if got := k.PublicKey().String(); got != pub {
			t.Fatalf("public key %q does not match private key (want %q)", pub, got)
		}
		if _, err := ParsePublicKey("public_key", pub); err != nil {
			t.Fatalf("generated public key rejected: %v", err)
		}
		// A WireGuard private key is clamped (RFC 7748).
		if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
			t.Fatalf("private key %q is not clamped", priv)
		}
		if seen[priv] || seen[pub] {
			t.Fatal("GenerateKeyPair repeated a key")
		}
		seen[priv], seen[pub] = true, true
	}
}
