package coreapp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var pgEnv *storetest.Env

func TestMain(m *testing.M) {
	pgEnv = storetest.Setup()
	code := m.Run()
	pgEnv.Close()
	os.Exit(code)
}

type replica struct {
	app  *App
	url  string
	stop context.CancelFunc
	done chan error
}

func startReplica(t *testing.T, dsn string) *replica {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Database: dsn, PublicURL: "http://localhost", LogLevel: "info", LogFormat: "text",
		SweepInterval: 200 * time.Millisecond, LeaseTTL: time.Second, AdminPassword: "correct horse battery staple"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	app, err := Open(t.Context(), cfg, "test", log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &replica{app: app, url: "http://" + ln.Addr().String(), stop: stop, done: make(chan error, 1)}
	go func() { r.done <- app.Serve(ctx, ln) }()
	t.Cleanup(func() { r.shutdown(t) })
	return r
}

func (r *replica) shutdown(t *testing.T) {
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("replica did not stop")
	}
	r.app.Close()
}

func (r *replica) held() bool { h, _ := r.app.Jobs.Held(); return h }

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// Two replicas on one PostgreSQL database: one runs the singleton jobs; a
// change made through one wakes the other's followers through the
// database; both appear in the cluster view; when the holder stops the
// other takes the jobs over.
func TestTwoReplicas(t *testing.T) {
	dsn := pgEnv.NewPostgresURL(t)
	a, b := startReplica(t, dsn), startReplica(t, dsn)
	ctx := t.Context()

	waitUntil(t, "one replica holds the jobs lease", 15*time.Second, func() bool { return a.held() || b.held() })
	time.Sleep(1500 * time.Millisecond) // more than a TTL: the other must not take it meanwhile
	if a.held() == b.held() {
		t.Fatalf("lease held by a=%v b=%v, want exactly one", a.held(), b.held())
	}
	holder, other := a, b
	if b.held() {
		holder, other = b, a
	}

	waitUntil(t, "both replicas listen for notifications", 15*time.Second, func() bool {
		return metricValue(t, a, "ward_db_notify_listening") == 1 && metricValue(t, b, "ward_db_notify_listening") == 1
	})
	admin := core.SystemActor("test")
	loc, err := a.app.VPN.CreateLocation(ctx, admin, vpn.LocationInput{Name: new("office"), Addresses: new([]string{"10.10.0.0/24"}),
		Endpoint: new("vpn.example.com")})
	if err != nil {
		t.Fatal(err)
	}
	woken, unsubscribe := b.app.VPN.Hub().Subscribe(loc.ID)
	defer unsubscribe()
	var adminID string
	if err := a.app.DB.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.app.VPN.CreateDevice(ctx, core.Actor{UserID: adminID, Username: "admin", IsAdmin: true},
		vpn.NewDevice{Name: "laptop", GenerateKey: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
		t.Logf("a change committed through replica a woke replica b's followers %s later", time.Since(start).Round(time.Microsecond))
	case <-time.After(5 * time.Second):
		t.Fatal("replica b was not told of a change made through replica a")
	}

	var view lease.Cluster
	getJSON(t, other.url, "/api/v1/cluster", &view, "admin")
	if len(view.Replicas) != 2 || len(view.Leases) != 1 || view.Leases[0].Holder != holder.app.CoreID || !view.Leases[0].Held {
		t.Fatalf("cluster view %+v, want two replicas and the jobs lease held by %s", view, holder.app.CoreID)
	}
	for _, r := range view.Replicas {
		if !r.Live {
			t.Errorf("replica %s not live", r.ID)
		}
	}

	if metricValue(t, holder, `ward_job_runs_total{job="sweep",result="ok"}`) < 1 {
		t.Fatal("the holder has not swept")
	}
	if n := metricValue(t, other, `ward_job_runs_total{job="sweep",result="ok"}`); n != 0 {
		t.Fatalf("the replica without the lease swept %v times", n)
	}
	holder.shutdown(t)
	took := waitUntil(t, "the other replica takes the jobs over", 10*time.Second, func() bool {
		return other.held() && metricValue(t, other, `ward_job_runs_total{job="sweep",result="ok"}`) >= 1
	})
	t.Logf("after a graceful stop of the holder, the other replica swept %s later", took.Round(time.Millisecond))
	getJSON(t, other.url, "/api/v1/cluster", &view, "admin")
	if len(view.Replicas) != 1 || view.Replicas[0].ID != other.app.CoreID || view.Leases[0].Holder != other.app.CoreID {
		t.Fatalf("cluster view after the holder stopped: %+v", view)
	}
}

// getJSON logs in as user (the password startReplica sets) and decodes a
// GET of path.
func getJSON(t *testing.T, base, path string, out any, user string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	body := `{"username":"` + user + `","password":"correct horse battery staple"}`
	resp, err := hc.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, err = hc.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// metricValue scrapes the replica's /metrics for one series (name with its
// labels as exposed, sorted by label name); absent is 0.
func metricValue(t *testing.T, r *replica, series string) float64 {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// Eight replicas starting at once on an empty PostgreSQL database: the
// migrations run once (under their lock), and all three share one instance,
// one CA and one admin.
func TestReplicasStartTogether(t *testing.T) {
	srv := pgEnv.Postgres(t)
	dsn, err := srv.CreateDatabase(t.Context(), "together_"+strconv.Itoa(os.Getpid()), "")
	if err != nil {
		t.Fatal(err)
	}
	apps := make([]*App, 8)
	errs := make(chan error, len(apps))
	for i := range apps {
		go func() {
			cfg := Config{DataDir: t.TempDir(), Database: dsn, PublicURL: "http://localhost", LogLevel: "info", LogFormat: "text",
				SweepInterval: time.Second, LeaseTTL: time.Second}
			app, err := Open(t.Context(), cfg, "test", slog.New(slog.DiscardHandler), io.Discard)
			apps[i] = app
			errs <- err
		}()
	}
	for range apps {
		if err := <-errs; err != nil {
			t.Errorf("replica start: %v", err)
		}
	}
	for _, a := range apps {
		if a != nil {
			defer a.Close()
		}
	}
	if t.Failed() {
		return
	}
	var admins, cas int
	db := apps[0].DB
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM users WHERE username = 'admin'`).Scan(&admins); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM instance WHERE key = 'ca_cert'`).Scan(&cas); err != nil {
		t.Fatal(err)
	}
	if admins != 1 || cas != 1 {
		t.Fatalf("%d admins and %d CAs after a concurrent first start, want 1 and 1", admins, cas)
	}
}

// With the database unreachable, core keeps trying until it is told to
// stop, rather than exiting at once.
func TestOpenWaitsForTheDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	cfg := Config{DataDir: t.TempDir(), Database: "postgres://ward@" + addr + "/ward?connect_timeout=1", PublicURL: "http://localhost",
		LogLevel: "info", LogFormat: "text", SweepInterval: time.Second, LeaseTTL: time.Second}
	start := time.Now()
	_, err = Open(ctx, cfg, "test", slog.New(slog.DiscardHandler), io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < time.Second {
		t.Fatalf("Open gave up after %s with %v; want it to retry until the context ends", time.Since(start), err)
	}
}
