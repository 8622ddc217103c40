package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/store"
)

// Targets of the API benchmark (issue: "config reads p99 ≤ 20 ms, RSS ≤
// 300 MB, on both databases").
const (
	targetConfigP99 = 20 * time.Millisecond
	targetCoreRSS   = 300 << 20
)

// The seeded location: a /16 holds the interface (host 1) and up to 65533
// devices (hosts 2..65534).
const (
	benchNetwork  = "10.64.0.0/16"
	benchEndpoint = "vpn.bench.example"
	listPageSize  = 50
)

func init() {
	register(benchmark{
		name:    "api",
		summary: "REST read latency and core RSS with 10,000 users and 50,000 devices, on SQLite and PostgreSQL",
		run:     runAPI,
	})
}

type apiConfig struct {
	engines     []store.Engine
	users       int
	devices     int
	requests    int
	concurrency int
	warmup      int
	seed        uint64
}

func parseAPIFlags(args []string) (apiConfig, error) {
	var c apiConfig
	fs := flag.NewFlagSet("wardbench api", flag.ContinueOnError)
	engines := fs.String("engines", "sqlite,postgres", "comma-separated database engines: sqlite, postgres")
	fs.IntVar(&c.users, "users", 10000, "users to seed")
	fs.IntVar(&c.devices, "devices", 50000, "devices to seed, spread evenly over the users (at most 65533: one /16)")
	fs.IntVar(&c.requests, "requests", 2000, "measured requests per endpoint")
	fs.IntVar(&c.concurrency, "concurrency", 4, "concurrent client connections")
	fs.IntVar(&c.warmup, "warmup", -1, "unmeasured requests per endpoint before measuring (-1: requests/10, at most 200)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the random offsets and device picks")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	var err error
	if c.engines, err = parseEngines(*engines); err != nil {
		return c, err
	}
	switch {
	case c.users < 1:
		return c, usageError{errors.New("-users must be at least 1")}
	case c.devices < listPageSize || c.devices > 65533:
		return c, usageError{fmt.Errorf("-devices must be between %d and 65533 (one /16)", listPageSize)}
	case c.requests < 1:
		return c, usageError{errors.New("-requests must be at least 1")}
	case c.concurrency < 1:
		return c, usageError{errors.New("-concurrency must be at least 1")}
	}
	if c.warmup < 0 {
		c.warmup = min(200, c.requests/10)
	}
	return c, nil
}

