package main

// The propagation half of the replicas benchmark: three gateways in their own
// network namespaces, changes made through one replica at a time.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/netns"
)

// replicaGateway is one gateway in a namespace of its own, joined to the
// host (where the cores run) by a veth pair.
type replicaGateway struct {
	name    string
	ns      *netns.NS
	control string // ns-side veth address:50066
	id      string
	proc    *harness.Process
	metrics *gatewayMetrics
	probe   *http.Client
}

// pickReplicaSubnet returns a random /24 of replicaNet that no interface of
// the host has an address in.
func pickReplicaSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	base := replicaNet.Addr().As4()
	for range 20 {
		n := rand.IntN(512)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1] + byte(n>>8), byte(n), 0}), 24)
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ap, err := netip.ParsePrefix(ipn.String()); err == nil && ap.Overlaps(p) {
					used = true
				}
			}
		}
		if !used {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free /24 in 198.18.0.0/15 on this host")
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// propagation measures API-to-all-gateways propagation with one core replica
// (baseline) and then with cfg.replicas replicas, the change made through a
// different replica each time.
func (b *replicasBench) propagation(ctx context.Context) ([]harness.Row, error) {
	cfg := b.cfg
	var cl harness.Cleanups
	defer cl.Run()
	start := time.Now()
	keys, err := publicKeys(ctx, cfg.peers)
	if err != nil {
		return nil, err
	}
	addKeys, err := publicKeys(ctx, 2*cfg.changes)
	if err != nil {
		return nil, err
	}
	db, dsn, token, locID, err := b.bootstrap(ctx, &cl, "replicas_prop")
	if err != nil {
		return nil, err
	}
	if cfg.peers > 0 {
		users := max(1, cfg.peers/10)
		seeded, err := seed(ctx, db, locID, users, keys)
		if err != nil {
			return nil, fmt.Errorf("seed: %w", err)
		}
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
			return nil, fmt.Errorf("vacuum analyze: %w", err)
		}
		b.env.Logf("[replicas propagation] seeded %d devices (%d users) in %s", cfg.peers, users, seeded.elapsed.Round(time.Millisecond))
	}

	// Network: one namespace per gateway (all gateways of a location listen
	// on the location's WireGuard port), each joined to the host by a veth
	// pair with a /30 of a random /24 of 198.18.0.0/15.
	subnet, err := pickReplicaSubnet()
	if err != nil {
		return nil, err
	}
	suffix := netns.RandomSuffix(6)
	gws := make([]*replicaGateway, cfg.gateways)
	for i := range gws {
		ns, err := netns.Create(ctx, "wardbench-")
		if err != nil {
			return nil, err
		}
		cl.Defer(func() {
			if err := ns.Delete(); err != nil {
				b.env.Logf("replicas: %v", err)
			}
		})
		host := fmt.Sprintf("wbrh%s%d", suffix, i)
		peer := fmt.Sprintf("wbrg%s%d", suffix, i)
		base := subnet.Addr().As4()
		hostAddr := netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(4*i + 1)})
		nsAddr := netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(4*i + 2)})
		if err := ipCmd(ctx, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns.Name); err != nil {
			return nil, err
		}
		cl.Defer(func() { _ = exec.Command("ip", "link", "delete", host).Run() })
		for _, c := range [][]string{
			{"addr", "add", hostAddr.String() + "/30", "dev", host},
			{"link", "set", host, "up"},
			{"-n", ns.Name, "addr", "add", nsAddr.String() + "/30", "dev", peer},
			{"-n", ns.Name, "link", "set", peer, "up"},
		} {
			if err := ipCmd(ctx, c...); err != nil {
				return nil, err
			}
		}
		probe := &http.Client{Timeout: 10 * time.Second, Transport: ns.Transport(1)}
		cl.Defer(probe.CloseIdleConnections)
		gm := &gatewayMetrics{client: &http.Client{Timeout: 10 * time.Second, Transport: ns.Transport(1)}, url: "http://" + nsHealthAddr + "/metrics"}
		cl.Defer(gm.client.CloseIdleConnections)
		gws[i] = &replicaGateway{name: fmt.Sprintf("gw%d", i+1), ns: ns, control: net.JoinHostPort(nsAddr.String(), "50066"), metrics: gm, probe: probe}
	}
	b.env.Logf("[replicas propagation] %d network namespaces joined to the host on %s", cfg.gateways, subnet)

	reps := make([]*replica, cfg.replicas)
	if reps[0], err = b.startReplica(ctx, &cl, "core1", dsn, "", token, 2); err != nil {
		return nil, err
	}
	locPath := "/api/v1/locations/" + url.PathEscape(locID)
	revision := func(r *replica) (int64, error) {
		var l struct {
			Revision int64 `json:"revision"`
		}
		err := r.client.JSON(ctx, http.MethodGet, locPath, nil, &l, http.StatusOK)
		return l.Revision, err
	}
	for i, g := range gws {
		var reg struct {
			ID        string `json:"id"`
			JoinToken string `json:"join_token"`
		}
		if err := reps[0].client.JSON(ctx, http.MethodPost, locPath+"/gateways",
			map[string]any{"name": g.name, "control_address": g.control}, &reg, http.StatusCreated); err != nil {
			return nil, err
		}
		g.id = reg.ID
		dir, err := b.env.MkdirTemp("replicas-" + g.name + "-")
		if err != nil {
			return nil, err
		}
		cmd := g.ns.Command(b.bin, "gateway", "--data-dir", dir, "--control-addr", g.control, "--interface", fmt.Sprintf("wbr%s%d", suffix, i),
			"--backend", "userspace", "--health-addr", nsHealthAddr)
		cmd.Env = harness.WardEnv("WARD_JOIN_TOKEN=" + reg.JoinToken)
		p, err := harness.StartProcess("ward gateway "+g.name, cmd, filepath.Join(dir, "gateway.log"))
		if err != nil {
			return nil, err
		}
		cl.Defer(func() { _ = p.Stop() })
		g.proc = p
		if err := waitHTTP(ctx, g.probe, p, "http://"+nsHealthAddr+"/livez", 30*time.Second); err != nil {
			return nil, err
		}
	}
	rev, err := revision(reps[0])
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := b.waitGateways(ctx, gws, rev, cfg.peers, 1, 90*time.Second); err != nil {
		return nil, fmt.Errorf("gateway adoption and first config: %w", err)
	}
	b.env.Logf("[replicas propagation] %d gateways adopted, revision %d with %d peers applied %s after their start",
		len(gws), rev, cfg.peers, time.Since(t0).Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eb1))
	procs := make([]*harness.Process, len(gws))
	for i, g := range gws {
		procs[i] = g.proc
	}
	phase := func(reps []*replica, keys []string) (propPhase, error) {
		c0 := b.readCPU(reps, procs)
		ph, err := b.measurePropagation(ctx, reps, gws, keys, rng, revision)
		if err != nil {
			return ph, err
		}
		c1 := b.readCPU(reps, procs)
		label := fmt.Sprintf("%d replica(s)", len(reps))
		ph.log(b.env, label)
		b.env.Logf("[replicas propagation] %s: %s", label, cpuLine(c0, c1, 2*cfg.changes))
		return ph, nil
	}
	base, err := phase(reps[:1], addKeys[:cfg.changes])
	if err != nil {
		return nil, err
	}

	for i := 1; i < len(reps); i++ {
		if reps[i], err = b.startReplica(ctx, &cl, fmt.Sprintf("core%d", i+1), dsn, "", token, 2); err != nil {
			return nil, err
		}
	}
	if rev, err = revision(reps[0]); err != nil {
		return nil, err
	}
	t0 = time.Now()
	if err := b.waitGateways(ctx, gws, rev, cfg.peers, len(reps), 60*time.Second); err != nil {
		return nil, fmt.Errorf("links of %d replicas: %w", len(reps), err)
	}
	b.env.Logf("[replicas propagation] every gateway linked to all %d replicas %s after they started", len(reps), time.Since(t0).Round(time.Millisecond))
	b.logCluster(ctx, reps[0])
	multi, err := phase(reps, addKeys[cfg.changes:])
	if err != nil {
		return nil, err
	}
	for _, g := range gws {
		s, err := g.metrics.read(ctx)
		if err != nil {
			return nil, err
		}
		if int(s.peers) != cfg.peers {
			return nil, fmt.Errorf("%s has %v peers after the measurement, want %d", g.name, s.peers, cfg.peers)
		}
	}
	b.env.Logf("[replicas propagation] (%s)", time.Since(start).Round(time.Second))

	t := replicasPropRowTemplates(cfg)
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }
	rows := []harness.Row{
		harness.DurationRow("postgres", t[0].Metric, multi.add.P50, targetReplicaPropagationP50),
		harness.DurationRow("postgres", t[1].Metric, multi.add.P99, targetReplicaPropagationP99),
		harness.DurationRow("postgres", propMetric(cfg, 1, "device add", "p50")+" (baseline)", base.add.P50, 0),
		harness.DurationRow("postgres", propMetric(cfg, 1, "device add", "p99")+" (baseline)", base.add.P99, 0),
		{Engine: "postgres", Metric: fmt.Sprintf("  device add p50, %d replicas / 1", cfg.replicas), Value: ratio(multi.add.P50, base.add.P50), Unit: harness.Ratio},
		{Engine: "postgres", Metric: fmt.Sprintf("  device add p99, %d replicas / 1", cfg.replicas), Value: ratio(multi.add.P99, base.add.P99), Unit: harness.Ratio},
		harness.DurationRow("postgres", propMetric(cfg, cfg.replicas, "device delete", "p50"), multi.del.P50, 0),
		harness.DurationRow("postgres", propMetric(cfg, cfg.replicas, "device delete", "p99"), multi.del.P99, 0),
		harness.DurationRow("postgres", propMetric(cfg, 1, "device delete", "p50")+" (baseline)", base.del.P50, 0),
		harness.DurationRow("postgres", propMetric(cfg, 1, "device delete", "p99")+" (baseline)", base.del.P99, 0),
		harness.DurationRow("postgres", fmt.Sprintf("  of which POST /api/v1/devices, %d replicas: p50", cfg.replicas), multi.addAPI.P50, 0),
		harness.DurationRow("postgres", fmt.Sprintf("change known on all %d replicas' links: p50", cfg.replicas), multi.known.P50, 0),
		harness.DurationRow("postgres", fmt.Sprintf("change known on all %d replicas' links: p99", cfg.replicas), multi.known.P99, 0),
	}
	for _, g := range gws {
		if err := g.proc.Stop(); err != nil {
			return rows, err
		}
	}
	for _, r := range reps {
		if err := r.core.Stop(); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// logCluster logs core's own view of the replicas (GET /api/v1/cluster),
// for the record; the bootstrap replica, stopped, stays listed until its
// heartbeat is old.
func (b *replicasBench) logCluster(ctx context.Context, r *replica) {
	var view struct {
		Replicas []struct {
			ID   string `json:"id"`
			Live bool   `json:"live"`
		} `json:"replicas"`
		Leases []struct {
			Name   string `json:"name"`
			Holder string `json:"holder"`
			Held   bool   `json:"held"`
		} `json:"leases"`
	}
	if err := r.client.JSON(ctx, http.MethodGet, "/api/v1/cluster", nil, &view, http.StatusOK); err != nil {
		b.env.Logf("[replicas propagation] cluster view not available: %v", err)
		return
	}
	var live, leases []string
	for _, x := range view.Replicas {
		if x.Live {
			live = append(live, x.ID)
		}
	}
	for _, l := range view.Leases {
		if l.Held {
			leases = append(leases, l.Name+" held by "+l.Holder)
		}
	}
	b.env.Logf("[replicas propagation] GET /api/v1/cluster: %d replicas live (%s); leases: %s", len(live), strings.Join(live, ", "), strings.Join(leases, "; "))
}

// gatewayStatusLinks is what the benchmark reads from a gateway's /status.
type gatewayStatusLinks struct {
	Ready           bool   `json:"ready"`
	AppliedRevision uint64 `json:"applied_revision"`
	CoreLinks       []struct {
		CoreID string `json:"core_id"`
	} `json:"core_links"`
}

func readGatewayStatus(ctx context.Context, c *http.Client) (gatewayStatusLinks, []byte, error) {
	var st gatewayStatusLinks
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nsHealthAddr+"/status", nil)
	if err != nil {
		return st, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return st, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, body, fmt.Errorf("/status: status %d", resp.StatusCode)
	}
	return st, body, json.Unmarshal(body, &st)
}

