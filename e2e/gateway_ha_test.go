package e2e

// Active-active gateways: two gateways of one location (same key, port and
// tunnel address, as core configures every gateway of a location alike),
// each in its own namespace with its own client-facing address, like two
// nodes behind a UDP load balancer. The client is Debian's wg-quick.
//
//	core ns ──veth── gw1 ns ──veth── client ns
//	        └─veth── gw2 ns ──veth──┘

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	gw2ControlAddr = "10.250.4.2:50066"
	gw2EndpointIP  = "10.250.5.2"
)

// gwNode is a second gateway of the environment's location.
type gwNode struct {
	ns      *netns
	dataDir string
	iface   string
	id      string
	proc    *nsProcess
}

func (e *gwEnv) addGateway(t *testing.T) *gwNode {
	t.Helper()
	n := &gwNode{ns: newNetns(t, "ward-"+e.id+"-g2"), dataDir: filepath.Join(e.dir, "gateway2"), iface: "wh" + e.id}
	veth(t, e.coreNS, "wl"+e.id, "10.250.4.1/24", n.ns, "wgl"+e.id, "10.250.4.2/24")
	veth(t, e.clientNS, "we"+e.id, "10.250.5.1/24", n.ns, "wge"+e.id, gw2EndpointIP+"/24")
	var g apiGateway
	e.api(t).must("POST", "/api/v1/locations/"+e.locID+"/gateways", map[string]any{"name": "gw2", "control_address": gw2ControlAddr},
		http.StatusCreated, &g)
	n.id = g.ID
	n.start(t, e, g.JoinToken)
	err := waitFor(30*time.Second, 50*time.Millisecond, func() error {
		if n.proc.exited() {
			return fmt.Errorf("gateway 2 exited: %v", n.proc.waitErr)
		}
		st, err := n.status()
		if err != nil {
			return err
		}
		if !st.Ready || st.AppliedRevision != uint64(e.locationRevision(t)) || len(st.CoreLinks) == 0 {
			return fmt.Errorf("gateway 2 /status %+v", st)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("second gateway not adopted and in sync: %v", err)
	}
	return n
}

func (n *gwNode) start(t *testing.T, e *gwEnv, token string) {
	t.Helper()
	var env []string
	if token != "" {
		env = append(env, "WARD_JOIN_TOKEN="+token)
	}
	n.proc = startInNetns(t, e.t, n.ns, "ward gateway 2", env, wardBin, "gateway", "--data-dir", n.dataDir,
		"--control-addr", gw2ControlAddr, "--interface", n.iface, "--health-addr", gwHealthAddr, "--stats-interval", statsInterval)
}

func (n *gwNode) status() (gatewayStatus, error) {
	var st gatewayStatus
	code, err := getJSON(n.ns.httpClient(2*time.Second), "http://"+gwHealthAddr+"/status", &st)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/status = %d", code)
	}
	return st, err
}

// switchEndpoint points the client's peer at endpoint and makes it
// handshake at once: removing and re-adding the peer drops its session, as
// a client does when it fails over. It returns the counters of the peer
// that was removed (they restart at zero with the new one).
func (q *wgQuick) switchEndpoint(t *testing.T, peerKey, endpoint string) (rx, tx uint64) {
	t.Helper()
	rx, tx = q.transfer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := q.ns.exec(ctx, nil, "wg", "set", q.iface, "peer", peerKey, "remove"); err != nil {
		t.Fatalf("wg set peer remove: %v\n%s", err, out)
	}
	if out, err := q.ns.exec(ctx, nil, "wg", "set", q.iface, "peer", peerKey, "endpoint", endpoint, "allowed-ips", tunnelNet); err != nil {
		t.Fatalf("wg set peer endpoint %s: %v\n%s", endpoint, err, out)
	}
	return rx, tx
}

// TestActiveActiveStatistics: a client alternating 20 times between two
// active gateways of a location, with one gateway restart on the way, finds
// its own byte counters in the location's totals within 1 %. Then, with
// core gone, both gateways stay ready (a load balancer keeps them in
// rotation) and keep carrying traffic.
func TestActiveActiveStatistics(t *testing.T) {
	t.Parallel()
	e := newGatewayEnv(t, true)
	g2 := e.addGateway(t)
	for _, ns := range []*netns{e.gwNS, g2.ns} {
		go serveEcho(ns.listen(t, "tcp", "0.0.0.0:7000"))
		go serveSink(ns.listen(t, "tcp", "0.0.0.0:7001"))
	}
	devID, _, devKey, config := e.newDevice(t, "roamer")
	for _, n := range []func() (gatewayStatus, error){e.gwStatus, g2.status} {
		if err := waitFor(10*time.Second, 20*time.Millisecond, func() error {
			st, err := n()
			if err != nil {
				return err
			}
			if _, _, ok := st.peer(devKey); !ok {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatal("the device's peer did not reach both gateways")
		}
	}
	cl := wgQuickUp(t, e.t, e.clientNS, e.dir, "wq"+e.id, config)
	if err := waitFor(20*time.Second, 200*time.Millisecond, func() error { return echoOnce(e.clientNS, echoAddr, time.Second) }); err != nil {
		t.Fatalf("tunnel through gateway 1 not working: %v", err)
	}
	loc0, dev0 := e.settledUsage(t, devID)

	endpoints := []string{gwEndpointIP + ":51820", gw2EndpointIP + ":51820"}
	var client usage // the client's counters, summed over every peer instance
	var payload uint64
	const switches, chunk = 20, 256 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i := 0; i <= switches; i++ {
		if i == switches/2 {
			// Restart gateway 1 while the client is on gateway 2: its
			// counters restart (new boot, new series) and its final
			// report must carry what it counted.
			e.restartGateway(t)
			e.waitAdopted(t)
		}
		if i > 0 {
			rx, tx := cl.switchEndpoint(t, e.locPubKey, endpoints[i%2])
			client.Down += rx
			client.Up += tx
		}
		if err := waitFor(20*time.Second, 100*time.Millisecond, func() error { return echoOnce(e.clientNS, echoAddr, time.Second) }); err != nil {
			t.Fatalf("switch %d to %s: tunnel not working: %v", i, endpoints[i%2], err)
		}
		if err := sendBytes(ctx, e.clientNS, sinkAddr, chunk); err != nil {
			t.Fatalf("switch %d to %s: send %d bytes: %v", i, endpoints[i%2], chunk, err)
		}
		payload += chunk
	}
	rx, tx := cl.transfer(t)
	client.Down += rx
	client.Up += tx
	loc1, dev1 := e.settledUsage(t, devID)
	checkUsage(t, fmt.Sprintf("%d switches between two active gateways and a gateway restart", switches), loc1.sub(loc0), dev1.sub(dev0), client, payload)

	// Both gateways served the client: each has a series with traffic.
	for name, st := range map[string]func() (gatewayStatus, error){"gateway 1": e.gwStatus, "gateway 2": g2.status} {
		s, err := st()
		if err != nil {
			t.Fatal(err)
		}
		if _, hs, ok := s.peer(devKey); !ok || hs == 0 {
			t.Errorf("%s never saw a handshake of the client", name)
		}
	}

	// Core away: the gateways notice (no core link) and stay ready, so a
	// load balancer's /readyz check keeps them in rotation.
	e.core.kill(t)
	for name, st := range map[string]func() (gatewayStatus, error){"gateway 1": e.gwStatus, "gateway 2": g2.status} {
		if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
			s, err := st()
			if err != nil {
				return err
			}
			if len(s.CoreLinks) > 0 {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatalf("%s still reports a core link 20 s after core was killed", name)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	checks := 0
	for time.Now().Before(deadline) {
		for name, hc := range map[string]*http.Client{"gateway 1": e.gwHTTP(), "gateway 2": g2.ns.httpClient(2 * time.Second)} {
			code, err := getJSON(hc, "http://"+gwHealthAddr+"/readyz", nil)
			if err != nil || code != http.StatusOK {
				t.Fatalf("%s /readyz without core = %d, %v: a load balancer would take it out of rotation", name, code, err)
			}
			checks++
		}
		time.Sleep(250 * time.Millisecond)
	}
	for i, ep := range endpoints {
		cl.switchEndpoint(t, e.locPubKey, ep)
		if err := waitFor(20*time.Second, 100*time.Millisecond, func() error { return echoOnce(e.clientNS, echoAddr, time.Second) }); err != nil {
			t.Fatalf("without core, traffic through gateway %d: %v", i+1, err)
		}
	}
	t.Logf("without core: %d /readyz checks of both gateways answered 200 over 5 s after they noticed; traffic flows through both (%s)",
		checks, strings.Join(endpoints, ", "))
}
