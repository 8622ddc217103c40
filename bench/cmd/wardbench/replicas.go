package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/netns"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

// Targets of the replicas benchmark (issue #6, acceptance item 4: API
// requests per second with 1 vs 2 core replicas on one PostgreSQL, and change
// propagation to 3 gateways with 3 replicas).
//
//   - Throughput: two replicas must not lose against one: ≥ 0.9 × the one
//     replica figure. Client, PostgreSQL and the replicas share the 2 cores
//     of the benchmark machine, so no scaling can show there; the target
//     checks that running two costs nothing (no lock contention, no
//     duplicated work per request), not that it doubles.
//   - Propagation: the same targets as the single-replica propagation of the
//     gateway benchmark (API call to change applied, p50 ≤ 50 ms, p99 ≤
//     200 ms), now until every gateway of the location has applied it.
const (
	targetReplicaThroughputRatio = 0.9
	targetReplicaPropagationP50  = 50 * time.Millisecond
	targetReplicaPropagationP99  = 200 * time.Millisecond
)

// replicaNet is where the gateways' namespaces are joined to the host:
// 198.18.0.0/15 is reserved for benchmarking network devices (RFC 2544), so
// it is not in use on an ordinary machine. Each run takes a random /24 of it
// and one /30 per gateway.
var replicaNet = netip.MustParsePrefix("198.18.0.0/15")

func init() {
	register(benchmark{
		name:    "replicas",
		summary: "core replicas on one PostgreSQL: API requests/s with 1 vs 2 replicas; propagation to 3 gateways with 3 replicas vs 1",
		run:     runReplicas,
	})
}

type replicasConfig struct {
	parts map[string]bool
	// API throughput.
	users, devices int
	concurrency    int
	duration       time.Duration
	warmup         time.Duration
	rounds         int
	writes         int
	// Propagation.
	replicas, gateways int
	peers              int
	changes            int
	poll, pause        time.Duration
	seed               uint64
}

func parseReplicasFlags(args []string) (replicasConfig, error) {
	var c replicasConfig
	fs := flag.NewFlagSet("wardbench replicas", flag.ContinueOnError)
	parts := fs.String("parts", "api,propagation", "comma-separated parts to run: api (requests/s, 1 vs 2 replicas), propagation (3 gateways, 3 replicas vs 1)")
	fs.IntVar(&c.users, "users", 5000, "api: users to seed")
	fs.IntVar(&c.devices, "devices", 10000, "api: devices to seed, spread evenly over the users (at most 65533)")
	fs.IntVar(&c.concurrency, "concurrency", 8, "api: concurrent client connections (closed loop)")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "api: length of each measured run")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "api: unmeasured load on both replicas before the first run")
	fs.IntVar(&c.rounds, "rounds", 3, "api: rounds of (1 replica, 2 replicas) runs, alternating")
	fs.IntVar(&c.writes, "writes", 5, "api: percent of requests that are writes (PATCH of a device's description)")
	fs.IntVar(&c.replicas, "replicas", 3, "propagation: core replicas in the measured phase (the baseline has 1)")
	fs.IntVar(&c.gateways, "gateways", 3, "propagation: gateways of the location, each in its own network namespace")
	fs.IntVar(&c.peers, "peers", 1000, "propagation: devices seeded in the location before the measurement")
	fs.IntVar(&c.changes, "changes", 100, "propagation: measured device adds per phase; each is followed by a measured delete")
	fs.DurationVar(&c.poll, "poll", time.Millisecond, "propagation: pause between two reads of a gateway's /metrics while waiting")
	fs.DurationVar(&c.pause, "pause", 50*time.Millisecond, "propagation: mean random pause before each change (uniform in [0, 2*pause))")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the request mix and the pauses")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	c.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		switch p = strings.TrimSpace(p); p {
		case "api", "propagation":
			c.parts[p] = true
		case "":
		default:
			return c, usageError{fmt.Errorf("-parts: unknown part %q (api, propagation)", p)}
		}
	}
	switch {
	case len(c.parts) == 0:
		return c, usageError{errors.New("-parts: name at least one part")}
	case c.users < 1:
		return c, usageError{errors.New("-users must be at least 1")}
	case c.devices < listPageSize || c.devices > 65533:
		return c, usageError{fmt.Errorf("-devices must be between %d and 65533 (one /16)", listPageSize)}
	case c.concurrency < 1:
		return c, usageError{errors.New("-concurrency must be at least 1")}
	case c.duration < 100*time.Millisecond:
		return c, usageError{errors.New("-duration must be at least 100ms")}
	case c.warmup < 0:
		return c, usageError{errors.New("-warmup must not be negative")}
	case c.rounds < 1:
		return c, usageError{errors.New("-rounds must be at least 1")}
	case c.writes < 0 || c.writes > 100:
		return c, usageError{errors.New("-writes must be a percentage")}
	case c.replicas < 2 || c.replicas > 9:
		return c, usageError{errors.New("-replicas must be between 2 and 9")}
	case c.gateways < 1 || c.gateways > 32:
		return c, usageError{errors.New("-gateways must be between 1 and 32")}
	case c.peers < 0 || c.peers > 60000:
		return c, usageError{errors.New("-peers must be between 0 and 60000")}
	case c.changes < 1:
		return c, usageError{errors.New("-changes must be at least 1")}
	case c.pause < 0 || c.poll < 0:
		return c, usageError{errors.New("-pause and -poll must not be negative")}
	}
	return c, nil
}