// waitGateways waits until every gateway is ready at revision rev (or newer)
// with peers peers and links core links.
func (b *replicasBench) waitGateways(ctx context.Context, gws []*replicaGateway, rev int64, peers, links int, timeout time.Duration) error {
	for _, g := range gws {
		if err := g.metrics.waitSynced(ctx, g.proc, rev, peers, timeout); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		deadline := time.Now().Add(timeout)
		for {
			st, _, err := readGatewayStatus(ctx, g.probe)
			if err == nil && len(st.CoreLinks) == links {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s has %d core links, not %d, after %s (err %v); gateway log:\n%s", g.name, len(st.CoreLinks), links, timeout, err, g.proc.LogTail(20))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// linkRevisions reads a replica's /metrics: the revision each gateway
// acknowledged on this replica's stream, by gateway id.
func linkRevisions(ctx context.Context, r *replica) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.core.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", r.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: status %d", r.name, resp.StatusCode)
	}
	const prefix = `ward_gateway_link_applied_revision{gateway_id="`
	out := map[string]int64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		id, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(value), &v); err == nil {
			out[id] = int64(v)
		}
	}
	return out, nil
}

// propPhase is one phase's measurements.
type propPhase struct {
	add, del, addAPI, spread harness.Latency
	// known: until every replica's link to every gateway acknowledged the
	// change (each replica's own ward_gateway_link_applied_revision).
	known harness.Latency
	// perReplica: adds and deletes through each replica.
	perReplica []harness.Latency
	// perGateway: when each gateway applied the change.
	perGateway []harness.Latency
	polls      int
	wall       time.Duration
}

