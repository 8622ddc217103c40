// Package vpn manages VPN locations, devices, address allocation, the
// registries of gateways and proxies, and the per-location configuration
// revision that gateways follow.
package vpn

import (
	"encoding/base64"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core"
)

// ParsePublicKey validates a WireGuard public key: standard base64 of 32
// bytes, not all zero, in canonical form.
func ParsePublicKey(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 32 || base64.StdEncoding.EncodeToString(raw) != s {
		return "", core.Invalid("invalid_public_key", field, "not a WireGuard public key (base64 of 32 bytes)")
	}
	zero := true
	for _, b := range raw {
		if b != 0 {
			zero = false
			break
		}
	}
	if zero {
		return "", core.Invalid("invalid_public_key", field, "the all-zero key is not a valid public key")
	}
	return s, nil
}

// GenerateKeyPair returns a new private key and its public key, base64.
func GenerateKeyPair() (private, public string, err error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", "", err
	}
	return k.String(), k.PublicKey().String(), nil
}
