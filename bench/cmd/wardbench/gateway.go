package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/netns"
)

// Targets of the gateway benchmark (issue: "propagation latency from API call
// to peer present on the gateway with 10,000 existing peers ≤ 50 ms p50 /
// 200 ms p99; gateway RSS per peer ≤ 30 KB").
const (
	targetPropagationP50 = 50 * time.Millisecond
	targetPropagationP99 = 200 * time.Millisecond
	targetRSSPerPeerKB   = 30
)

// Inside the benchmark's own network namespace nothing else listens, so the
// addresses are fixed.
const (
	nsCoreAddr    = "127.0.0.1:8000"
	nsControlAddr = "127.0.0.1:50066"
	nsHealthAddr  = "127.0.0.1:50067"
)

func init() {
	register(benchmark{
		name:    "gateway",
		summary: "API-to-gateway propagation latency and gateway RSS per peer with 10,000 peers (userspace WireGuard, network namespace)",
		run:     runGatewayBench,
	})
}

type gatewayBenchConfig struct {
	peers         int
	users         int
	changes       int
	poll          time.Duration
	pause         time.Duration
	statsInterval time.Duration
	seed          uint64
}

func parseGatewayFlags(args []string) (gatewayBenchConfig, error) {
	var c gatewayBenchConfig
	fs := flag.NewFlagSet("wardbench gateway", flag.ContinueOnError)
	fs.IntVar(&c.peers, "peers", 10000, "devices seeded in the gateway's location before the measurement (at most 65000)")
	fs.IntVar(&c.users, "users", 1000, "users the seeded devices are spread over")
	fs.IntVar(&c.changes, "changes", 200, "measured device adds; each is followed by a measured delete of the same device")
	fs.DurationVar(&c.poll, "poll", time.Millisecond, "pause between two reads of the gateway's /metrics while waiting for a revision")
	fs.DurationVar(&c.pause, "pause", 50*time.Millisecond, "mean random pause before each change (uniform in [0, 2*pause)), so changes land at random moments of the gateway's statistics cycle")
	fs.DurationVar(&c.statsInterval, "stats-interval", 10*time.Second, "the gateway's --stats-interval (10s is its default)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the random pauses")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	switch {
	case c.peers < 1 || c.peers > 65000:
		return c, usageError{errors.New("-peers must be between 1 and 65000 (one /16)")}
	case c.users < 1:
		return c, usageError{errors.New("-users must be at least 1")}
	case c.changes < 1:
		return c, usageError{errors.New("-changes must be at least 1")}
	case c.pause < 0:
		return c, usageError{errors.New("-pause must not be negative")}
	case c.statsInterval < 100*time.Millisecond:
		return c, usageError{errors.New("-stats-interval must be at least 100ms")}
	}
	return c, nil
}

func gatewayRowTemplates(peers int) []harness.Row {
	return []harness.Row{
		{Engine: "sqlite", Metric: fmt.Sprintf("propagation, device add, %d peers: p50", peers), Unit: harness.Millis, Target: millis(targetPropagationP50)},
		{Engine: "sqlite", Metric: fmt.Sprintf("propagation, device add, %d peers: p99", peers), Unit: harness.Millis, Target: millis(targetPropagationP99)},
		{Metric: fmt.Sprintf("gateway RSS per peer (%d peers vs 0)", peers), Unit: harness.KB, Target: targetRSSPerPeerKB},
	}
}

func millis(d time.Duration) float64 { return float64(d) / 1e6 }

