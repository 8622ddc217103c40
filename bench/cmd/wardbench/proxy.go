package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpnsession"
	"github.com/wardvpn/ward/internal/store"
)

// Targets of the proxy benchmark (issue: "MFA authorizations per second and
// config-sync requests per second through the proxy on our 2-core machine
// ... Targets: ≥ 1000 and ≥ 3000 per second").
const (
	targetMFAPerSec  = 1000
	targetSyncPerSec = 3000
)

// TOTP parameters of internal/core/mfa (RFC 6238 defaults).
const (
	totpPeriod = 30
	totpDigits = otp.DigitsSix
)

// maxErrorShare is the share of failed requests above which a throughput
// figure is not worth reporting as a success: the run fails.
const maxErrorShare = 0.01

func init() {
	register(benchmark{
		name:    "proxy",
		summary: "MFA authorizations and client config syncs per second through ward proxy, on SQLite and PostgreSQL",
		run:     runProxyBench,
	})
}

type proxyBenchConfig struct {
	engines     []store.Engine
	users       int
	concurrency int
	duration    time.Duration
	warmup      time.Duration
}

func parseProxyFlags(args []string) (proxyBenchConfig, error) {
	var c proxyBenchConfig
	fs := flag.NewFlagSet("wardbench proxy", flag.ContinueOnError)
	engines := fs.String("engines", "sqlite,postgres", "comma-separated database engines: sqlite, postgres")
	fs.IntVar(&c.users, "users", 20000, "users to seed, each with a confirmed TOTP secret and one device with a client sync token (at most 65533: one /16); each user can log in once per 30 s TOTP step, so this bounds the MFA logins per step")
	fs.IntVar(&c.concurrency, "concurrency", 32, "concurrent keep-alive client connections to the proxy")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of each measured run")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured load before each measured run")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	var err error
	if c.engines, err = parseEngines(*engines); err != nil {
		return c, err
	}
	switch {
	case c.users < 100 || c.users > 65533:
		return c, usageError{errors.New("-users must be between 100 and 65533 (one /16)")}
	case c.concurrency < 1:
		return c, usageError{errors.New("-concurrency must be at least 1")}
	case c.duration < time.Second:
		return c, usageError{errors.New("-duration must be at least 1s")}
	case c.warmup < 0:
		return c, usageError{errors.New("-warmup must not be negative")}
	}
	return c, nil
}