func runAPI(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseAPIFlags(args)
	if err != nil {
		return nil, err
	}
	bin, err := env.WardBinary(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	keys, err := publicKeys(ctx, cfg.devices)
	if err != nil {
		return nil, err
	}
	env.Logf("generated %d WireGuard key pairs in %s", len(keys), time.Since(start).Round(time.Millisecond))
	return perEngine(ctx, cfg.engines, func(engine store.Engine) ([]harness.Row, error) {
		return apiEngine(ctx, env, cfg, engine, bin, keys)
	})
}

// apiEngine runs the benchmark on one engine: bootstrap through ward core,
// bulk seed with SQL while core is stopped, restart core, measure.
func apiEngine(ctx context.Context, env *harness.Env, cfg apiConfig, engine store.Engine, bin string, keys []string) ([]harness.Row, error) {
	var cl harness.Cleanups
	defer cl.Run()
	name := string(engine)
	env.Logf("[%s] preparing the database", name)
	dataDir, err := env.MkdirTemp(name + "-")
	if err != nil {
		return nil, err
	}
	dsn := ""
	if engine == store.Postgres {
		pg, err := env.Postgres(ctx, &cl)
		if err != nil {
			return nil, err
		}
		if dsn, err = pg.CreateDatabase(ctx, "wardbench", ""); err != nil {
			return nil, err
		}
	}
	db, closeDB, err := harness.OpenMigrated(ctx, &cl, dsn, dataDir)
	if err != nil {
		return nil, err
	}

	// First start: core bootstraps the admin, the bench takes an API token
	// and creates the location through the API like an operator would.
	opts := harness.CoreOptions{Binary: bin, DataDir: dataDir, Database: dsn, LogPath: dataDir + "/core.log"}
	first, client, _, err := harness.BootstrapCore(ctx, &cl, opts, cfg.concurrency)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	token, err := client.CreateToken(ctx, "wardbench")
	if err != nil {
		return nil, err
	}
	var loc struct {
		ID        string   `json:"id"`
		Addresses []string `json:"addresses"`
	}
	if err := client.JSON(ctx, http.MethodPost, "/api/v1/locations",
		map[string]any{"name": "bench", "addresses": []string{benchNetwork}, "endpoint": benchEndpoint}, &loc, http.StatusCreated); err != nil {
		return nil, err
	}
	if err := first.Stop(); err != nil {
		return nil, fmt.Errorf("stop ward core after bootstrap: %w", err)
	}
	client.Close()

	// Bulk seed with core stopped.
	env.Logf("[%s] seeding %d users and %d devices", name, cfg.users, cfg.devices)
	seeded, err := seed(ctx, db, loc.ID, cfg.users, keys)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	env.Logf("[%s] seeded in %s", name, seeded.elapsed.Round(time.Millisecond))
	if engine == store.Postgres {
		// Autovacuum would vacuum and analyze the new rows within a minute
		// or two; do it now so that it cannot start in the middle of the
		// measurement and the plans are those of a settled database.
		// (SQLite is left without statistics, as ward leaves it.)
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
			return nil, fmt.Errorf("vacuum analyze: %w", err)
		}
	}
	closeDB()

	// Second start on the seeded database: measure.
	opts.AdminPassword = ""
	startAt := time.Now()
	second, err := harness.StartCore(ctx, opts)
	if err != nil {
		return nil, err
	}
	startup := time.Since(startAt)
	cl.Defer(func() { _ = second.Stop() })
	env.Logf("[%s] ward core (pid %d) ready on the seeded database in %s", name, second.PID(), startup.Round(time.Millisecond))
	client = harness.NewClient(second.URL, cfg.concurrency)
	defer client.Close()
	client.Token = token
	if err := checkSeed(ctx, client, cfg, loc.ID, seeded); err != nil {
		return nil, fmt.Errorf("seeded data does not read back: %w", err)
	}
	idle, err := second.Memory()
	if err != nil {
		return nil, err
	}

	rng := rand.New(rand.NewPCG(cfg.seed, uint64(len(name))))
	total := cfg.warmup + cfg.requests
	offsets := make([]int, total)
	picks := make([]int, total)
	for i := range total {
		offsets[i] = rng.IntN(cfg.devices - listPageSize + 1)
		picks[i] = rng.IntN(cfg.devices)
	}
	locPath := "/api/v1/locations/" + url.PathEscape(loc.ID)
	wantLoc := []byte(`"id":"` + loc.ID + `"`)
	endpoints := []struct {
		name string
		do   func(ctx context.Context, i int) error
	}{
		{"device list", func(ctx context.Context, i int) error {
			_, err := fetch(ctx, client, fmt.Sprintf("/api/v1/devices?limit=%d&offset=%d", listPageSize, offsets[i]), []byte(`"total":`))
			return err
		}},
		{"device config", func(ctx context.Context, i int) error {
			d := picks[i]
			path := "/api/v1/devices/" + url.PathEscape(seeded.deviceIDs[d]) + "/config?location=" + url.QueryEscape(loc.ID)
			_, err := fetch(ctx, client, path, []byte("Address = "+seeded.addresses[d]+"/32\n"))
			return err
		}},
		{"location config", func(ctx context.Context, i int) error {
			_, err := fetch(ctx, client, locPath, wantLoc)
			return err
		}},
	}
	results := map[string]harness.Latency{}
	for _, ep := range endpoints {
		warm := func(ctx context.Context, i int) error { return ep.do(ctx, cfg.requests+i) }
		if _, err := harness.Measure(ctx, ep.name+" warmup", cfg.warmup, cfg.concurrency, warm); err != nil {
			return nil, err
		}
		cpu0, err := second.CPU()
		if err != nil {
			return nil, err
		}
		lat, err := harness.Measure(ctx, ep.name, cfg.requests, cfg.concurrency, ep.do)
		if err != nil {
			return nil, err
		}
		cpu1, err := second.CPU()
		if err != nil {
			return nil, err
		}
		results[ep.name] = lat
		// Core CPU per request hardly depends on what else the machine runs,
		// unlike the latencies; the load average tells how busy it was.
		env.Logf("[%s] %s  core CPU %.2fms/req  load %s", name, lat, float64(cpu1-cpu0)/1e6/float64(lat.N), harness.LoadAverage())
	}
	mem, err := second.Memory()
	if err != nil {
		return nil, err
	}
	env.Logf("[%s] core RSS %.1f MB idle after start, %.1f MB after load, peak %.1f MB",
		name, float64(idle.RSS)/(1<<20), float64(mem.RSS)/(1<<20), float64(mem.Peak)/(1<<20))
	if err := second.Stop(); err != nil {
		return nil, err
	}

	seedLabel := fmt.Sprintf("seed %d users + %d devices (SQL)", cfg.users, cfg.devices)
	rows := []harness.Row{
		harness.DurationRow(name, "device config p50", results["device config"].P50, 0),
		harness.DurationRow(name, "device config p99", results["device config"].P99, targetConfigP99),
		harness.DurationRow(name, "location config p50", results["location config"].P50, 0),
		harness.DurationRow(name, "location config p99", results["location config"].P99, targetConfigP99),
		harness.DurationRow(name, "device list p50", results["device list"].P50, 0),
		harness.DurationRow(name, "device list p99", results["device list"].P99, 0),
		harness.BytesRow(name, "core RSS after load (VmRSS)", mem.RSS, targetCoreRSS),
		harness.BytesRow(name, "core RSS peak (VmHWM)", mem.Peak, targetCoreRSS),
		{Engine: name, Metric: seedLabel, Value: seeded.elapsed.Seconds(), Unit: harness.Seconds},
		harness.DurationRow(name, "core start, seeded database", startup, 0),
	}
	return rows, nil
}

