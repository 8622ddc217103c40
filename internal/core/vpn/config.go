package vpn

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/wardvpn/ward/internal/core"
)

// PrivateKeyPlaceholder stands in a device config for the private key, which
// only the device knows.
const PrivateKeyPlaceholder = "REPLACE_WITH_DEVICE_PRIVATE_KEY"

// DeviceConfig renders the wg-quick configuration of a device for one
// location. locationID may be empty when the device is in exactly one.
// privateKey fills the [Interface] when the caller has it (it was generated
// on request and is being returned once); otherwise a placeholder stands.
func (s *Service) DeviceConfig(ctx context.Context, a core.Actor, deviceID, locationID, privateKey string) (string, error) {
	d, err := s.GetDevice(ctx, a, deviceID)
	if err != nil {
		return "", err
	}
	locs := addressLocations(d)
	if locationID == "" {
		if len(locs) != 1 {
			return "", core.Invalid("location_required", "location", "the device is in %d locations; name one with ?location=", len(locs))
		}
		locationID = locs[0]
	}
	l, err := s.getLocation(ctx, s.db, locationID)
	if err != nil {
		return "", err
	}
	return RenderConfig(d, l, privateKey)
}

// RenderConfig writes the wg-quick configuration of device d in location l
// from values already loaded (d with its addresses). privateKey empty puts a
// placeholder. A device without an address in l is a conflict.
func RenderConfig(d Device, l Location, privateKey string) (string, error) {
	var addrs []string
	for _, addr := range d.Addresses {
		if addr.LocationID == l.ID {
			addrs = append(addrs, addr.Address)
		}
	}
	if len(addrs) == 0 {
		return "", core.Conflict("not_in_location", "location", "device %q has no address in location %q", d.Name, l.Name)
	}
	return renderConfig(d, l, addrs, privateKey), nil
}

func renderConfig(d Device, l Location, addrs []string, privateKey string) string {
	if privateKey == "" {
		privateKey = PrivateKeyPlaceholder
	}
	hostAddrs := make([]string, len(addrs))
	for i, a := range addrs {
		ip := netip.MustParseAddr(a)
		hostAddrs[i] = netip.PrefixFrom(ip, ip.BitLen()).String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# ward: device %q in location %q\n", d.Name, l.Name)
	if len(l.ExtraEndpoints) > 0 {
		eps := []string{EndpointWithPort(l.Endpoint, l.ListenPort)}
		for _, e := range l.ExtraEndpoints {
			eps = append(eps, EndpointWithPort(e, l.ListenPort))
		}
		// Stock WireGuard takes one endpoint; ward's client reads this
		// comment to fail over between all of them.
		fmt.Fprintf(&b, "# ward-endpoints = %s\n", strings.Join(eps, ", "))
	}
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", privateKey)
	fmt.Fprintf(&b, "Address = %s\n", strings.Join(hostAddrs, ", "))
	if len(l.DNS) > 0 {
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(l.DNS, ", "))
	}
	fmt.Fprintf(&b, "MTU = %d\n", l.MTU)
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", l.PublicKey)
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(l.AllowedIPs, ", "))
	fmt.Fprintf(&b, "Endpoint = %s\n", EndpointWithPort(l.Endpoint, l.ListenPort))
	if l.Keepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", l.Keepalive)
	}
	return b.String()
}
