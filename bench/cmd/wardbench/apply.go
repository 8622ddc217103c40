package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/netns"
)

// Target of the apply benchmark (issue: "cold apply of 10,000 peers within
// 1.1 times `wg setconf` of the same peers on the same kind of device").
const targetApplyRatio = 1.1

// applyChildCommand is the hidden subcommand the apply benchmark re-executes
// wardbench with, inside its network namespace. It is handled before main
// (see init below), so it is neither listed nor run by `wardbench all`.
const applyChildCommand = "internal-apply-child"

func init() {
	if len(os.Args) > 1 && os.Args[1] == applyChildCommand {
		os.Exit(applyChild(os.Args[2:]))
	}
	register(benchmark{
		name:    "apply",
		summary: "cold apply of 10,000 peers on a userspace WireGuard device: ward's engine vs `wg setconf`",
		run:     runApplyBench,
	})
}

type applyConfig struct {
	peers  int
	rounds int
}

func parseApplyFlags(args []string) (applyConfig, error) {
	var c applyConfig
	fs := flag.NewFlagSet("wardbench apply", flag.ContinueOnError)
	fs.IntVar(&c.peers, "peers", 10000, "peers applied to a fresh device (at most 65000)")
	fs.IntVar(&c.rounds, "rounds", 5, "fresh devices per method; the median is reported (at least 3)")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	switch {
	case c.peers < 1 || c.peers > 65000:
		return c, usageError{errors.New("-peers must be between 1 and 65000")}
	case c.rounds < 3:
		return c, usageError{errors.New("-rounds must be at least 3")}
	}
	return c, nil
}

// applyResult is what the child prints on stdout: one duration per round.
type applyResult struct {
	Engine    []time.Duration `json:"engine"`
	SetConf   []time.Duration `json:"setconf"`
	NoSetConf string          `json:"no_setconf,omitempty"`
}

func applyRowTemplates(peers int) []harness.Row {
	return []harness.Row{
		{Metric: fmt.Sprintf("cold apply %d peers: wgengine Apply", peers), Unit: harness.Millis},
		{Metric: fmt.Sprintf("cold apply %d peers: wg setconf", peers), Unit: harness.Millis},
		{Metric: "cold apply ratio, ours / wg setconf", Unit: harness.Ratio, Target: targetApplyRatio},
	}
}

func runApplyBench(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseApplyFlags(args)
	if err != nil {
		return nil, err
	}
	t := applyRowTemplates(cfg.peers)
	if reason := netns.Unavailable(); reason != "" {
		env.Logf("apply: SKIPPED: %s", reason)
		return harness.SkippedRows("userspace", reason, t), nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := env.MkdirTemp("apply-")
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
			env.Logf("apply: %v", err)
			return
		}
		env.Logf("network namespace %s deleted", ns.Name)
	})
	env.Logf("network namespace %s created", ns.Name)
	// Device names are global in /var/run/wireguard (the UAPI sockets),
	// whatever the namespace: a random prefix keeps runs apart.
	prefix := "wba" + netns.RandomSuffix(6)
	cl.Defer(func() { removeUAPISockets(prefix) })

	cmd := ns.Command(self, applyChildCommand, "-peers", fmt.Sprint(cfg.peers), "-rounds", fmt.Sprint(cfg.rounds),
		"-dir", dir, "-prefix", prefix)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, env.Progress
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("apply child in namespace %s: %w", ns.Name, err)
	}
	var res applyResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("apply child: bad answer %q: %w", stdout.String(), err)
	}
	ours := median(res.Engine)
	env.Logf("[apply] wgengine Apply: %s, median %s", durations(res.Engine), ours.Round(time.Millisecond))
	rows := []harness.Row{harness.DurationRow("userspace", t[0].Metric, ours, 0)}
	if res.NoSetConf != "" {
		env.Logf("apply: baseline SKIPPED: %s", res.NoSetConf)
		return append(rows, harness.SkippedRows("userspace", res.NoSetConf, t[1:])...), nil
	}
	base := median(res.SetConf)
	env.Logf("[apply] wg setconf:      %s, median %s", durations(res.SetConf), base.Round(time.Millisecond))
	rows = append(rows,
		harness.DurationRow("userspace", t[1].Metric, base, 0),
		harness.Row{Engine: "userspace", Metric: t[2].Metric, Value: float64(ours) / float64(base), Unit: harness.Ratio, Target: targetApplyRatio},
	)
	return rows, nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func durations(d []time.Duration) string {
	parts := make([]string, len(d))
	for i, x := range d {
		parts[i] = x.Round(time.Millisecond).String()
	}
	return strings.Join(parts, " ")
}

