package gateway

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// masquerade NATs traffic that arrives on the WireGuard interface and
// leaves by another one, so hosts behind the gateway need no route back to
// the VPN network. It owns one nftables table, replaced as a whole in one
// atomic batch and removed at shutdown; the rest of the ruleset is not
// touched. Forwarding is switched on, which a routing gateway needs anyway.
type masquerade struct {
	iface string
	table string
}

func newMasquerade(iface string) *masquerade {
	return &masquerade{iface: iface, table: "ward_" + iface}
}

func ifnameData(name string) []byte {
	b := make([]byte, 16) // IFNAMSIZ, NUL padded
	copy(b, name)
	return b
}

func (m *masquerade) install() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		// Already on (a pod's or container's sysctls): no write, so a
		// read-only /proc/sys (unprivileged containers) is fine.
		if cur, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding (%s; set it with sysctls where /proc/sys is read-only): %w", f, err)
		}
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: m.table}
	// Delete-then-add in one batch makes a restart idempotent.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(m.iface)},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifnameData(m.iface)},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install masquerade rules: %w", err)
	}
	return nil
}

func (m *masquerade) remove() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: m.table})
	return c.Flush()
}