// fetch GETs path and checks the status and that the body contains want.
func fetch(ctx context.Context, c *harness.Client, path string, want []byte) ([]byte, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", path, resp.StatusCode, bytes.TrimSpace(body))
	}
	if !bytes.Contains(body, want) {
		return nil, fmt.Errorf("GET %s: answer lacks %q: %.300s", path, want, body)
	}
	return body, nil
}

// checkSeed verifies through the API that core sees what was seeded.
func checkSeed(ctx context.Context, c *harness.Client, cfg apiConfig, locID string, s seedResult) error {
	var page struct {
		Total int `json:"total"`
	}
	if err := c.JSON(ctx, http.MethodGet, "/api/v1/devices?limit=1", nil, &page, http.StatusOK); err != nil {
		return err
	}
	if page.Total != cfg.devices {
		return fmt.Errorf("device list total is %d, seeded %d", page.Total, cfg.devices)
	}
	var users struct {
		Total int `json:"total"`
	}
	if err := c.JSON(ctx, http.MethodGet, "/api/v1/users?limit=1", nil, &users, http.StatusOK); err != nil {
		return err
	}
	if users.Total != cfg.users+1 {
		return fmt.Errorf("user list total is %d, seeded %d plus admin", users.Total, cfg.users)
	}
	last := len(s.deviceIDs) - 1
	_, err := fetch(ctx, c, "/api/v1/devices/"+s.deviceIDs[last]+"/config?location="+url.QueryEscape(locID),
		[]byte("Address = "+s.addresses[last]+"/32\n"))
	return err
}