func runGatewayBench(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseGatewayFlags(args)
	if err != nil {
		return nil, err
	}
	if reason := netns.Unavailable(); reason != "" {
		env.Logf("gateway: SKIPPED: %s", reason)
		return harness.SkippedRows("userspace", reason, gatewayRowTemplates(cfg.peers)), nil
	}
	bin, err := env.WardBinary(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := publicKeys(ctx, cfg.peers)
	if err != nil {
		return nil, err
	}
	// Keys of the devices added during the measurement, made up front.
	addKeys, err := publicKeys(ctx, cfg.changes)
	if err != nil {
		return nil, err
	}

	var cl harness.Cleanups
	defer cl.Run()
	ns, err := netns.Create(ctx, "wardbench-")
	if err != nil {
		return nil, err
	}
	cl.Defer(func() {
		if err := ns.Delete(); err != nil {
			env.Logf("gateway: %v", err)
			return
		}
		env.Logf("network namespace %s deleted", ns.Name)
	})
	env.Logf("network namespace %s created", ns.Name)
	coreDir, err := env.MkdirTemp("gateway-core-")
	if err != nil {
		return nil, err
	}
	gwDir, err := env.MkdirTemp("gateway-gw-")
	if err != nil {
		return nil, err
	}
	iface := "wbg" + netns.RandomSuffix(8)

	db, closeDB, err := harness.OpenMigrated(ctx, &cl, "", coreDir)
	if err != nil {
		return nil, err
	}

	client := harness.NewClient("http://"+nsCoreAddr, 2)
	client.HTTP.Transport = ns.Transport(2)
	defer client.Close()
	probe := &http.Client{Timeout: 10 * time.Second, Transport: ns.Transport(1)}
	defer probe.CloseIdleConnections()
	gm := &gatewayMetrics{client: &http.Client{Timeout: 10 * time.Second, Transport: ns.Transport(1)}, url: "http://" + nsHealthAddr + "/metrics"}
	defer gm.client.CloseIdleConnections()

	startCore := func(adminPassword string) (*harness.Process, error) {
		cmd := ns.Command(bin, "core", "--data-dir", coreDir, "--http-addr", nsCoreAddr, "--public-url", "http://"+nsCoreAddr)
		var extra []string
		if adminPassword != "" {
			extra = append(extra, "WARD_ADMIN_PASSWORD="+adminPassword)
		}
		cmd.Env = harness.WardEnv(extra...)
		p, err := harness.StartProcess("ward core", cmd, filepath.Join(coreDir, "core.log"))
		if err != nil {
			return nil, err
		}
		cl.Defer(func() { _ = p.Stop() })
		if err := waitHTTP(ctx, probe, p, "http://"+nsCoreAddr+"/readyz", 90*time.Second); err != nil {
			_ = p.Stop()
			return nil, err
		}
		return p, nil
	}
	startGateway := func(joinToken string) (*harness.Process, error) {
		cmd := ns.Command(bin, "gateway", "--data-dir", gwDir, "--control-addr", nsControlAddr, "--interface", iface,
			"--backend", "userspace", "--health-addr", nsHealthAddr, "--stats-interval", cfg.statsInterval.String())
		var extra []string
		if joinToken != "" {
			extra = append(extra, "WARD_JOIN_TOKEN="+joinToken)
		}
		cmd.Env = harness.WardEnv(extra...)
		p, err := harness.StartProcess("ward gateway", cmd, filepath.Join(gwDir, "gateway.log"))
		if err != nil {
			return nil, err
		}
		cl.Defer(func() { _ = p.Stop() })
		if err := waitHTTP(ctx, probe, p, "http://"+nsHealthAddr+"/livez", 30*time.Second); err != nil {
			_ = p.Stop()
			return nil, err
		}
		return p, nil
	}

	// Bootstrap: admin, API token, location and the gateway's registration
	// through the API, then the gateway adopts itself with its join token
	// and applies the location with no peers: the 0-peer RSS.
	adminPassword := "Bench-" + core.RandomToken(18)
	core1, err := startCore(adminPassword)
	if err != nil {
		return nil, err
	}
	if err := client.Login(ctx, "admin", adminPassword); err != nil {
		return nil, fmt.Errorf("log in as admin: %w", err)
	}
	token, err := client.CreateToken(ctx, "wardbench")
	if err != nil {
		return nil, err
	}
	client.Token = token
	var loc struct {
		ID       string `json:"id"`
		Revision int64  `json:"revision"`
	}
	if err := client.JSON(ctx, http.MethodPost, "/api/v1/locations",
		map[string]any{"name": "bench", "addresses": []string{benchNetwork}, "endpoint": benchEndpoint}, &loc, http.StatusCreated); err != nil {
		return nil, err
	}
	locPath := "/api/v1/locations/" + url.PathEscape(loc.ID)
	var reg struct {
		ID        string `json:"id"`
		JoinToken string `json:"join_token"`
	}
	if err := client.JSON(ctx, http.MethodPost, locPath+"/gateways",
		map[string]any{"name": "bench-gw", "control_address": nsControlAddr}, &reg, http.StatusCreated); err != nil {
		return nil, err
	}
	revision := func() (int64, error) {
		var l struct {
			Revision int64 `json:"revision"`
		}
		err := client.JSON(ctx, http.MethodGet, locPath, nil, &l, http.StatusOK)
		return l.Revision, err
	}
	gw1, err := startGateway(reg.JoinToken)
	if err != nil {
		return nil, err
	}
	rev, err := revision()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := gm.waitSynced(ctx, gw1, rev, 0, 90*time.Second); err != nil {
		return nil, fmt.Errorf("gateway adoption and first config: %w", err)
	}
	env.Logf("[gateway] adopted with its join token, revision %d (0 peers) applied %s after start", rev, time.Since(start).Round(time.Millisecond))
	rss0, err := settledRSS(ctx, env, gw1.PID(), "0 peers")
	if err != nil {
		return nil, err
	}
	if err := gw1.Stop(); err != nil {
		return nil, err
	}
	if err := core1.Stop(); err != nil {
		return nil, err
	}
	client.Close()

	// Seed with core stopped, as the api benchmark does.
	env.Logf("[gateway] seeding %d devices (%d users) in the location", cfg.peers, cfg.users)
	seeded, err := seed(ctx, db, loc.ID, cfg.users, keys)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	env.Logf("[gateway] seeded in %s", seeded.elapsed.Round(time.Millisecond))
	closeDB()

	// The gateway first (it restores its 0-peer config from disk), then
	// core, which dials it at once and sends the 10,000-peer snapshot.
	gw2, err := startGateway("")
	if err != nil {
		return nil, err
	}
	start = time.Now()
	core2, err := startCore("")
	if err != nil {
		return nil, err
	}
	if rev, err = revision(); err != nil {
		return nil, err
	}
	if err := gm.waitSynced(ctx, gw2, rev, cfg.peers, 180*time.Second); err != nil {
		return nil, fmt.Errorf("initial sync of %d peers: %w", cfg.peers, err)
	}
	env.Logf("[gateway] %d peers (revision %d) applied %s after the gateway and core started",
		cfg.peers, rev, time.Since(start).Round(time.Millisecond))
	rssN, err := settledRSS(ctx, env, gw2.PID(), fmt.Sprintf("%d peers", cfg.peers))
	if err != nil {
		return nil, err
	}
	perPeerKB := float64(rssN-rss0) / float64(cfg.peers) / 1024
	peak, err := harness.ReadMemory(gw2.PID())
	if err != nil {
		return nil, err
	}
	env.Logf("[gateway] RSS %.1f MB with 0 peers, %.1f MB with %d peers (peak %.1f MB): %.1f KB per peer",
		float64(rss0)/(1<<20), float64(rssN)/(1<<20), cfg.peers, float64(peak.Peak)/(1<<20), perPeerKB)

	// Propagation: add a device through the API, read the location revision
	// its transaction committed, and wait until the gateway reports that
	// revision applied; then delete the device the same way.
	scrapeCPU0, _ := harness.ReadCPU(gw2.PID())
	adds := make([]time.Duration, cfg.changes)
	dels := make([]time.Duration, cfg.changes)
	addAPI := make([]time.Duration, cfg.changes)
	delAPI := make([]time.Duration, cfg.changes)
	scrapes := 0
	rng := rand.New(rand.NewPCG(cfg.seed, 0x9a7e))
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
	measureStart := time.Now()
	for i := range cfg.changes {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var dev struct {
			ID string `json:"id"`
		}
		if err := pause(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := client.JSON(ctx, http.MethodPost, "/api/v1/devices",
			map[string]any{"name": fmt.Sprintf("prop-%d", i), "public_key": addKeys[i]}, &dev, http.StatusCreated); err != nil {
			return nil, err
		}
		addAPI[i] = time.Since(t0)
		want, err := revision()
		if err != nil {
			return nil, err
		}
		at, n, err := gm.waitRevision(ctx, gw2, want, cfg.poll, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("add %d: %w", i, err)
		}
		adds[i] = at.Sub(t0)
		scrapes += n
		if i == 0 {
			// Once, outside the timing: the peer really is on the device.
			if err := checkPeerPresent(ctx, probe, addKeys[i], true); err != nil {
				return nil, err
			}
		}

		if err := pause(); err != nil {
			return nil, err
		}
		t0 = time.Now()
		if err := client.JSON(ctx, http.MethodDelete, "/api/v1/devices/"+url.PathEscape(dev.ID), nil, nil, http.StatusNoContent); err != nil {
			return nil, err
		}
		delAPI[i] = time.Since(t0)
		if want, err = revision(); err != nil {
			return nil, err
		}
		at, n, err = gm.waitRevision(ctx, gw2, want, cfg.poll, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("delete %d: %w", i, err)
		}
		dels[i] = at.Sub(t0)
		scrapes += n
		if i == 0 {
			if err := checkPeerPresent(ctx, probe, addKeys[i], false); err != nil {
				return nil, err
			}
		}
	}
	wall := time.Since(measureStart)
	scrapeCPU1, _ := harness.ReadCPU(gw2.PID())
	addLat := harness.Summarise("add", adds, 0)
	delLat := harness.Summarise("delete", dels, 0)
	addAPILat := harness.Summarise("add API", addAPI, 0)
	delAPILat := harness.Summarise("delete API", delAPI, 0)
	env.Logf("[gateway] propagation %s", addLat)
	env.Logf("[gateway] propagation %s", delLat)
	env.Logf("[gateway] of which the API call %s", addAPILat)
	env.Logf("[gateway] of which the API call %s", delAPILat)
	env.Logf("[gateway] %d changes in %s, %d /metrics reads; gateway CPU %s during the loop; load %s",
		2*cfg.changes, wall.Round(time.Millisecond), scrapes, (scrapeCPU1 - scrapeCPU0).Round(time.Millisecond), harness.LoadAverage())
	peers, err := gm.read(ctx)
	if err != nil {
		return nil, err
	}
	if int(peers.peers) != cfg.peers {
		return nil, fmt.Errorf("gateway has %v peers after the loop, want %d", peers.peers, cfg.peers)
	}
	if err := gw2.Stop(); err != nil {
		return nil, err
	}
	if err := core2.Stop(); err != nil {
		return nil, err
	}

	t := gatewayRowTemplates(cfg.peers)
	rows := []harness.Row{
		harness.DurationRow("sqlite", t[0].Metric, addLat.P50, targetPropagationP50),
		harness.DurationRow("sqlite", t[1].Metric, addLat.P99, targetPropagationP99),
		harness.DurationRow("sqlite", fmt.Sprintf("propagation, device delete, %d peers: p50", cfg.peers), delLat.P50, 0),
		harness.DurationRow("sqlite", fmt.Sprintf("propagation, device delete, %d peers: p99", cfg.peers), delLat.P99, 0),
		harness.DurationRow("sqlite", "  of which POST /api/v1/devices: p50", addAPILat.P50, 0),
		{Engine: "userspace", Metric: t[2].Metric, Value: perPeerKB, Unit: harness.KB, Target: targetRSSPerPeerKB},
		harness.BytesRow("userspace", "gateway RSS, 0 peers", rss0, 0),
		harness.BytesRow("userspace", fmt.Sprintf("gateway RSS, %d peers", cfg.peers), rssN, 0),
	}
	return rows, nil
}

// waitHTTP polls url until it answers 200, the process exits or timeout.
func waitHTTP(ctx context.Context, c *http.Client, p *harness.Process, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.Name, p.ExitError(), p.LogTail(40))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; log:\n%s", p.Name, timeout, p.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gatewayMetrics reads the gateway's /metrics.
type gatewayMetrics struct {
	client *http.Client
	url    string
	buf    bytes.Buffer
}

type gatewaySample struct {
	revision, peers, ready float64
}

func (m *gatewayMetrics) read(ctx context.Context) (gatewaySample, error) {
	var s gatewaySample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return s, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	m.buf.Reset()
	if _, err := m.buf.ReadFrom(resp.Body); err != nil {
		return s, err
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET %s: status %d", m.url, resp.StatusCode)
	}
	found := 0
	sc := bufio.NewScanner(&m.buf)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' || !bytes.HasPrefix(line, []byte("ward_gateway_")) {
			continue
		}
		name, value, ok := strings.Cut(string(line), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "ward_gateway_applied_revision":
			dst = &s.revision
		case "ward_gateway_peers":
			dst = &s.peers
		case "ward_gateway_ready":
			dst = &s.ready
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
			return s, fmt.Errorf("metric %s: %w", name, err)
		}
		found++
	}
	if found < 3 {
		return s, fmt.Errorf("GET %s: ward_gateway_applied_revision, _peers or _ready missing", m.url)
	}
	return s, nil
}