func replicasAPIRowTemplates() []harness.Row {
	return []harness.Row{
		{Engine: "postgres", Metric: "API requests, 2 replicas / 1 replica", Unit: harness.Ratio, Target: targetReplicaThroughputRatio, AtLeast: true},
	}
}

func replicasPropRowTemplates(cfg replicasConfig) []harness.Row {
	return []harness.Row{
		{Engine: "postgres", Metric: propMetric(cfg, cfg.replicas, "device add", "p50"), Unit: harness.Millis, Target: millis(targetReplicaPropagationP50)},
		{Engine: "postgres", Metric: propMetric(cfg, cfg.replicas, "device add", "p99"), Unit: harness.Millis, Target: millis(targetReplicaPropagationP99)},
	}
}

func propMetric(cfg replicasConfig, replicas int, what, pct string) string {
	r := "replicas"
	if replicas == 1 {
		r = "replica"
	}
	return fmt.Sprintf("propagation to %d gateways, %d %s, %s: %s", cfg.gateways, replicas, r, what, pct)
}

func runReplicas(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseReplicasFlags(args)
	if err != nil {
		return nil, err
	}
	skip := func(part string, reason string) []harness.Row {
		env.Logf("replicas %s: SKIPPED: %s", part, reason)
		if part == "api" {
			return harness.SkippedRows("postgres", reason, replicasAPIRowTemplates())
		}
		return harness.SkippedRows("postgres", reason, replicasPropRowTemplates(cfg))
	}
	if _, err := storetest.FindPGBin("initdb"); err != nil {
		reason := "needs the PostgreSQL server binaries (run ./scripts/install-deps.sh as root)"
		var rows []harness.Row
		for _, p := range []string{"api", "propagation"} {
			if cfg.parts[p] {
				rows = append(rows, skip(p, reason)...)
			}
		}
		return rows, nil
	}
	var rows []harness.Row
	runProp := cfg.parts["propagation"]
	if reason := netns.Unavailable(); runProp && reason != "" {
		rows = append(rows, skip("propagation", reason)...)
		runProp = false
	}
	if !cfg.parts["api"] && !runProp {
		return rows, nil
	}
	bin, err := env.WardBinary(ctx)
	if err != nil {
		return nil, err
	}
	var cl harness.Cleanups
	defer cl.Run()
	pg, err := env.Postgres(ctx, &cl)
	if err != nil {
		return nil, err
	}
	r := &replicasBench{env: env, cfg: cfg, bin: bin, pg: pg, pgPID: harness.PostmasterPID(pg.Port())}
	var errs []error
	if cfg.parts["api"] {
		apiRows, err := r.api(ctx)
		rows = append(rows, apiRows...)
		if err != nil {
			errs = append(errs, fmt.Errorf("api: %w", err))
		}
	}
	if runProp && ctx.Err() == nil {
		propRows, err := r.propagation(ctx)
		rows = append(rows, propRows...)
		if err != nil {
			errs = append(errs, fmt.Errorf("propagation: %w", err))
		}
	}
	return rows, errors.Join(errs...)
}