// removeUAPISockets deletes sockets a killed child may have left behind;
// only names with this run's prefix are touched.
func removeUAPISockets(prefix string) {
	matches, _ := filepath.Glob("/var/run/wireguard/" + prefix + "*.sock")
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

// applyChild runs inside the namespace: for each round a fresh device gets
// the peers through ward's engine, and another fresh device of the same
// kind gets the same peers with `wg setconf` through its UAPI socket.
func applyChild(args []string) int {
	fs := flag.NewFlagSet(applyChildCommand, flag.ContinueOnError)
	peers := fs.Int("peers", 10000, "")
	rounds := fs.Int("rounds", 5, "")
	dir := fs.String("dir", os.TempDir(), "")
	prefix := fs.String("prefix", "wba", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := runApplyChild(*peers, *rounds, *dir, *prefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wardbench apply child: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

func childLogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wardbench %s  [apply] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func runApplyChild(n, rounds int, dir, prefix string) (applyResult, error) {
	var res applyResult
	keys, err := publicKeys(context.Background(), n)
	if err != nil {
		return res, err
	}
	ifaceKey, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return res, err
	}
	network := netip.MustParsePrefix(benchNetwork)
	peers := make([]wgengine.PeerConfig, n)
	var conf strings.Builder
	fmt.Fprintf(&conf, "[Interface]\nPrivateKey = %s\n", ifaceKey)
	for i, k := range keys {
		ip := netip.PrefixFrom(hostAddr(network, int64(i+2)), 32)
		peers[i] = wgengine.PeerConfig{PublicKey: k, AllowedIPs: []netip.Prefix{ip}}
		fmt.Fprintf(&conf, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\n", k, ip)
	}
	confPath := filepath.Join(dir, "setconf.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		return res, err
	}
	wg, err := exec.LookPath("wg")
	if err != nil {
		res.NoSetConf = "needs wg (wireguard-tools) for the baseline"
	}
	iface := wgengine.Interface{PrivateKey: ifaceKey.String(), MTU: 1420, Addresses: []netip.Prefix{netip.PrefixFrom(hostAddr(network, 1), 16)}}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	// newDevice is what `ward gateway --backend userspace --uapi` creates:
	// the TUN device, wireguard-go with a UAPI socket, key, address, up.
	newDevice := func(name string) (*wgengine.Userspace, error) {
		u, err := wgengine.NewUserspace(name, iface.MTU, true, log)
		if err != nil {
			return nil, err
		}
		in := iface
		in.Name = name
		if err := u.Configure(in); err != nil {
			u.Close()
			return nil, err
		}
		return u, nil
	}
	check := func(u *wgengine.Userspace) error {
		got, err := u.Peers()
		if err != nil {
			return err
		}
		if len(got) != n {
			return fmt.Errorf("device has %d peers, want %d", len(got), n)
		}
		last := got[len(got)-1]
		if i := slices.Index(keys, last.PublicKey); i < 0 || !slices.Equal(last.AllowedIPs, peers[i].AllowedIPs) {
			return fmt.Errorf("peer %s on the device does not match what was applied", last.PublicKey)
		}
		return nil
	}
	for r := range rounds {
		// ward's engine: one in-process IpcSet with every peer.
		u, err := newDevice(fmt.Sprintf("%so%d", prefix, r))
		if err != nil {
			return res, err
		}
		runtime.GC()
		t0 := time.Now()
		err = u.Apply(peers, nil)
		d := time.Since(t0)
		if err == nil {
			err = check(u)
		}
		u.Close()
		if err != nil {
			return res, fmt.Errorf("engine apply: %w", err)
		}
		res.Engine = append(res.Engine, d)

		if res.NoSetConf != "" {
			childLogf("round %d: engine %s", r+1, d.Round(time.Millisecond))
			continue
		}
		// The baseline: the same kind of device, the same peers, wg setconf.
		name := fmt.Sprintf("%sw%d", prefix, r)
		u, err = newDevice(name)
		if err != nil {
			return res, err
		}
		runtime.GC()
		t0 = time.Now()
		out, err := exec.Command(wg, "setconf", name, confPath).CombinedOutput()
		ds := time.Since(t0)
		if err != nil {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		} else {
			err = check(u)
		}
		u.Close()
		if err != nil {
			return res, fmt.Errorf("wg setconf: %w", err)
		}
		res.SetConf = append(res.SetConf, ds)
		childLogf("round %d: engine %s, wg setconf %s", r+1, d.Round(time.Millisecond), ds.Round(time.Millisecond))
	}
	return res, nil
}
