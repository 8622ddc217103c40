package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

func init() {
	register(benchmark{
		name:    "stats",
		summary: "statistics samples per second core ingests (10,000-sample gateway reports), on SQLite and PostgreSQL",
		run:     runStatsBench,
	})
}

type statsConfig struct {
	engines []store.Engine
	peers   int
	users   int
	batches int
	// contended reports are ingested while devices are added, to see how
	// long an API write waits for a report.
	contended int
	seed      uint64
}

func parseStatsFlags(args []string) (statsConfig, error) {
	var c statsConfig
	fs := flag.NewFlagSet("wardbench stats", flag.ContinueOnError)
	engines := fs.String("engines", "sqlite,postgres", "comma-separated database engines: sqlite, postgres")
	fs.IntVar(&c.peers, "peers", 10000, "devices seeded, and samples per report (one per device)")
	fs.IntVar(&c.users, "users", 1000, "users the seeded devices are spread over")
	fs.IntVar(&c.batches, "batches", 20, "measured reports per engine, after one unmeasured first report")
	fs.IntVar(&c.contended, "contended", 3, "further reports ingested while devices are added, to measure how long a device add waits (0: skip)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the random pauses between device adds")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	var err error
	if c.engines, err = parseEngines(*engines); err != nil {
		return c, err
	}
	switch {
	case c.peers < 1 || c.peers > 65000:
		return c, usageError{errors.New("-peers must be between 1 and 65000 (one /16)")}
	case c.users < 1:
		return c, usageError{errors.New("-users must be at least 1")}
	case c.batches < 1:
		return c, usageError{errors.New("-batches must be at least 1")}
	case c.contended < 0:
		return c, usageError{errors.New("-contended must not be negative")}
	}
	return c, nil
}

func runStatsBench(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseStatsFlags(args)
	if err != nil {
		return nil, err
	}
	keys, err := publicKeys(ctx, cfg.peers)
	if err != nil {
		return nil, err
	}
	return perEngine(ctx, cfg.engines, func(engine store.Engine) ([]harness.Row, error) {
		return statsEngine(ctx, env, cfg, engine, keys)
	})
}

