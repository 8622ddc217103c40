package drill

// A phase runs the scenarios against one kind of gateway (ward or the
// baseline), with both clients probing at once: one fault gives one outage
// per client. Each run starts from a steady state (one node holds the VIP,
// both gateways and keepalived run, every client's probes are answered),
// injects the fault on the VIP owner, measures, then restores the faulted
// node fresh (link up, gateway and keepalived restarted, core restarted
// after core-down). With nopreempt the restored node stays backup, so the
// next run faults the other node.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

const (
	scKill       = "kill"
	scSwitchover = "switchover"
	scCoreDown   = "core-down"

	sysWard     = "ward"
	sysBaseline = "baseline"

	statsInterval = time.Second
	// coreDownLead: how long core is dead before the gateway fails.
	coreDownLead = 2 * time.Second
)

// phase is one system's gateways, keepalived instances and clients.
type phase struct {
	d       *Drill
	sys     string
	ka      [2]*Keepalived
	kaStart [2]int
	clients map[string]*clientTunnel
	// endpointHidden: the standby's /status never showed the clients'
	// endpoints, so the drill waits 3 stats intervals instead.
	endpointHidden bool
}

// runPhase runs every scenario against sys. With --keep the last phase
// stays up.
func (d *Drill) runPhase(ctx context.Context, sys string, last bool) (err error) {
	ph := &phase{d: d, sys: sys, clients: map[string]*clientTunnel{}}
	d.phase = ph
	defer func() {
		if d.opts.Keep && last {
			return
		}
		ph.teardown()
		d.phase = nil
	}()
	d.logf("%s: starting both gateways and keepalived", sys)
	for i := range 2 {
		if err := ph.startGateway(ctx, i); err != nil {
			return err
		}
	}
	if sys == sysWard {
		if err := d.waitGatewaysInSync(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	for i := range 2 {
		if err := ph.startKeepalived(ctx, i); err != nil {
			return err
		}
	}
	if _, err := ph.waitOwner(ctx); err != nil {
		return err
	}
	for _, kind := range d.opts.Clients {
		c, err := d.clientUp(ctx, kind, sys)
		if err != nil {
			return fmt.Errorf("%s client up: %w", kind, err)
		}
		ph.clients[kind] = c
	}
	for _, sc := range d.opts.Scenarios {
		if sys == sysBaseline && sc == scCoreDown {
			continue // the baseline has no core: its core-down is its kill
		}
		for run := 1; run <= d.opts.Runs; run++ {
			if ctx.Err() != nil {
				return errInterrupted
			}
			outs, err := ph.runOnce(ctx, sc, run)
			if ctx.Err() != nil {
				err = errInterrupted
			}
			if err != nil {
				err = fmt.Errorf("%s %s run %d: %w", sys, sc, run, err)
				d.report.fail(sys, sc, err)
				return err
			}
			var parts []string
			for _, kind := range d.opts.Clients {
				d.report.add(sys, sc, kind, outs[kind])
				parts = append(parts, kind+" "+outs[kind].String())
			}
			d.logf("%s %s run %d/%d: outage %s", sys, sc, run, d.opts.Runs, strings.Join(parts, ", "))
		}
	}
	return nil
}

func (ph *phase) startGateway(ctx context.Context, i int) error {
	d := ph.d
	if ph.sys == sysBaseline {
		return d.startBaselineGateway(ctx, i)
	}
	if err := d.startWardGateway(i, ""); err != nil {
		return err
	}
	return waitHTTP200(ctx, d.topo.Node[i], d.gw[i], "http://"+gatewayHealth()+"/readyz", 30*time.Second)
}

func (ph *phase) startKeepalived(ctx context.Context, i int) error {
	d := ph.d
	c := kaConfig{RouterID: fmt.Sprintf("drill-%s-%d", d.id, i+1), Interface: d.topo.Link[i], Priority: 150 - 50*i}
	if ph.sys == sysWard {
		c.TrackScript = fmt.Sprintf("%s gateway healthcheck --url http://%s/readyz", d.self, gatewayHealth())
		c.Notify = fmt.Sprintf("%s gateway notify --data-dir %s", d.self, d.gwDataDir[i])
	}
	ph.kaStart[i]++
	k, err := startKeepalived(d.topo.Node[i], d.dir, fmt.Sprintf("ka-%s-gw%d-%d", ph.sys, i+1, ph.kaStart[i]), c)
	if err != nil {
		return err
	}
	ph.ka[i] = k
	return k.waitChild(ctx)
}

var kaStateRe = regexp.MustCompile(`Entering (MASTER|BACKUP|FAULT) STATE`)

// kaState is the last VRRP state keepalived i logged ("" before any).
func (ph *phase) kaState(i int) string {
	m := kaStateRe.FindAllStringSubmatch(ph.ka[i].proc.Tail(400), -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// waitOwner waits until exactly one node holds the VIP and returns it.
func (ph *phase) waitOwner(ctx context.Context) (int, error) {
	owner := -1
	err := waitFor(ctx, 20*time.Second, 20*time.Millisecond, "one node holding the VIP", func() error {
		for i := range 2 {
			if k := ph.ka[i]; k != nil && k.proc.Exited() {
				return k.proc.failure(fmt.Errorf("keepalived on node %d ended: %v", i+1, k.proc.exitErr()))
			}
		}
		var err error
		owner, err = ph.d.topo.vipOwner(ctx)
		if err == nil && owner < 0 {
			err = fmt.Errorf("no node holds %s (keepalived states: %s / %s)", vip, ph.kaState(0), ph.kaState(1))
		}
		return err
	})
	return owner, err
}

// waitSteady waits for the state every run starts from and returns the VIP
// owner.
func (ph *phase) waitSteady(ctx context.Context, sc string, run int) (int, error) {
	d := ph.d
	owner, err := ph.waitOwner(ctx)
	if err != nil {
		return -1, err
	}
	standby := 1 - owner
	for i := range 2 {
		if d.gw[i].Exited() {
			return -1, d.gw[i].failure(fmt.Errorf("gateway %d ended: %v", i+1, d.gw[i].exitErr()))
		}
	}
	if err := waitFor(ctx, 15*time.Second, 50*time.Millisecond, "standby keepalived in BACKUP", func() error {
		if st := ph.kaState(standby); st != "BACKUP" {
			return fmt.Errorf("keepalived on node %d is in state %q", standby+1, st)
		}
		return nil
	}); err != nil {
		if ph.sys == sysWard && ph.kaState(standby) == "FAULT" {
			err = fmt.Errorf("%w: its track script `ward gateway healthcheck` fails (see %s)", err, ph.ka[standby].proc.LogPath)
		}
		return -1, err
	}
	if ph.sys == sysWard {
		if err := d.waitGatewaysInSync(ctx, 60*time.Second); err != nil {
			return -1, err
		}
		if err := d.waitRolesInCore(ctx, owner, 15*time.Second); err != nil {
			return -1, err
		}
	}
	// A wg-quick client that roamed to a node's own address (the previous
	// run's demoted baseline gateway handshook with it from there) would
	// not notice the next fault at all: bring it back to the VIP.
	if c := ph.clients[clientWGQuick]; c != nil {
		ep, err := c.endpoint(ctx)
		if err != nil {
			return -1, err
		}
		if want := fmt.Sprintf("%s:%d", vip, listenPort); ep != want {
			d.report.note(fmt.Sprintf("%s %s run %d: the wg-quick client's endpoint was %s, not the VIP, before the run; it was restarted",
				ph.sys, sc, run, ep))
			if err := c.restart(ctx); err != nil {
				return -1, err
			}
		}
	}
	for _, kind := range d.opts.Clients {
		if err := ph.clients[kind].prober.waitHealthy(ctx, stableFor, 60*time.Second); err != nil {
			return -1, err
		}
	}
	if ph.sys == sysWard {
		if err := ph.waitEndpointsKnown(ctx, standby); err != nil {
			return -1, err
		}
	}
	// A client whose traffic the standby carries (it reached the standby's
	// own address) would not notice the fault: restart its tunnel.
	served, err := ph.standbyServes(ctx, standby)
	if err != nil {
		return -1, err
	}
	if len(served) > 0 {
		for _, kind := range served {
			d.report.note(fmt.Sprintf("%s %s run %d: before the fault the standby gateway (node %d) carried the %s client's traffic; the client was restarted",
				ph.sys, sc, run, standby+1, kind))
			if err := ph.restartClient(ctx, kind); err != nil {
				return -1, err
			}
		}
		for _, kind := range d.opts.Clients {
			if err := ph.clients[kind].prober.waitHealthy(ctx, stableFor, 60*time.Second); err != nil {
				return -1, err
			}
		}
		if served, err = ph.standbyServes(ctx, standby); err != nil {
			return -1, err
		}
		if len(served) > 0 {
			return -1, fmt.Errorf("the standby gateway (node %d) still carries the traffic of %s after a restart of the client", standby+1,
				strings.Join(served, ", "))
		}
	}
	return owner, nil
}

// peerRx reads how many bytes the gateway on node i received from each
// client (by client kind).
func (ph *phase) peerRx(ctx context.Context, i int) (map[string]uint64, error) {
	d := ph.d
	keys := map[string]string{clientWGQuick: d.wqKey, clientWard: d.wardKey}
	out := map[string]uint64{}
	if ph.sys == sysBaseline {
		txt, err := d.topo.Node[i].exec(ctx, nil, "wg", "show", d.baselineIface(i), "transfer")
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(txt, "\n") {
			f := strings.Fields(line)
			for kind, k := range keys {
				if len(f) == 3 && f[0] == k {
					var rx uint64
					if _, err := fmt.Sscan(f[1], &rx); err != nil {
						return nil, fmt.Errorf("wg show transfer: %q: %w", line, err)
					}
					out[kind] = rx
				}
			}
		}
		return out, nil
	}
	raw, err := d.gatewayStatus(i)
	if err != nil {
		return nil, err
	}
	var st struct {
		Peers []struct {
			PublicKey string `json:"public_key"`
			RxBytes   uint64 `json:"rx_bytes"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("gateway /status: %w", err)
	}
	for _, p := range st.Peers {
		for kind, k := range keys {
			if p.PublicKey == k {
				out[kind] = p.RxBytes
			}
		}
	}
	return out, nil
}

// standbyServes returns the clients whose packets the standby gateway
// decrypts (its received bytes grow over 300 ms of probing).
func (ph *phase) standbyServes(ctx context.Context, standby int) ([]string, error) {
	before, err := ph.peerRx(ctx, standby)
	if err != nil {
		return nil, fmt.Errorf("standby's peer counters: %w", err)
	}
	if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
		return nil, err
	}
	after, err := ph.peerRx(ctx, standby)
	if err != nil {
		return nil, fmt.Errorf("standby's peer counters: %w", err)
	}
	var kinds []string
	for _, kind := range ph.d.opts.Clients {
		if after[kind] > before[kind] {
			kinds = append(kinds, kind)
		}
	}
	return kinds, nil
}

// restartClient brings a client's tunnel down and up again; its prober
// keeps running (ping survives the interface coming back).
func (ph *phase) restartClient(ctx context.Context, kind string) error {
	c := ph.clients[kind]
	if kind == clientWGQuick {
		return c.restart(ctx)
	}
	c.proc.Stop(10 * time.Second)
	p, err := ph.d.startWardClient(ctx, ph.sys)
	if err != nil {
		return err
	}
	c.proc = p
	return nil
}

// waitEndpointsKnown waits until core has stats with a handshake of every
// client since it came up, and until the standby gateway shows the
// clients' endpoints in its /status; if it never does, the drill waits 3
// stats intervals after core had them (and says so in the report).
func (ph *phase) waitEndpointsKnown(ctx context.Context, standby int) error {
	d := ph.d
	err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "core has the clients' handshakes", func() error {
		var st struct {
			Devices []struct {
				DeviceID      string `json:"device_id"`
				LastHandshake int64  `json:"last_handshake"`
			} `json:"devices"`
		}
		if err := d.api.do("GET", "/api/v1/locations/"+d.loc.ID+"/stats", nil, 200, &st); err != nil {
			return err
		}
		for _, kind := range d.opts.Clients {
			since := ph.clients[kind].up.Add(-2 * time.Second).UnixMilli()
			ok := false
			for _, dv := range st.Devices {
				ok = ok || dv.DeviceID == d.devID[kind] && dv.LastHandshake >= since
			}
			if !ok {
				return fmt.Errorf("no handshake of the %s client in core's statistics yet", kind)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	wait := 3 * statsInterval
	if ph.endpointHidden {
		return sleepCtx(ctx, wait)
	}
	err = waitFor(ctx, wait, 100*time.Millisecond, "standby knows the endpoints", func() error {
		st, err := d.gatewayStatus(standby)
		if err != nil {
			return err
		}
		for _, kind := range d.opts.Clients {
			if !strings.Contains(st, `"`+d.topo.ClientIP[kind]+`:`) {
				return fmt.Errorf("no %s endpoint in the standby's /status", kind)
			}
		}
		return nil
	})
	if err != nil {
		ph.endpointHidden = true
		d.report.note(fmt.Sprintf("the standby ward gateway's /status does not show the clients' endpoints; before each fault the drill waited %v (3 stats intervals) after core's statistics had the clients' handshakes", wait))
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// runOnce runs one scenario once and returns each client's outage.
func (ph *phase) runOnce(ctx context.Context, sc string, run int) (map[string]Outage, error) {
	d := ph.d
	owner, err := ph.waitSteady(ctx, sc, run)
	if err != nil {
		return nil, fmt.Errorf("steady state before the fault: %w", err)
	}
	if sc == scCoreDown {
		if err := d.core.Kill(); err != nil {
			return nil, err
		}
		if err := sleepCtx(ctx, coreDownLead); err != nil {
			return nil, err
		}
	}
	fault := time.Now()
	switch sc {
	case scKill, scCoreDown:
		// A node failure: the link first (no goodbye advert can leave),
		// then keepalived and the gateway die.
		if err := d.topo.nodeDown(ctx, owner); err != nil {
			return nil, err
		}
		if err := ph.ka[owner].Kill(); err != nil {
			return nil, err
		}
		if err := d.gw[owner].Kill(); err != nil {
			return nil, err
		}
	case scSwitchover:
		// Planned: keepalived stops (priority-0 advert), the VIP moves,
		// the old gateway keeps running.
		if err := ph.ka[owner].Term(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown scenario %q", sc)
	}
	outs, merr := ph.measure(ctx, fault)
	if ctx.Err() != nil {
		return nil, ctx.Err() // interrupted: the teardown follows, no restore
	}
	if merr == nil {
		ph.noteRoaming(ctx, sc, run)
	}
	if err := ph.restore(ctx, sc, owner); err != nil {
		return nil, errors.Join(merr, fmt.Errorf("restore node %d: %w", owner+1, err))
	}
	return outs, merr
}

// measure waits until every client recovered (or hit the cap) and returns
// the outages.
func (ph *phase) measure(ctx context.Context, fault time.Time) (map[string]Outage, error) {
	d := ph.d
	outs := map[string]Outage{}
	deadline := fault.Add(d.opts.Cap + stableFor + 5*time.Second)
	for {
		for _, kind := range d.opts.Clients {
			if _, ok := outs[kind]; ok {
				continue
			}
			rs, err := ph.clients[kind].prober.snapshot()
			if err != nil {
				return nil, err
			}
			o, done, err := measure(rs, fault, time.Now(), d.opts.Cap)
			if err != nil {
				return nil, fmt.Errorf("%s client: %w", kind, err)
			}
			if done {
				outs[kind] = o
			}
		}
		if len(outs) == len(d.opts.Clients) {
			return outs, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the measurement did not settle by %v after the fault", deadline.Sub(fault))
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// noteRoaming reports a wg-quick client that got its tunnel back through a
// node's own address instead of the VIP.
func (ph *phase) noteRoaming(ctx context.Context, sc string, run int) {
	c := ph.clients[clientWGQuick]
	if c == nil {
		return
	}
	ep, err := c.endpoint(ctx)
	if err == nil && ep != fmt.Sprintf("%s:%d", vip, listenPort) {
		ph.d.report.note(fmt.Sprintf("%s %s run %d: the wg-quick client recovered through %s (a node's own address), not the VIP",
			ph.sys, sc, run, ep))
	}
}

// restore brings the faulted node back fresh.
func (ph *phase) restore(ctx context.Context, sc string, node int) error {
	d := ph.d
	if sc == scSwitchover {
		if !ph.ka[node].proc.wait(10 * time.Second) {
			ph.ka[node].Stop(time.Second)
		}
		d.gw[node].Stop(10 * time.Second)
	}
	if sc == scCoreDown {
		if err := d.startCore(ctx); err != nil {
			return err
		}
	}
	if err := d.topo.nodeUp(ctx, node, false); err != nil {
		return err
	}
	if err := ph.startGateway(ctx, node); err != nil {
		return err
	}
	return ph.startKeepalived(ctx, node)
}

// teardown stops the clients, keepalived and the gateways of the phase.
func (ph *phase) teardown() {
	d := ph.d
	for _, c := range ph.clients {
		c.down()
	}
	for i := range 2 {
		if ph.ka[i] != nil {
			ph.ka[i].Stop(5 * time.Second)
		}
	}
	for i := range 2 {
		if d.gw[i] != nil {
			d.gw[i].Stop(10 * time.Second)
		}
		_ = d.topo.nodeUp(context.Background(), i, false) // no VIP left behind
	}
}