type replicasBench struct {
	env   *harness.Env
	cfg   replicasConfig
	bin   string
	pg    *storetest.PGServer
	pgPID int
}

// replica is one `ward core` on the shared database with its API client.
type replica struct {
	name   string
	core   *harness.Core
	client *harness.Client
}

// startReplica starts a core on the shared database in a data dir of its own
// (each replica has its own core id there) and registers its stop with cl.
func (b *replicasBench) startReplica(ctx context.Context, cl *harness.Cleanups, name, dsn, adminPassword, token string, conns int) (*replica, error) {
	dir, err := b.env.MkdirTemp("replicas-" + name + "-")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c, err := harness.StartCore(ctx, harness.CoreOptions{Binary: b.bin, DataDir: dir, Database: dsn, AdminPassword: adminPassword,
		LogPath: filepath.Join(dir, "core.log")})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cl.Defer(func() { _ = c.Stop() })
	b.env.Logf("[replicas] %s (pid %d) ready on %s in %s", name, c.PID(), c.URL, time.Since(start).Round(time.Millisecond))
	client := harness.NewClient(c.URL, conns)
	client.Token = token
	cl.Defer(client.Close)
	return &replica{name: name, core: c, client: client}, nil
}

// bootstrap creates a database, starts a first core on it with an admin
// password, takes an API token and creates the location `bench`; that core
// is stopped again so the caller can seed with SQL. It returns the open
// database, its URL, the token and the location id.
func (b *replicasBench) bootstrap(ctx context.Context, cl *harness.Cleanups, dbName string) (*store.DB, string, string, string, error) {
	dsn, err := b.pg.CreateDatabase(ctx, dbName, "")
	if err != nil {
		return nil, "", "", "", err
	}
	db, err := store.Open(ctx, dsn, b.env.TmpDir)
	if err != nil {
		return nil, "", "", "", err
	}
	cl.Defer(func() { db.Close() })
	if err := db.Migrate(ctx, nil); err != nil {
		return nil, "", "", "", err
	}
	adminPassword := "Bench-" + core.RandomToken(18)
	var boot harness.Cleanups
	defer boot.Run()
	first, err := b.startReplica(ctx, &boot, "bootstrap", dsn, adminPassword, "", 2)
	if err != nil {
		return nil, "", "", "", err
	}
	if err := first.client.Login(ctx, "admin", adminPassword); err != nil {
		return nil, "", "", "", fmt.Errorf("log in as admin: %w", err)
	}
	token, err := first.client.CreateToken(ctx, "wardbench")
	if err != nil {
		return nil, "", "", "", err
	}
	var loc struct {
		ID string `json:"id"`
	}
	if err := first.client.JSON(ctx, http.MethodPost, "/api/v1/locations",
		map[string]any{"name": "bench", "addresses": []string{benchNetwork}, "endpoint": benchEndpoint}, &loc, http.StatusCreated); err != nil {
		return nil, "", "", "", err
	}
	if err := first.core.Stop(); err != nil {
		return nil, "", "", "", fmt.Errorf("stop ward core after bootstrap: %w", err)
	}
	return db, dsn, token, loc.ID, nil
}