func runProxyBench(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error) {
	cfg, err := parseProxyFlags(args)
	if err != nil {
		return nil, err
	}
	bin, err := env.WardBinary(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	keys, err := publicKeys(ctx, cfg.users)
	if err != nil {
		return nil, err
	}
	env.Logf("generated %d WireGuard key pairs in %s", len(keys), time.Since(start).Round(time.Millisecond))
	return perEngine(ctx, cfg.engines, func(engine store.Engine) ([]harness.Row, error) {
		return proxyEngine(ctx, env, cfg, engine, bin, keys)
	})
}

// proxyEngine runs the benchmark on one engine: bootstrap through the API
// (location with internal MFA, proxy registration), bulk seed with core
// stopped, then the proxy and core, and the load on the proxy's public port.
func proxyEngine(ctx context.Context, env *harness.Env, cfg proxyBenchConfig, engine store.Engine, bin string, keys []string) ([]harness.Row, error) {
	var cl harness.Cleanups
	defer cl.Run()
	name := string(engine)
	env.Logf("[%s] preparing the database", name)
	dataDir, err := env.MkdirTemp("proxy-" + name + "-")
	if err != nil {
		return nil, err
	}
	dsn := ""
	pgPort := 0
	if engine == store.Postgres {
		pg, err := env.Postgres(ctx, &cl)
		if err != nil {
			return nil, err
		}
		if dsn, err = pg.CreateDatabase(ctx, "wardbench", ""); err != nil {
			return nil, err
		}
		pgPort = pg.Port()
	}
	db, closeDB, err := harness.OpenMigrated(ctx, &cl, dsn, dataDir)
	if err != nil {
		return nil, err
	}

	// Bootstrap through the API: admin token, the MFA location and the
	// proxy's registration, which returns its join token.
	opts := harness.CoreOptions{Binary: bin, DataDir: dataDir, Database: dsn, LogPath: filepath.Join(dataDir, "core.log")}
	first, admin, _, err := harness.BootstrapCore(ctx, &cl, opts, 2)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	token, err := admin.CreateToken(ctx, "wardbench")
	if err != nil {
		return nil, err
	}
	admin.Token = token
	var loc struct {
		ID      string `json:"id"`
		MFAMode string `json:"mfa_mode"`
	}
	// The disconnect threshold is long so that the session sweep closes
	// none of the sessions the benchmark opens while it runs.
	if err := admin.JSON(ctx, http.MethodPost, "/api/v1/locations", map[string]any{"name": "bench-mfa", "addresses": []string{benchNetwork},
		"endpoint": benchEndpoint, "mfa_mode": "internal", "disconnect_threshold": 3600}, &loc, http.StatusCreated); err != nil {
		return nil, err
	}
	if loc.MFAMode != "internal" {
		return nil, fmt.Errorf("location created with mfa_mode %q, want internal", loc.MFAMode)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	controlAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	healthAddr := "127.0.0.1:" + strconv.Itoa(ports[2])
	var reg struct {
		ID        string `json:"id"`
		JoinToken string `json:"join_token"`
	}
	if err := admin.JSON(ctx, http.MethodPost, "/api/v1/proxies", map[string]any{"name": "bench-proxy", "control_address": controlAddr},
		&reg, http.StatusCreated); err != nil {
		return nil, err
	}
	if err := first.Stop(); err != nil {
		return nil, fmt.Errorf("stop ward core after bootstrap: %w", err)
	}
	admin.Close()

	// Bulk seed with core stopped.
	env.Logf("[%s] seeding %d users, each with a TOTP secret, a device in the location and a client sync token", name, cfg.users)
	seeded, err := seedMFAUsers(ctx, db, loc.ID, keys)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	env.Logf("[%s] seeded in %s", name, seeded.elapsed.Round(time.Millisecond))
	if engine == store.Postgres {
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
			return nil, fmt.Errorf("vacuum analyze: %w", err)
		}
	}
	closeDB()

	// The proxy first, waiting for its adoption, then core, which dials it
	// at its next registry reconcile and adopts it with the join token.
	proxyDir := filepath.Join(dataDir, "proxy")
	cmd := exec.Command(bin, "proxy", "--data-dir", proxyDir, "--http-addr", httpAddr, "--control-addr", controlAddr,
		"--health-addr", healthAddr, "--rate-limit", "1000000", "--rate-burst", "1000000")
	cmd.Env = harness.WardEnv("WARD_JOIN_TOKEN=" + reg.JoinToken)
	proxyProc, err := harness.StartProcess("ward proxy", cmd, filepath.Join(dataDir, "proxy.log"))
	if err != nil {
		return nil, err
	}
	cl.Defer(func() { _ = proxyProc.Stop() })
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer probe.CloseIdleConnections()
	if err := waitHTTP(ctx, probe, proxyProc, "http://"+healthAddr+"/livez", 30*time.Second); err != nil {
		return nil, err
	}
	opts.AdminPassword = ""
	start := time.Now()
	second, err := harness.StartCore(ctx, opts)
	if err != nil {
		return nil, err
	}
	cl.Defer(func() { _ = second.Stop() })
	if err := waitHTTP(ctx, probe, proxyProc, "http://"+healthAddr+"/readyz", 60*time.Second); err != nil {
		return nil, fmt.Errorf("proxy adoption and core link: %w; core log:\n%s", err, second.LogTail(20))
	}
	var status struct {
		Adopted bool `json:"adopted"`
		Links   []struct {
			CoreID string `json:"core_id"`
		} `json:"core_links"`
	}
	if err := getJSON(ctx, probe, "http://"+healthAddr+"/status", &status); err != nil {
		return nil, err
	}
	if !status.Adopted || len(status.Links) != 1 {
		return nil, fmt.Errorf("proxy /status: adopted %v with %d core links, want adopted with 1", status.Adopted, len(status.Links))
	}
	env.Logf("[%s] ward proxy (pid %d) adopted and linked to ward core (pid %d, core id %s) %s after core started",
		name, proxyProc.PID(), second.PID(), status.Links[0].CoreID, time.Since(start).Round(time.Millisecond))

	pb := &publicBench{
		env: env, name: name, cfg: cfg, base: "http://" + httpAddr, locationID: loc.ID, seeded: seeded,
		core: second.PID(), proxy: proxyProc.PID(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConns: 4 * cfg.concurrency,
			MaxIdleConnsPerHost: 4 * cfg.concurrency, IdleConnTimeout: 90 * time.Second, DisableCompression: true}},
	}
	defer pb.client.CloseIdleConnections()
	if pgPort != 0 {
		pb.postgres = harness.PostmasterPID(pgPort)
		// A connection of our own to read pg_stat_database: how many
		// sessions core's pool opened during a run.
		if pb.stats, err = sql.Open("pgx", dsn); err != nil {
			return nil, err
		}
		pb.stats.SetMaxOpenConns(1)
		defer pb.stats.Close()
	}
	rows, err := pb.run(ctx)
	if err != nil {
		return rows, err
	}
	for _, p := range []struct {
		what string
		pid  int
	}{{"core", second.PID()}, {"proxy", proxyProc.PID()}} {
		mem, err := harness.ReadMemory(p.pid)
		if err != nil {
			return rows, err
		}
		rows = append(rows, harness.BytesRow(name, p.what+" RSS after load (VmRSS)", mem.RSS, 0))
	}
	if err := proxyProc.Stop(); err != nil {
		return rows, err
	}
	if err := second.Stop(); err != nil {
		return rows, err
	}
	return rows, nil
}

