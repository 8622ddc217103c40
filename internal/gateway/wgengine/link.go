package wgengine

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// linkConfig sets MTU, addresses and the up state through netlink, touching
// only what differs.
type linkConfig struct {
	name string
}

// apply sets MTU and addresses; with up it also brings the link up (a
// standby kernel interface is configured but left down).
func (l *linkConfig) apply(mtu int, addrs []netip.Prefix, up bool) error {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", l.name, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU: %w", err)
		}
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	want := map[string]netip.Prefix{}
	for _, p := range addrs {
		want[p.String()] = p
	}
	for _, a := range have {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		ip, _ := netip.AddrFromSlice(a.IP)
		key := netip.PrefixFrom(ip.Unmap(), ones).String()
		if _, ok := want[key]; ok {
			delete(want, key)
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s: %w", key, err)
		}
	}
	for _, p := range want {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	if up && link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("link up: %w", err)
		}
	}
	return nil
}

func (l *linkConfig) isUp() bool {
	link, err := netlink.LinkByName(l.name)
	return err == nil && link.Attrs().Flags&net.FlagUp != 0
}

func (l *linkConfig) exists() bool {
	_, err := netlink.LinkByName(l.name)
	return err == nil
}

// setUp brings the link up or down.
func (l *linkConfig) setUp(up bool) error {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", l.name, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set link %s up=%v: %w", l.name, up, err)
	}
	return nil
}