// cpuSplit is the CPU time of every process of a run and of the machine.
type cpuSplit struct {
	at       time.Time
	cores    []time.Duration
	switches []int64 // context switches of each core (voluntary + not)
	gateways []time.Duration
	postgres time.Duration
	client   time.Duration
	machine  harness.MachineCPU
}

func (b *replicasBench) readCPU(cores []*replica, gateways []*harness.Process) cpuSplit {
	s := cpuSplit{at: time.Now()}
	for _, r := range cores {
		d, _ := r.core.CPU()
		s.cores = append(s.cores, d)
		s.switches = append(s.switches, contextSwitches(r.core.PID()))
	}
	for _, g := range gateways {
		d, _ := harness.ReadCPU(g.PID())
		s.gateways = append(s.gateways, d)
	}
	if b.pgPID != 0 {
		s.postgres, _ = harness.ProcessTreeCPU(b.pgPID)
	}
	s.client, _ = harness.ReadCPU(os.Getpid())
	s.machine, _ = harness.ReadMachineCPU()
	return s
}

// cpuLine says how the machine's CPU time was split between the processes
// between two snapshots, as a share of the machine (100% = every CPU busy)
// and per operation.
func cpuLine(before, after cpuSplit, ops int) string {
	capacity := float64(after.at.Sub(before.at)) * float64(runtime.NumCPU())
	share := func(d time.Duration) string {
		if capacity <= 0 {
			return "-"
		}
		s := fmt.Sprintf("%.0f%%", 100*float64(d)/capacity)
		if ops > 0 {
			s += fmt.Sprintf(" (%.3fms/op)", float64(d)/1e6/float64(ops))
		}
		return s
	}
	var parts []string
	var ours time.Duration
	for i := range after.cores {
		d := after.cores[i] - before.cores[i]
		ours += d
		parts = append(parts, fmt.Sprintf("core%d %s", i+1, share(d)))
	}
	for i := range after.gateways {
		d := after.gateways[i] - before.gateways[i]
		ours += d
		parts = append(parts, fmt.Sprintf("gw%d %s", i+1, share(d)))
	}
	var sw int64
	for i := range after.switches {
		sw += after.switches[i] - before.switches[i]
	}
	if ops > 0 {
		parts = append(parts, fmt.Sprintf("core context switches %.2f/op", float64(sw)/float64(ops)))
	}
	pg := after.postgres - before.postgres
	cli := after.client - before.client
	ours += pg + cli
	parts = append(parts, "postgres "+share(pg), "wardbench "+share(cli))
	busy := after.machine.BusySince(before.machine)
	other := 0.0
	if capacity > 0 {
		other = max(0, busy-float64(ours)/capacity)
	}
	return fmt.Sprintf("CPU: %s; machine %.0f%% busy, other processes %.0f%%; load %s",
		strings.Join(parts, ", "), 100*busy, 100*other, harness.LoadAverage())
}

// contextSwitches is a process's voluntary plus involuntary context
// switches, summed over its threads (/proc/PID/task/*/status).
func contextSwitches(pid int) int64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, v, ok := strings.Cut(line, ":")
			if ok && (name == "voluntary_ctxt_switches" || name == "nonvoluntary_ctxt_switches") {
				var x int64
				_, _ = fmt.Sscan(strings.TrimSpace(v), &x)
				n += x
			}
		}
	}
	return n
}