// mfaSeed is what seedMFAUsers created; index i is user i, who owns
// device i.
type mfaSeed struct {
	userIDs    []string
	publicKeys []string
	addresses  []string // the device's IPv4 address in the location
	secrets    []string // base32 TOTP secret
	syncTokens []string // client sync token (wardc_...)
	elapsed    time.Duration
}

// seedMFAUsers seeds one user per key with the api benchmark's SQL (one
// device each, its address in the location, one revision bump), then gives
// each user a confirmed TOTP secret as internal/core/mfa stores it (base32
// of 20 random bytes, enabled, last_step 0) and each device a client sync
// token stored as internal/core/enroll does: HMAC-SHA256 under the instance
// token key of "ward-client\x00" + token, hex.
func seedMFAUsers(ctx context.Context, db *store.DB, locationID string, keys []string) (mfaSeed, error) {
	start := time.Now()
	base, err := seed(ctx, db, locationID, len(keys), keys)
	if err != nil {
		return mfaSeed{}, err
	}
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		return mfaSeed{}, fmt.Errorf("instance secrets: %w", err)
	}
	owner := make(map[string]string, len(keys))
	rows, err := db.QueryContext(ctx, `SELECT id, user_id FROM devices`)
	if err != nil {
		return mfaSeed{}, err
	}
	for rows.Next() {
		var dev, user string
		if err := rows.Scan(&dev, &user); err != nil {
			rows.Close()
			return mfaSeed{}, err
		}
		owner[dev] = user
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return mfaSeed{}, err
	}
	s := mfaSeed{userIDs: make([]string, len(keys)), publicKeys: keys, addresses: base.addresses,
		secrets: make([]string, len(keys)), syncTokens: make([]string, len(keys))}
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding)
	for i := range keys {
		if s.userIDs[i] = owner[base.deviceIDs[i]]; s.userIDs[i] == "" {
			return mfaSeed{}, fmt.Errorf("seeded device %s has no owner", base.deviceIDs[i])
		}
		secret := make([]byte, 20)
		if _, err := rand.Read(secret); err != nil {
			return mfaSeed{}, err
		}
		s.secrets[i] = b32.EncodeToString(secret)
		s.syncTokens[i] = "wardc_" + core.RandomToken(32)
	}
	now := store.Now()
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		if err := insertRows(ctx, tx, "user_totp", []string{"user_id", "secret", "enabled", "last_step", "failures", "first_failure_at", "locked_until", "created_at", "enabled_at"},
			len(keys), func(i int) []any {
				return []any{s.userIDs[i], s.secrets[i], true, 0, 0, 0, 0, now, now}
			}); err != nil {
			return fmt.Errorf("totp secrets: %w", err)
		}
		if err := insertRows(ctx, tx, "client_tokens", []string{"id", "token_hash", "device_id", "created_at", "last_used_at"},
			len(keys), func(i int) []any {
				return []any{core.NewID(), clientTokenHash(inst.TokenKey, s.syncTokens[i]), base.deviceIDs[i], now, 0}
			}); err != nil {
			return fmt.Errorf("client tokens: %w", err)
		}
		return nil
	})
	s.elapsed = time.Since(start)
	return s, err
}

