// Package drill is `ward drill`: a failover drill in network namespaces.
// It builds a router, two gateway nodes sharing a floating IP through
// keepalived (VRRPv3, adverts every 100 ms), ward core and proxy, and two
// clients (`ward client` and a stock wg-quick), then measures the outage
// each client sees (ping every 50 ms through the tunnel) when the active
// gateway dies (kill), hands over in a planned switchover, or dies while
// core is down (core-down), for ward's gateways and for a baseline of plain
// wireguard-go gateways with the same keys, peers, addressing and
// keepalived. Everything runs inside namespaces the drill creates and is
// removed at the end.
package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Scenarios and clients the drill knows, in table order.
var (
	AllScenarios = []string{scKill, scSwitchover, scCoreDown}
	AllClients   = []string{clientWard, clientWGQuick}
)

// Options configure a drill.
type Options struct {
	Runs      int
	Scenarios []string
	Clients   []string
	Baseline  bool
	// Cap bounds every outage measurement (the baseline's reach it).
	Cap time.Duration
	// Keep leaves namespaces and processes up at the end, for debugging.
	Keep bool
	// Self is the ward binary for core, gateways, proxy and client.
	Self string
	// Log gets progress lines.
	Log io.Writer
}

// Drill is one run of the drill.
type Drill struct {
	opts   Options
	self   string
	id     string
	dir    string
	topo   *Topology
	report *Report
	// wardErr says what the ward binary lacks for the ward side (nil: it
	// has everything).
	wardErr error

	core, proxy *Proc
	api         *apiClient
	loc         apiLocation
	gwID        [2]string
	gwDataDir   [2]string
	gw          [2]*Proc // the running gateway program of each node
	phase       *phase

	wqKey, wqConfig string
	wardKey         string
	devID           map[string]string // by client kind
	cfgHome         string
	baseConf        string
}

func (d *Drill) logf(format string, args ...any) {
	fmt.Fprintf(d.opts.Log, "drill: "+format+"\n", args...)
}

func (d *Drill) wants(client string) bool { return slices.Contains(d.opts.Clients, client) }

// Unavailable tells why the drill cannot run on this machine ("" if it can).
func Unavailable() string {
	if runtime.GOOS != "linux" {
		return "the drill needs Linux (network namespaces)"
	}
	if os.Geteuid() != 0 {
		return "the drill needs root (network namespaces, TUN devices, keepalived)"
	}
	if st, err := os.Stat("/dev/net/tun"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return "the drill needs /dev/net/tun"
	}
	var missing []string
	for _, p := range [][2]string{{"ip", "iproute2"}, {"keepalived", "keepalived"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"wireguard-go", "wireguard-go"}, {"ping", "iputils-ping"}} {
		if _, err := exec.LookPath(p[0]); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", p[0], p[1]))
		}
	}
	if len(missing) > 0 {
		return "the drill needs " + strings.Join(missing, ", ") + "; scripts/install-deps.sh installs them"
	}
	return ""
}

// checkWardFeatures asks the ward binary for what the ward side needs:
// `ward gateway --floating-ip`, `ward gateway notify` and `ward gateway
// healthcheck`.
func checkWardFeatures(ctx context.Context, self string) error {
	var missing []string
	out, _ := exec.CommandContext(ctx, self, "gateway", "-h").CombinedOutput()
	if !strings.Contains(string(out), "floating-ip") {
		missing = append(missing, "`ward gateway --floating-ip`")
	}
	for _, sub := range []string{"notify", "healthcheck"} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := exec.CommandContext(cctx, self, "gateway", sub, "--help").Run()
		cancel()
		if err != nil {
			missing = append(missing, "`ward gateway "+sub+"`")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("this ward binary (%s) has no %s: the ward side of the drill needs them (gateway takeover on the floating IP, keepalived notify hook and track script)",
			self, strings.Join(missing, ", "))
	}
	return nil
}