// statsEngine ingests gateway reports with stats.Service.Ingest, in this
// process, on a migrated database with the location and its devices seeded.
func statsEngine(ctx context.Context, env *harness.Env, cfg statsConfig, engine store.Engine, keys []string) ([]harness.Row, error) {
	var cl harness.Cleanups
	defer cl.Run()
	name := string(engine)
	dataDir, err := env.MkdirTemp("stats-" + name + "-")
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
	db, err := store.Open(ctx, dsn, dataDir)
	if err != nil {
		return nil, err
	}
	cl.Defer(func() { db.Close() })
	if err := db.Migrate(ctx, nil); err != nil {
		return nil, err
	}
	locName, network, endpoint := "bench", benchNetwork, benchEndpoint
	vpnSvc := vpn.New(db, nil)
	actor := core.SystemActor("wardbench")
	loc, err := vpnSvc.CreateLocation(ctx, actor,
		vpn.LocationInput{Name: &locName, Addresses: &[]string{network}, Endpoint: &endpoint})
	if err != nil {
		return nil, fmt.Errorf("create location: %w", err)
	}
	seeded, err := seed(ctx, db, loc.ID, cfg.users, keys)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if engine == store.Postgres {
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
			return nil, fmt.Errorf("vacuum analyze: %w", err)
		}
	}
	env.Logf("[%s] stats: seeded %d devices in %s", name, len(keys), seeded.elapsed.Round(time.Millisecond))

	// One gateway reporting every peer of the location, all of them active:
	// counters grow in every report and every peer has a recent handshake,
	// the most work a report of this size can cause.
	svc := stats.New(db)
	gatewayID, bootID := core.NewID(), core.NewID()
	samples := make([]stats.Sample, len(keys))
	for i, k := range keys {
		samples[i] = stats.Sample{PublicKey: k, Generation: 1, Endpoint: fmt.Sprintf("198.51.100.%d:%d", i%250+1, 20000+i%40000)}
	}
	report := func(seq uint64) stats.Report {
		now := time.Now().UnixMilli()
		for i := range samples {
			s := &samples[i]
			s.RxBytes += uint64(1500 + i%4096)
			s.TxBytes += uint64(9000 + i%8192)
			s.LastHandshake = now - int64(i%120)*1000
		}
		return stats.Report{GatewayID: gatewayID, LocationID: loc.ID, BootID: bootID, Seq: seq, At: now, Samples: samples}
	}
	ingest := func(seq uint64) (time.Duration, error) {
		r := report(seq)
		t0 := time.Now()
		ok, err := svc.Ingest(ctx, r)
		d := time.Since(t0)
		if err == nil && !ok {
			err = fmt.Errorf("report %d was taken for a duplicate", seq)
		}
		return d, err
	}
	first, err := ingest(1)
	if err != nil {
		return nil, fmt.Errorf("first report: %w", err)
	}
	env.Logf("[%s] stats: first report (starts every series, no usage yet) %d samples in %s", name, len(samples), first.Round(time.Millisecond))
	times := make([]time.Duration, cfg.batches)
	var total time.Duration
	for b := range cfg.batches {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d, err := ingest(uint64(b + 2))
		if err != nil {
			return nil, fmt.Errorf("report %d: %w", b+2, err)
		}
		times[b] = d
		total += d
	}
	// A duplicate (another core replica, or a retry) must be recognised.
	if ok, err := svc.Ingest(ctx, report(uint64(cfg.batches+1))); err != nil || ok {
		return nil, fmt.Errorf("duplicate report: ingested=%v err=%v", ok, err)
	}
	rate := float64(cfg.batches*len(samples)) / total.Seconds()
	lat := harness.Summarise("report", times, total)
	env.Logf("[%s] stats: %d reports of %d samples: %.0f samples/s; per report p50 %s, max %s; load %s",
		name, cfg.batches, len(samples), rate, lat.P50.Round(time.Millisecond), lat.Max.Round(time.Millisecond), harness.LoadAverage())
	rows := []harness.Row{
		{Engine: name, Metric: fmt.Sprintf("stats ingest, %d-sample reports", len(samples)), Value: rate, Unit: harness.Samples},
		harness.DurationRow(name, fmt.Sprintf("stats ingest, one %d-sample report: p50", len(samples)), lat.P50, 0),
	}
	if cfg.contended == 0 {
		return rows, nil
	}

	// Device adds (what POST /api/v1/devices runs) at random moments while
	// further reports are ingested, 250 ms apart. A write that arrives
	// during a report may wait for it: the max shows how long.
	var owner string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users ORDER BY id LIMIT 1`).Scan(&owner); err != nil {
		return nil, err
	}
	addKeys, err := publicKeys(ctx, 1000)
	if err != nil {
		return nil, err
	}
	ingested := make(chan error, 1)
	go func() {
		for b := range cfg.contended {
			// A pause between reports, as between the reports of one
			// gateway, so writes also find the database free.
			time.Sleep(250 * time.Millisecond)
			if _, err := ingest(uint64(cfg.batches + 2 + b)); err != nil {
				ingested <- err
				return
			}
		}
		ingested <- nil
	}()
	rng := rand.New(rand.NewPCG(cfg.seed, 0x57a7))
	var adds []time.Duration
	var ingestErr error
	running := true
	for i := 0; running && i < len(addKeys); i++ {
		select {
		case ingestErr = <-ingested:
			running = false
			continue
		case <-time.After(time.Duration(rng.Int64N(int64(40 * time.Millisecond)))):
		}
		t0 := time.Now()
		_, err := vpnSvc.CreateDevice(ctx, actor, vpn.NewDevice{Name: fmt.Sprintf("contended-%d", i), PublicKey: addKeys[i], UserID: owner})
		if err != nil {
			return nil, fmt.Errorf("device add during ingest: %w", err)
		}
		adds = append(adds, time.Since(t0))
	}
	if running {
		ingestErr = <-ingested
	}
	if ingestErr != nil {
		return nil, fmt.Errorf("contended report: %w", ingestErr)
	}
	if len(adds) == 0 {
		return rows, nil
	}
	al := harness.Summarise("device add", adds, 0)
	env.Logf("[%s] stats: during %d more reports, %s", name, cfg.contended, al)
	return append(rows,
		harness.DurationRow(name, "device add while reports are ingested: p50", al.P50, 0),
		harness.DurationRow(name, "device add while reports are ingested: max", al.Max, 0),
	), nil
}