// api measures the same request mix against 1 replica and against 2
// replicas taken round-robin per request, in alternating runs.
func (b *replicasBench) api(ctx context.Context) ([]harness.Row, error) {
	cfg := b.cfg
	var cl harness.Cleanups
	defer cl.Run()
	start := time.Now()
	keys, err := publicKeys(ctx, cfg.devices)
	if err != nil {
		return nil, err
	}
	db, dsn, token, locID, err := b.bootstrap(ctx, &cl, "replicas_api")
	if err != nil {
		return nil, err
	}
	seeded, err := seed(ctx, db, locID, cfg.users, keys)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if _, err := db.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, fmt.Errorf("vacuum analyze: %w", err)
	}
	b.env.Logf("[replicas api] seeded %d users and %d devices in %s", cfg.users, cfg.devices, seeded.elapsed.Round(time.Millisecond))

	reps := make([]*replica, 2)
	for i := range reps {
		if reps[i], err = b.startReplica(ctx, &cl, fmt.Sprintf("core%d", i+1), dsn, "", token, cfg.concurrency); err != nil {
			return nil, err
		}
		var page struct {
			Total int `json:"total"`
		}
		if err := reps[i].client.JSON(ctx, http.MethodGet, "/api/v1/devices?limit=1", nil, &page, http.StatusOK); err != nil {
			return nil, err
		}
		if page.Total != cfg.devices {
			return nil, fmt.Errorf("%s: device list total %d, seeded %d", reps[i].name, page.Total, cfg.devices)
		}
	}

	// The request mix: reads of single objects and of list pages, with
	// cfg.writes percent of PATCHes (a device's description: one UPDATE and
	// an audit entry, no gateway change). Shares out of 100 for the reads:
	// device config 30, device 20, location 20, device list page 15, user
	// list page 15.
	locPath := "/api/v1/locations/" + url.PathEscape(locID)
	wantLoc := []byte(`"id":"` + locID + `"`)
	total := []byte(`"total":`)
	var writes atomic.Int64
	rngs := make([]*rand.Rand, cfg.concurrency)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(cfg.seed, uint64(i)))
	}
	request := func(ctx context.Context, c *harness.Client, rng *rand.Rand) error {
		d := rng.IntN(len(seeded.deviceIDs))
		devPath := "/api/v1/devices/" + url.PathEscape(seeded.deviceIDs[d])
		if rng.IntN(100) < cfg.writes {
			n := writes.Add(1)
			return c.JSON(ctx, http.MethodPatch, devPath, map[string]any{"description": fmt.Sprintf("wardbench write %d", n)}, nil, http.StatusOK)
		}
		var err error
		switch k := rng.IntN(100); {
		case k < 30:
			_, err = fetch(ctx, c, devPath+"/config?location="+url.QueryEscape(locID), []byte("Address = "+seeded.addresses[d]+"/32\n"))
		case k < 50:
			_, err = fetch(ctx, c, devPath, []byte(`"id":"`+seeded.deviceIDs[d]+`"`))
		case k < 70:
			_, err = fetch(ctx, c, locPath, wantLoc)
		case k < 85:
			_, err = fetch(ctx, c, fmt.Sprintf("/api/v1/devices?limit=%d&offset=%d", listPageSize, rng.IntN(cfg.devices-listPageSize+1)), total)
		default:
			_, err = fetch(ctx, c, fmt.Sprintf("/api/v1/users?limit=%d&offset=%d", listPageSize, rng.IntN(max(1, cfg.users+1-listPageSize+1))), total)
		}
		return err
	}
	run := func(name string, targets []*replica, d time.Duration) (harness.LoadResult, error) {
		var next atomic.Uint64
		return harness.Load(ctx, name, cfg.concurrency, d, 0, func(ctx context.Context, w int) error {
			// Round-robin per request, as a load balancer spreads them.
			r := targets[(next.Add(1)-1)%uint64(len(targets))]
			return request(ctx, r.client, rngs[w])
		})
	}
	if cfg.warmup > 0 {
		if _, err := run("warmup", reps, cfg.warmup); err != nil {
			return nil, err
		}
	}
	type agg struct {
		requests, errors int
		wall             time.Duration
		durations        []time.Duration
		cpu0, cpu1       []cpuSplit
	}
	results := map[int]*agg{1: {}, 2: {}}
	for round := range cfg.rounds {
		for _, n := range []int{1, 2} {
			// The single replica alternates between the two, so a difference
			// between the processes cancels out.
			targets := reps
			label := "2 replicas"
			if n == 1 {
				targets = reps[round%2 : round%2+1]
				label = "1 replica (" + targets[0].name + ")"
			}
			c0 := b.readCPU(reps, nil)
			res, err := run(label, targets, cfg.duration)
			if err != nil {
				return nil, err
			}
			c1 := b.readCPU(reps, nil)
			b.env.Logf("[replicas api] round %d, %s  errors=%d", round+1, res.Latency, res.Errors)
			b.env.Logf("[replicas api]   %s", cpuLine(c0, c1, res.N))
			for _, e := range res.ErrorSamples {
				b.env.Logf("[replicas api]   error: %s", e)
			}
			a := results[n]
			a.requests += res.N
			a.errors += res.Errors
			a.wall += res.Wall
			a.cpu0 = append(a.cpu0, c0)
			a.cpu1 = append(a.cpu1, c1)
			if res.Errors*100 > res.Total() {
				return nil, fmt.Errorf("%s: %d of %d requests failed, e.g. %v", label, res.Errors, res.Total(), res.ErrorSamples)
			}
		}
	}
	// Throughput over all rounds of each setting.
	rps := func(n int) float64 { return float64(results[n].requests) / results[n].wall.Seconds() }
	one, two := rps(1), rps(2)
	b.env.Logf("[replicas api] over %d rounds of %s: 1 replica %.0f req/s, 2 replicas %.0f req/s, ratio %.2f; %d writes; load %s",
		cfg.rounds, cfg.duration, one, two, two/one, writes.Load(), harness.LoadAverage())
	b.env.Logf("[replicas api] (%s)", time.Since(start).Round(time.Second))

	// CPU per request of every process, summed over the rounds.
	perReq := func(n int) (coreMS, pgMS, cliMS, busy float64) {
		a := results[n]
		var coreT, pgT, cliT time.Duration
		var busySum float64
		for i := range a.cpu0 {
			for j := range a.cpu1[i].cores {
				coreT += a.cpu1[i].cores[j] - a.cpu0[i].cores[j]
			}
			pgT += a.cpu1[i].postgres - a.cpu0[i].postgres
			cliT += a.cpu1[i].client - a.cpu0[i].client
			busySum += a.cpu1[i].machine.BusySince(a.cpu0[i].machine)
		}
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 / float64(max(1, a.requests)) }
		return ms(coreT), ms(pgT), ms(cliT), busySum / float64(len(a.cpu0))
	}
	var rows []harness.Row
	rows = append(rows,
		harness.Row{Engine: "postgres", Metric: "API requests, 1 replica", Value: one, Unit: harness.PerSec},
		harness.Row{Engine: "postgres", Metric: "API requests, 2 replicas (round-robin)", Value: two, Unit: harness.PerSec},
		harness.Row{Engine: "postgres", Metric: replicasAPIRowTemplates()[0].Metric, Value: two / one, Unit: harness.Ratio,
			Target: targetReplicaThroughputRatio, AtLeast: true},
	)
	for _, n := range []int{1, 2} {
		coreMS, pgMS, cliMS, busy := perReq(n)
		label := "1 replica"
		if n == 2 {
			label = "2 replicas"
		}
		b.env.Logf("[replicas api] %s: CPU per request core(s) %.3f ms, postgres %.3f ms, wardbench %.3f ms; machine %.0f%% busy",
			label, coreMS, pgMS, cliMS, 100*busy)
		rows = append(rows,
			harness.Row{Engine: "postgres", Metric: "  CPU per request, " + label + ": core(s)", Value: coreMS, Unit: harness.Millis},
			harness.Row{Engine: "postgres", Metric: "  CPU per request, " + label + ": postgres", Value: pgMS, Unit: harness.Millis},
		)
	}
	rows = append(rows, harness.Row{Engine: "postgres", Metric: "API errors (non-2xx or failed)", Value: float64(results[1].errors + results[2].errors), Unit: harness.Count})
	for _, r := range reps {
		if err := r.core.Stop(); err != nil {
			return rows, err
		}
	}
	return rows, nil
}