// Validate checks the options (a usage error) and fills defaults.
func (o *Options) Validate() error {
	if o.Runs < 1 {
		return errors.New("--runs must be at least 1")
	}
	if o.Cap < 5*time.Second {
		return errors.New("--baseline-cap must be at least 5s")
	}
	if len(o.Scenarios) == 0 || len(o.Clients) == 0 {
		return errors.New("name at least one scenario and one client")
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return fmt.Errorf("unknown scenario %q (known: %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	for _, c := range o.Clients {
		if !slices.Contains(AllClients, c) {
			return fmt.Errorf("unknown client %q (known: %s)", c, strings.Join(AllClients, ", "))
		}
	}
	if o.Self == "" {
		return errors.New("no ward binary")
	}
	if strings.ContainsAny(o.Self, " \t\"'") {
		return fmt.Errorf("the ward binary's path %q has spaces or quotes, which keepalived scripts cannot take", o.Self)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	// Table order, whatever order the flags gave.
	o.Scenarios = ordered(AllScenarios, o.Scenarios)
	o.Clients = ordered(AllClients, o.Clients)
	return nil
}

func ordered(all, some []string) []string {
	var out []string
	for _, s := range all {
		if slices.Contains(some, s) {
			out = append(out, s)
		}
	}
	return out
}

var errInterrupted = errors.New("interrupted")

// Run runs the drill. The report holds what was measured even when an
// error says that some of it could not be; a missed target is not an
// error.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if why := Unavailable(); why != "" {
		return nil, errors.New(why)
	}
	start := time.Now()
	keepChildren = o.Keep
	d := &Drill{opts: o, self: o.Self, id: randomHex(6), report: newReport(o), devID: map[string]string{}}
	rep := d.report
	var err error
	if d.dir, err = os.MkdirTemp("", "ward-drill-"); err != nil {
		return nil, err
	}
	d.wardErr = checkWardFeatures(ctx, d.self)
	if d.wardErr != nil {
		d.logf("ward side unavailable: %v", d.wardErr)
	}
	defer func() {
		rep.Took = time.Since(start)
		if o.Keep {
			d.logf("--keep: everything stays up; namespaces %s; files in %s", strings.Join(d.topoNames(), " "), d.dir)
			return
		}
		d.cleanup()
	}()

	setupFailed := func(err error) (*Report, error) {
		rep.fail(sysBaseline, "", err)
		rep.fail(sysWard, "", err)
		return rep, err
	}
	d.logf("building the topology (run id %s, files in %s)", d.id, d.dir)
	if d.topo, err = buildTopology(ctx, d.id); err != nil {
		return setupFailed(fmt.Errorf("topology: %w", err))
	}
	d.logf("starting core, registering two gateways and the clients")
	if err := d.setupControlPlane(ctx); err != nil {
		return setupFailed(fmt.Errorf("control plane: %w", err))
	}
	var saved *savedLocation
	if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "gateway saved every client's peer", func() (err error) {
		saved, err = d.readSavedLocation()
		return err
	}); err != nil {
		return setupFailed(err)
	}
	var errs []error
	if o.Baseline {
		// The ward gateways (adopted, config saved) make way for wireguard-go.
		for i := range 2 {
			d.gw[i].Stop(10 * time.Second)
		}
		if err := d.writeBaselineConf(saved); err != nil {
			return setupFailed(err)
		}
		if err := d.runPhase(ctx, sysBaseline, d.wardErr != nil); err != nil {
			rep.fail(sysBaseline, "", err)
			errs = append(errs, err)
		}
	}
	if ctx.Err() != nil {
		rep.fail(sysWard, "", errInterrupted)
		return rep, errInterrupted
	}
	if d.wardErr != nil {
		rep.fail(sysWard, "", d.wardErr)
		errs = append(errs, d.wardErr)
	} else {
		if !o.Baseline {
			for i := range 2 {
				d.gw[i].Stop(10 * time.Second)
			}
		}
		if err := d.runPhase(ctx, sysWard, true); err != nil {
			rep.fail(sysWard, "", err)
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

func (d *Drill) topoNames() []string {
	if d.topo == nil {
		return nil
	}
	return d.topo.names()
}

// cleanup stops every process the drill started (by PID), deletes the
// namespaces, this run's UAPI socket files and the directory.
func (d *Drill) cleanup() {
	if d.phase != nil {
		d.phase.teardown()
	}
	for i := range 2 {
		if d.gw[i] != nil {
			d.gw[i].Stop(10 * time.Second)
		}
	}
	for _, p := range []*Proc{d.proxy, d.core} {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	if d.topo != nil {
		if err := d.topo.destroy(); err != nil {
			d.logf("cleanup: %v", err)
		}
	}
	d.removeSockets()
	if err := os.RemoveAll(d.dir); err != nil {
		d.logf("cleanup: %v", err)
	}
}

// WriteJSON writes the report as JSON (for scripts and the e2e test).
func (r *Report) WriteJSON(w io.Writer) error {
	doc := struct {
		Runs       int               `json:"runs"`
		CapSeconds float64           `json:"cap_seconds"`
		Rows       []Row             `json:"rows"`
		Notes      []string          `json:"notes"`
		Errors     map[string]string `json:"errors"`
		TookSecs   float64           `json:"took_seconds"`
	}{r.Runs, r.Cap.Seconds(), r.Rows(), r.Notes(), r.Errors(), r.Took.Seconds()}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