func (p propPhase) log(env *harness.Env, label string) {
	env.Logf("[replicas propagation] %s: %s", label, p.add)
	env.Logf("[replicas propagation] %s: %s", label, p.del)
	env.Logf("[replicas propagation] %s: of which the API call %s", label, p.addAPI)
	env.Logf("[replicas propagation] %s: first to last gateway %s", label, p.spread)
	env.Logf("[replicas propagation] %s: acknowledged on every replica's links %s", label, p.known)
	for _, l := range p.perReplica {
		env.Logf("[replicas propagation] %s: changes made through %s", label, l)
	}
	for _, l := range p.perGateway {
		env.Logf("[replicas propagation] %s: applied on %s", label, l)
	}
	env.Logf("[replicas propagation] %s: %d changes in %s, %d /metrics reads", label, p.add.N+p.del.N, p.wall.Round(time.Millisecond), p.polls)
}

// measurePropagation adds a device per key through the replicas in turn and
// deletes it again (through the next replica), each time timing from the
// start of the API call until every gateway reports the location revision
// that the change committed. The revision is read from the same replica
// right after the call; every gateway's /metrics is polled every cfg.poll,
// concurrently.
func (b *replicasBench) measurePropagation(ctx context.Context, reps []*replica, gws []*replicaGateway, keys []string, rng *rand.Rand,
	revision func(*replica) (int64, error)) (propPhase, error) {
	cfg := b.cfg
	n := len(keys)
	adds, dels, addAPI, spread := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, 0, 2*n)
	known := make([]time.Duration, 0, 2*n)
	perReplica := make([][]time.Duration, len(reps))
	perGateway := make([][]time.Duration, len(gws))
	var polls atomic.Int64
	pause := func() error {
		if cfg.pause == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rng.Int64N(int64(2 * cfg.pause)))):
			return nil
		}
	}
	// waitAll polls every gateway until it shows rev and returns when the
	// last one did, relative to t0.
	waitAll := func(t0 time.Time, rev int64) (time.Duration, error) {
		at := make([]time.Time, len(gws))
		errs := make([]error, len(gws))
		var wg sync.WaitGroup
		for i, g := range gws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var k int
				at[i], k, errs[i] = g.metrics.waitRevision(ctx, g.proc, rev, cfg.poll, 30*time.Second)
				polls.Add(int64(k))
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		first, last := at[0], at[0]
		for i, t := range at {
			perGateway[i] = append(perGateway[i], t.Sub(t0))
			if t.Before(first) {
				first = t
			}
			if t.After(last) {
				last = t
			}
		}
		spread = append(spread, last.Sub(first))
		// Then, outside the figure: until every replica's stream to every
		// gateway has the change acknowledged, i.e. the replicas that did
		// not take the API call have sent it too (woken by the database's
		// notification, or else by their revision poll).
		deadline := time.Now().Add(30 * time.Second)
		for _, r := range reps {
			for {
				revs, err := linkRevisions(ctx, r)
				if err != nil {
					return 0, err
				}
				done := true
				for _, g := range gws {
					if revs[g.id] < rev {
						done = false
					}
				}
				if done {
					break
				}
				if time.Now().After(deadline) {
					return 0, fmt.Errorf("%s: links not at revision %d after 30s: %v", r.name, rev, revs)
				}
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(max(cfg.poll, 2*time.Millisecond)):
				}
			}
		}
		known = append(known, time.Since(t0))
		return last.Sub(t0), nil
	}
	op := 0
	start := time.Now()
	for i, key := range keys {
		if err := pause(); err != nil {
			return propPhase{}, err
		}
		r := reps[op%len(reps)]
		op++
		var dev struct {
			ID string `json:"id"`
		}
		t0 := time.Now()
		if err := r.client.JSON(ctx, http.MethodPost, "/api/v1/devices",
			map[string]any{"name": fmt.Sprintf("prop-%d-%s-%d", len(reps), r.name, i), "public_key": key}, &dev, http.StatusCreated); err != nil {
			return propPhase{}, fmt.Errorf("%s: %w", r.name, err)
		}
		addAPI[i] = time.Since(t0)
		rev, err := revision(r)
		if err != nil {
			return propPhase{}, err
		}
		if adds[i], err = waitAll(t0, rev); err != nil {
			return propPhase{}, fmt.Errorf("add %d through %s: %w", i, r.name, err)
		}
		perReplica[(op-1)%len(reps)] = append(perReplica[(op-1)%len(reps)], adds[i])
		if i == 0 {
			for _, g := range gws {
				if err := checkPeerPresent(ctx, g.probe, key, true); err != nil {
					return propPhase{}, fmt.Errorf("%s: %w", g.name, err)
				}
			}
		}

		if err := pause(); err != nil {
			return propPhase{}, err
		}
		r = reps[op%len(reps)]
		op++
		t0 = time.Now()
		if err := r.client.JSON(ctx, http.MethodDelete, "/api/v1/devices/"+url.PathEscape(dev.ID), nil, nil, http.StatusNoContent); err != nil {
			return propPhase{}, fmt.Errorf("%s: %w", r.name, err)
		}
		if rev, err = revision(r); err != nil {
			return propPhase{}, err
		}
		if dels[i], err = waitAll(t0, rev); err != nil {
			return propPhase{}, fmt.Errorf("delete %d through %s: %w", i, r.name, err)
		}
		perReplica[(op-1)%len(reps)] = append(perReplica[(op-1)%len(reps)], dels[i])
		if i == 0 {
			for _, g := range gws {
				if err := checkPeerPresent(ctx, g.probe, key, false); err != nil {
					return propPhase{}, fmt.Errorf("%s: %w", g.name, err)
				}
			}
		}
	}
	ph := propPhase{
		add:    harness.Summarise("add", adds, 0),
		del:    harness.Summarise("delete", dels, 0),
		addAPI: harness.Summarise("add API", addAPI, 0),
		spread: harness.Summarise("spread", spread, 0),
		known:  harness.Summarise("known", known, 0),
		polls:  int(polls.Load()),
		wall:   time.Since(start),
	}
	for i, d := range perReplica {
		ph.perReplica = append(ph.perReplica, harness.Summarise(reps[i].name, d, 0))
	}
	for i, d := range perGateway {
		ph.perGateway = append(ph.perGateway, harness.Summarise(gws[i].name, d, 0))
	}
	slices.SortFunc(ph.perReplica, func(a, b harness.Latency) int { return strings.Compare(a.Name, b.Name) })
	return ph, nil
}
