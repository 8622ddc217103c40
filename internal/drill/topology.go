package drill

// The drill's network, all in namespaces it creates (names unique per run):
//
//	                         router ns (forwarding)
//	  gateway LAN 10.88.0.0/24: bridge br<id> (.254, mcast_snooping 0)
//	     ├── gw1 ns: node 10.88.0.1/32 ┐ VIP 10.88.0.100/24 on the
//	     └── gw2 ns: node 10.88.0.2/32 ┘ keepalived master
//	  10.89.1.0/24 ── wg-quick client ns (.2)
//	  10.89.2.0/24 ── ward client ns (.2)
//	  10.89.3.0/24 ── core ns (.2): ward core and ward proxy
//
// Each gateway node has its own address as /32 plus a metric-100 route to
// the LAN with that address as source, so while the node holds the VIP
// (a /24, hence a primary address with a metric-0 connected route) replies
// leave from the VIP; otherwise wireguard-go answers from the node address
// and the client roams away from the VIP for good (research/harness.md
// §3.1, "SRCROUTE"). Both the baseline and ward gateways get this
// addressing, so they are compared on the same network.

import (
	"context"
	"errors"
	"fmt"
)

const (
	lanPrefix   = "10.88.0.0/24"
	routerLAN   = "10.88.0.254"
	vip         = "10.88.0.100"
	vipCIDR     = vip + "/24"
	coreIP      = "10.89.3.2"
	tunnelNet   = "10.77.0.0/24"
	gwTunnelIP  = "10.77.0.1" // the probes' target, on whichever gateway is active
	listenPort  = 51820
	coreAPIPort = 8000
	proxyPort   = 8080
	controlPort = 50066
	healthPort  = 50067
)

// nodeIP is gateway node i's own address (i = 0, 1).
func nodeIP(i int) string { return fmt.Sprintf("10.88.0.%d", i+1) }

// Topology is the set of namespaces and links of one drill.
type Topology struct {
	ID     string
	Router *NS
	Node   [2]*NS    // gateway nodes
	Link   [2]string // each node's LAN interface (in its namespace)
	Bridge string
	Core   *NS
	// Client namespaces by client kind ("wg-quick", "ward").
	Client   map[string]*NS
	ClientIP map[string]string

	all []*NS
}

// clientNets: the subnet index of each client kind.
var clientNets = map[string]int{clientWGQuick: 1, clientWard: 2}

// buildTopology creates the namespaces and links; on error it removes what
// it made.
func buildTopology(ctx context.Context, id string) (t *Topology, err error) {
	t = &Topology{ID: id, Bridge: "br" + id, Client: map[string]*NS{}, ClientIP: map[string]string{}}
	defer func() {
		if err != nil {
			t.destroy()
		}
	}()
	mk := func(suffix string) (*NS, error) {
		n, err := createNS(ctx, "wdrill-"+id+"-"+suffix)
		if err == nil {
			t.all = append(t.all, n)
		}
		return n, err
	}
	if t.Router, err = mk("r"); err != nil {
		return t, err
	}
	r := t.Router
	if _, err = r.exec(ctx, nil, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return t, err
	}
	if err = r.ip(ctx, "link", "add", t.Bridge, "type", "bridge", "mcast_snooping", "0"); err != nil {
		return t, err
	}
	if err = r.ip(ctx, "addr", "add", routerLAN+"/24", "dev", t.Bridge); err != nil {
		return t, err
	}
	if err = r.ip(ctx, "link", "set", t.Bridge, "up"); err != nil {
		return t, err
	}
	for i := range 2 {
		if t.Node[i], err = mk(fmt.Sprintf("g%d", i+1)); err != nil {
			return t, err
		}
		t.Link[i] = fmt.Sprintf("e%s%d", id, i+1)
		port := fmt.Sprintf("p%s%d", id, i+1)
		if err = vethPair(ctx, t.Node[i], t.Link[i], r, port); err != nil {
			return t, err
		}
		if err = r.ip(ctx, "link", "set", port, "master", t.Bridge, "up"); err != nil {
			return t, err
		}
		if err = t.nodeUp(ctx, i, true); err != nil {
			return t, err
		}
	}
	attach := func(n *NS, inName, outName string, subnet int) error {
		if err := vethPair(ctx, n, inName, r, outName); err != nil {
			return err
		}
		for _, c := range [][]string{
			{"addr", "add", fmt.Sprintf("10.89.%d.1/24", subnet), "dev", outName}, {"link", "set", outName, "up"},
		} {
			if err := r.ip(ctx, c...); err != nil {
				return err
			}
		}
		for _, c := range [][]string{
			{"addr", "add", fmt.Sprintf("10.89.%d.2/24", subnet), "dev", inName}, {"link", "set", inName, "up"},
			{"route", "add", "default", "via", fmt.Sprintf("10.89.%d.1", subnet)},
		} {
			if err := n.ip(ctx, c...); err != nil {
				return err
			}
		}
		return nil
	}
	if t.Core, err = mk("core"); err != nil {
		return t, err
	}
	if err = attach(t.Core, "k"+id, "rk"+id, 3); err != nil {
		return t, err
	}
	for _, kind := range []string{clientWGQuick, clientWard} {
		short := map[string]string{clientWGQuick: "q", clientWard: "w"}[kind]
		n, err := mk("c" + short)
		if err != nil {
			return t, err
		}
		if err = attach(n, short+id, "r"+short+id, clientNets[kind]); err != nil {
			return t, err
		}
		t.Client[kind] = n
		t.ClientIP[kind] = fmt.Sprintf("10.89.%d.2", clientNets[kind])
	}
	return t, nil
}