// waitSynced waits until the gateway is ready with revision rev (or newer)
// and peers peers applied.
func (m *gatewayMetrics) waitSynced(ctx context.Context, p *harness.Process, rev int64, peers int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last gatewaySample
	var lastErr error
	for {
		select {
		case <-p.Exited():
			return fmt.Errorf("ward gateway exited (%v); log:\n%s", p.ExitError(), p.LogTail(40))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		s, err := m.read(ctx)
		if err == nil && s.ready == 1 && int64(s.revision) >= rev && int(s.peers) == peers {
			return nil
		}
		last, lastErr = s, err
		if time.Now().After(deadline) {
			return fmt.Errorf("not synced after %s (want revision %d with %d peers; last read: revision %v, %v peers, ready %v, err %v); gateway log:\n%s",
				timeout, rev, peers, last.revision, last.peers, last.ready, lastErr, p.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRevision reads /metrics every poll until the applied revision reaches
// rev and returns when the read that showed it came back, and the number of
// reads.
func (m *gatewayMetrics) waitRevision(ctx context.Context, p *harness.Process, rev int64, poll, timeout time.Duration) (time.Time, int, error) {
	deadline := time.Now().Add(timeout)
	for n := 1; ; n++ {
		s, err := m.read(ctx)
		now := time.Now()
		if err != nil {
			return now, n, err
		}
		if int64(s.revision) >= rev {
			return now, n, nil
		}
		if now.After(deadline) {
			return now, n, fmt.Errorf("gateway at revision %v, not %d, after %s; gateway log:\n%s", s.revision, rev, timeout, p.LogTail(20))
		}
		select {
		case <-p.Exited():
			return now, n, fmt.Errorf("ward gateway exited (%v); log:\n%s", p.ExitError(), p.LogTail(40))
		case <-ctx.Done():
			return now, n, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// checkPeerPresent reads the gateway's /status (every peer on the device)
// and checks whether key is there.
func checkPeerPresent(ctx context.Context, c *http.Client, key string, want bool) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nsHealthAddr+"/status", nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if got := bytes.Contains(body, []byte(`"public_key":"`+key+`"`)); got != want {
		return fmt.Errorf("gateway /status: peer %s present=%v after its revision was applied, want %v", key, got, want)
	}
	return nil
}

// settledRSS samples VmRSS every 500 ms for 4 s once the config is applied
// and returns the smallest, so garbage the apply left (freed at the next GC,
// returned to the OS by the scavenger) does not count.
func settledRSS(ctx context.Context, env *harness.Env, pid int, label string) (int64, error) {
	var samples []int64
	for i := range 9 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		m, err := harness.ReadMemory(pid)
		if err != nil {
			return 0, err
		}
		samples = append(samples, m.RSS)
	}
	mb := make([]string, len(samples))
	for i, s := range samples {
		mb[i] = fmt.Sprintf("%.1f", float64(s)/(1<<20))
	}
	env.Logf("[gateway] RSS with %s, every 500 ms: %s MB", label, strings.Join(mb, " "))
	return slices.Min(samples), nil
}