// clientTokenHash is how internal/core/enroll stores a client sync token.
func clientTokenHash(key []byte, token string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ward-client\x00" + token))
	return hex.EncodeToString(m.Sum(nil))
}

// publicBench is the load on one proxy's public port.
type publicBench struct {
	env        *harness.Env
	name       string
	cfg        proxyBenchConfig
	base       string
	locationID string
	seeded     mfaSeed
	client     *http.Client
	// PIDs whose CPU time is reported per request (postgres 0 on SQLite).
	core, proxy, postgres int
	// stats reads pg_stat_database (nil on SQLite).
	stats *sql.DB
}

func (b *publicBench) run(ctx context.Context) ([]harness.Row, error) {
	var rows []harness.Row
	syncRows, err := b.syncRuns(ctx)
	rows = append(rows, syncRows...)
	if err != nil {
		return rows, err
	}
	mfaRows, err := b.mfaRuns(ctx)
	rows = append(rows, mfaRows...)
	return rows, err
}

// cpuSnapshot is the CPU time of every process taking part in a run.
type cpuSnapshot struct {
	at                            time.Time
	core, proxy, postgres, client time.Duration
	machine                       harness.MachineCPU
	pgSessions                    int64
}

func (b *publicBench) cpu() cpuSnapshot {
	s := cpuSnapshot{at: time.Now()}
	s.core, _ = harness.ReadCPU(b.core)
	s.proxy, _ = harness.ReadCPU(b.proxy)
	if b.postgres != 0 {
		s.postgres, _ = harness.ProcessTreeCPU(b.postgres)
	}
	s.client, _ = harness.ReadCPU(os.Getpid())
	s.machine, _ = harness.ReadMachineCPU()
	if b.stats != nil {
		// The counters are flushed about once a second; force it.
		_, _ = b.stats.Exec(`SELECT pg_stat_force_next_flush()`)
		_ = b.stats.QueryRow(`SELECT sessions FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.pgSessions)
	}
	return s
}

// cpuLine says how much CPU each process used per operation and how busy
// the machine was.
func (b *publicBench) cpuLine(before, after cpuSnapshot, ops int) string {
	per := func(d time.Duration) string {
		if ops == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3fms", float64(d)/1e6/float64(ops))
	}
	s := fmt.Sprintf("CPU per op: core %s, proxy %s", per(after.core-before.core), per(after.proxy-before.proxy))
	if b.postgres != 0 {
		s += ", postgres " + per(after.postgres-before.postgres)
	}
	// The machine's busy share minus what the benchmark's own processes
	// used is other load, which takes CPU from the figures.
	ours := (after.core - before.core) + (after.proxy - before.proxy) + (after.postgres - before.postgres) + (after.client - before.client)
	capacity := after.at.Sub(before.at) * time.Duration(runtime.NumCPU())
	busy := after.machine.BusySince(before.machine)
	other := 0.0
	if capacity > 0 {
		other = max(0, busy-float64(ours)/float64(capacity))
	}
	s += fmt.Sprintf(", wardbench %s; machine %.0f%% busy, of which other processes %.0f%%; load %s", per(after.client-before.client),
		100*busy, 100*other, harness.LoadAverage())
	if b.stats != nil {
		s += fmt.Sprintf("; %d PostgreSQL sessions opened", after.pgSessions-before.pgSessions)
	}
	return s
}

// report logs a run's result and its errors.
func (b *publicBench) report(res harness.LoadResult, before, after cpuSnapshot, extra string) {
	b.env.Logf("[%s] %s  errors=%d%s", b.name, res.Latency, res.Errors, extra)
	b.env.Logf("[%s]   %s", b.name, b.cpuLine(before, after, res.N))
	for _, e := range res.ErrorSamples {
		b.env.Logf("[%s]   error: %s", b.name, e)
	}
}

// checkErrors fails a run with more than maxErrorShare failed requests.
func checkErrors(res harness.LoadResult) error {
	if res.Errors > 0 && float64(res.Errors) > maxErrorShare*float64(res.Total()) {
		return fmt.Errorf("%s: %d of %d requests failed, first: %s", res.Name, res.Errors, res.Total(), strings.Join(res.ErrorSamples, "; "))
	}
	return nil
}

// post sends a POST to the proxy's public port and returns status and body.
func (b *publicBench) post(ctx context.Context, path, bearer string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

const (
	syncPath      = "/api/v1/public/client/sync"
	mfaStartPath  = "/api/v1/public/vpn-mfa/start"
	mfaFinishPath = "/api/v1/public/vpn-mfa/finish"
)

// syncRuns measures POST /client/sync. Core writes a token's last_used_at
// on its first sync in a minute and skips the write on the next ones, so
// the two cases are measured apart: a warm-up, then one pass over the
// tokens not synced yet (every request writes), then -duration cycling
// over all tokens, each synced within the last minute (no write, as long
// as the passes took under a minute).
func (b *publicBench) syncRuns(ctx context.Context) ([]harness.Row, error) {
	n := len(b.seeded.syncTokens)
	want := make([][]byte, n)
	for i, a := range b.seeded.addresses {
		want[i] = []byte(`"addresses":["` + a + `/32"]`)
	}
	locWant := []byte(`"location_id":"` + b.locationID + `"`)
	var cursor atomic.Int64
	doSync := func(ctx context.Context, _ int) error {
		i := int(cursor.Add(1)-1) % n
		status, body, err := b.post(ctx, syncPath, b.seeded.syncTokens[i], nil)
		switch {
		case err != nil:
			return err
		case status != http.StatusOK:
			return fmt.Errorf("sync: status %d: %.200s", status, bytes.TrimSpace(body))
		case !bytes.Contains(body, want[i]) || !bytes.Contains(body, locWant):
			return fmt.Errorf("sync: answer lacks the device's address in the location: %.300s", body)
		}
		return nil
	}
	passStart := time.Now()
	if err := doSync(ctx, 0); err != nil {
		return nil, fmt.Errorf("first sync through the proxy: %w", err)
	}
	warm, err := harness.Load(ctx, "sync warmup", b.cfg.concurrency, b.cfg.warmup, n/4, doSync)
	if err != nil {
		return nil, err
	}
	if err := checkErrors(warm); err != nil {
		return nil, err
	}
	left := n - int(cursor.Load())
	c0 := b.cpu()
	first, err := harness.Load(ctx, "sync, first/min", b.cfg.concurrency, 0, left, doSync)
	if err != nil {
		return nil, err
	}
	c1 := b.cpu()
	b.report(first, c0, c1, fmt.Sprintf("  (one pass over %d tokens, each synced for the first time: writes last_used_at)", left))
	if err := checkErrors(first); err != nil {
		return nil, err
	}
	steady, err := harness.Load(ctx, "sync, repeat", b.cfg.concurrency, b.cfg.duration, 0, doSync)
	if err != nil {
		return nil, err
	}
	c2 := b.cpu()
	if since := time.Since(passStart); since > 55*time.Second {
		b.env.Logf("[%s]   note: the sync runs took %s; tokens synced more than a minute ago were written again", b.name, since.Round(time.Second))
	}
	b.report(steady, c1, c2, fmt.Sprintf("  (%s cycling over all %d tokens, each synced within the last minute: no write)", b.cfg.duration, n))
	if err := checkErrors(steady); err != nil {
		return nil, err
	}
	rows := []harness.Row{
		{Engine: b.name, Metric: "config sync via proxy, token synced <1 min ago", Value: steady.PerSecond, Unit: harness.PerSec, Target: targetSyncPerSec, AtLeast: true},
		harness.DurationRow(b.name, "  p50", steady.P50, 0),
		harness.DurationRow(b.name, "  p99", steady.P99, 0),
		{Engine: b.name, Metric: "config sync via proxy, first in a minute (writes)", Value: first.PerSecond, Unit: harness.PerSec, Target: targetSyncPerSec, AtLeast: true},
		harness.DurationRow(b.name, "  p50", first.P50, 0),
		harness.DurationRow(b.name, "  p99", first.P99, 0),
		{Engine: b.name, Metric: "config sync errors (non-2xx or failed)", Value: float64(first.Errors + steady.Errors), Unit: harness.Count},
	}
	return rows, nil
}

// totpPool hands out users whose TOTP code of the current step has not been
// used yet (core accepts each step once per user), round-robin.
type totpPool struct {
	secrets []string
	last    []atomic.Int64 // the step each user last logged in with
	next    atomic.Int64
	stalls  atomic.Int64 // nanoseconds workers waited for a new step
}

func newTOTPPool(secrets []string) *totpPool {
	return &totpPool{secrets: secrets, last: make([]atomic.Int64, len(secrets))}
}

// take returns a user and the code of the current step. When the next user
// has already logged in during this step, the pool is used up until the
// next step starts, and take waits for it (counted in stalls).
func (p *totpPool) take(ctx context.Context) (int, string, error) {
	for {
		i := int(p.next.Add(1)-1) % len(p.secrets)
		now := time.Now()
		step := now.Unix() / totpPeriod
		last := p.last[i].Load()
		if last < step && p.last[i].CompareAndSwap(last, step) {
			code, err := totp.GenerateCodeCustom(p.secrets[i], time.Unix(step*totpPeriod, 0),
				totp.ValidateOpts{Period: totpPeriod, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
			return i, code, err
		}
		wait := time.Unix((step+1)*totpPeriod, 0).Sub(now)
		p.stalls.Add(int64(wait))
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(wait):
		}
	}
}

// mfaRuns measures VPN MFA logins: POST /vpn-mfa/start (TOTP) and POST
// /vpn-mfa/finish with the user's current code, a pair per authorization.
// No gateway is connected, so finish answers 202 no_gateway_connected
// as soon as the session is committed.
func (b *publicBench) mfaRuns(ctx context.Context) ([]harness.Row, error) {
	pool := newTOTPPool(b.seeded.secrets)
	type workerStats struct {
		start, finish []time.Duration
		accepted      int // 202 no_gateway_connected
	}
	var stats []workerStats
	reset := func() { stats = make([]workerStats, b.cfg.concurrency) }
	reset()
	doMFA := func(ctx context.Context, w int) error {
		i, code, err := pool.take(ctx)
		if err != nil {
			return err
		}
		startBody, _ := json.Marshal(map[string]string{"location_id": b.locationID, "public_key": b.seeded.publicKeys[i], "method": "totp"})
		t0 := time.Now()
		status, body, err := b.post(ctx, mfaStartPath, "", startBody)
		if err != nil {
			return err
		}
		if status != http.StatusCreated {
			return fmt.Errorf("mfa start: status %d: %.200s", status, bytes.TrimSpace(body))
		}
		var ch struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(body, &ch); err != nil || ch.Token == "" {
			return fmt.Errorf("mfa start: no token in %.200s", body)
		}
		t1 := time.Now()
		finishBody, _ := json.Marshal(map[string]string{"token": ch.Token, "code": code})
		status, body, err = b.post(ctx, mfaFinishPath, "", finishBody)
		if err != nil {
			return err
		}
		t2 := time.Now()
		switch {
		case status == http.StatusAccepted && bytes.Contains(body, []byte(`"code":"`+vpnsession.CodeNoGatewayConnected+`"`)):
			stats[w].accepted++
		case status == http.StatusOK:
		default:
			return fmt.Errorf("mfa finish: status %d: %.200s", status, bytes.TrimSpace(body))
		}
		if !bytes.Contains(body, []byte(`"preshared_key":"`)) {
			return fmt.Errorf("mfa finish: no preshared key in %.300s", body)
		}
		stats[w].start = append(stats[w].start, t1.Sub(t0))
		stats[w].finish = append(stats[w].finish, t2.Sub(t1))
		return nil
	}
	if err := doMFA(ctx, 0); err != nil {
		return nil, fmt.Errorf("first MFA login through the proxy: %w", err)
	}
	warm, err := harness.Load(ctx, "mfa warmup", b.cfg.concurrency, b.cfg.warmup, 0, doMFA)
	if err != nil {
		return nil, err
	}
	if err := checkErrors(warm); err != nil {
		return nil, err
	}
	reset()
	pool.stalls.Store(0)
	c0 := b.cpu()
	res, err := harness.Load(ctx, "mfa start+finish", b.cfg.concurrency, b.cfg.duration, 0, doMFA)
	if err != nil {
		return nil, err
	}
	c1 := b.cpu()
	var starts, finishes []time.Duration
	accepted := 0
	for _, s := range stats {
		starts = append(starts, s.start...)
		finishes = append(finishes, s.finish...)
		accepted += s.accepted
	}
	stall := time.Duration(pool.stalls.Load())
	extra := fmt.Sprintf("  (%d answered 202 no_gateway_connected, %d 200)", accepted, res.N-accepted)
	b.report(res, c0, c1, extra)
	startLat := harness.Summarise("  of which start", starts, 0)
	finishLat := harness.Summarise("  of which finish", finishes, 0)
	b.env.Logf("[%s] %s", b.name, startLat)
	b.env.Logf("[%s] %s", b.name, finishLat)
	if stall > 0 {
		b.env.Logf("[%s]   note: the %d users ran out within a TOTP step; workers waited %s in all for the next step: raise -users",
			b.name, len(b.seeded.secrets), stall.Round(time.Millisecond))
	}
	if err := checkErrors(res); err != nil {
		return nil, err
	}
	rows := []harness.Row{
		{Engine: b.name, Metric: "MFA authorizations via proxy (start+finish)", Value: res.PerSecond, Unit: harness.Auths, Target: targetMFAPerSec, AtLeast: true},
		harness.DurationRow(b.name, "  p50 (start+finish)", res.P50, 0),
		harness.DurationRow(b.name, "  p99 (start+finish)", res.P99, 0),
		harness.DurationRow(b.name, "  start p50", startLat.P50, 0),
		harness.DurationRow(b.name, "  finish p50", finishLat.P50, 0),
		{Engine: b.name, Metric: "  of which 202 no_gateway_connected", Value: float64(accepted), Unit: harness.Count},
		{Engine: b.name, Metric: "MFA errors (non-2xx or failed)", Value: float64(res.Errors), Unit: harness.Count},
	}
	return rows, nil
}

// getJSON GETs url and decodes a 200 answer into out.
func getJSON(ctx context.Context, c *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, out)
}

// freePorts returns n distinct free loopback ports (all held open until
// every one is picked, so none repeats).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