// vethPair joins a and b with a veth pair (aName in a, bName in b).
func vethPair(ctx context.Context, a *NS, aName string, b *NS, bName string) error {
	if len(aName) > 15 || len(bName) > 15 {
		return fmt.Errorf("link names %q/%q exceed 15 characters", aName, bName)
	}
	_, err := runCmd(ctx, nil, "ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
	return err
}

// nodeUp brings node i's LAN link up with its addressing (again after a
// kill: a link that went down lost its routes). first also adds the address.
// A VIP left behind by a SIGKILLed keepalived is removed first, so the node
// never comes back holding it.
func (t *Topology) nodeUp(ctx context.Context, i int, first bool) error {
	n, link := t.Node[i], t.Link[i]
	if !first {
		if has, err := n.hasAddr(ctx, link, vip); err != nil {
			return err
		} else if has {
			if err := n.ip(ctx, "addr", "del", vipCIDR, "dev", link); err != nil {
				return err
			}
		}
	} else if err := n.ip(ctx, "addr", "add", nodeIP(i)+"/32", "dev", link); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"link", "set", link, "up"},
		{"route", "replace", lanPrefix, "dev", link, "src", nodeIP(i), "metric", "100"},
		{"route", "replace", "default", "via", routerLAN, "dev", link},
	} {
		if err := n.ip(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

// nodeDown takes node i's LAN link down (the first half of a node failure).
func (t *Topology) nodeDown(ctx context.Context, i int) error {
	return t.Node[i].ip(ctx, "link", "set", t.Link[i], "down")
}

// vipOwner returns the node holding the VIP: -1 for none; an error when
// both hold it.
func (t *Topology) vipOwner(ctx context.Context) (int, error) {
	owner := -1
	for i := range 2 {
		has, err := t.Node[i].hasAddr(ctx, t.Link[i], vip)
		if err != nil {
			return -1, err
		}
		if has {
			if owner >= 0 {
				return -1, errors.New("both gateway nodes hold the VIP")
			}
			owner = i
		}
	}
	return owner, nil
}

// destroy deletes every namespace (and with them the links).
func (t *Topology) destroy() error {
	var errs []error
	for i := len(t.all) - 1; i >= 0; i-- {
		if err := t.all[i].delete(); err != nil {
			errs = append(errs, err)
		}
	}
	t.all = nil
	return errors.Join(errs...)
}

// names lists the namespaces, for --keep.
func (t *Topology) names() []string {
	var out []string
	for _, n := range t.all {
		out = append(out, n.Name)
	}
	return out
}
