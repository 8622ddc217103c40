package e2e

// Issue #6 acceptance: core high availability. Three `ward core` replicas on
// one PostgreSQL database, two proxies, three gateways and three wg-quick
// tunnels, in network namespaces:
//
//	intranet                      DMZ                                        clients
//	core ns (cores 1-3,  ──veth── dmz ns  (proxies 1-2, gateways gw1, gm) ──veth── cl1 ns (tunnels t1, t3)
//	         PostgreSQL) └─veth── dmz2 ns (gateway gw2)                   ──veth── cl2 ns (tunnel t2)
//
// Location "office" (no MFA) has gw1 and gw2 (same key, port and peers);
// tunnel t1 goes through gw1, t2 through gw2. Location "secure" (VPN MFA,
// TOTP) has gm; tunnel t3 is an MFA session logged in through the proxies
// during the first subtest. Every core dials every gateway and proxy by
// itself; each was registered once, through the API of one replica.
//
// A UDP probe runs through every tunnel every 10 ms for the whole test
// (to an echo server in the gateway's namespace at its tunnel address), and
// each subtest requires that none of the probes sent during it was lost.
// The API is driven like a load balancer would: round-robin over the
// replicas, a connection error or timeout moves the request to the next.
//
// PostgreSQL is a server of this test alone (subtest 4 stops it), started
// inside the core namespace, where the cores reach it on 127.0.0.1.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/store/storetest"
)

func TestCoreHA(t *testing.T) {
	requireNetns(t)
	for _, p := range [][2]string{{"wg", "wireguard-tools"}, {"wg-quick", "wireguard-tools"}, {"wireguard-go", "wireguard-go"}} {
		requireProgram(t, p[0], p[1])
	}
	if _, err := storetest.FindPGBin("initdb"); err != nil {
		if os.Getenv("WARD_REQUIRE_POSTGRES") != "1" {
			t.Skipf("SKIP postgres: %v (core HA needs PostgreSQL; install the postgresql package, or set WARD_REQUIRE_POSTGRES=1 to make this a failure)", err)
		}
		t.Fatalf("PostgreSQL binaries: %v", err)
	}
	testStart := time.Now()
	e := newHAEnv(t)
	t.Logf("FIGURE setup: 3 cores, 2 proxies, 3 gateways, 2 tunnels up in %v", time.Since(testStart).Round(time.Millisecond))

	subtestsStart := e.window()
	t.Run("KillOneCore", e.testKillOneCore)
	t.Run("RollingRestart", e.testRollingRestart)
	t.Run("LeaseFailover", e.testLeaseFailover)
	t.Run("PostgresOutage", e.testPostgresOutage)
	e.checkProbes(t, "whole test (all subtests)", subtestsStart)
	t.Logf("FIGURE whole test %v (TOTP waits %v)", time.Since(testStart).Round(time.Millisecond), e.totp.waited.Round(time.Millisecond))
}

// testKillOneCore: an MFA login started on one core is finished on another
// after the first was killed with SIGKILL; tunnels and the API carry on.
func (e *haEnv) testKillOneCore(t *testing.T) {
	from := e.window()
	loop := e.readLoop(t, e.api)
	time.Sleep(time.Second)

	// The MFA device of the user, its config for the secure location.
	priv, pub, _ := wgKeyPair(t)
	var dev struct {
		ID string `json:"id"`
	}
	e.must(t, 0, "POST", "/api/v1/devices", map[string]any{"name": "mfa-laptop-" + e.id, "public_key": pub, "user_id": e.mfaUserID},
		http.StatusCreated, &dev)
	cfg := string(e.must(t, 0, "GET", "/api/v1/devices/"+dev.ID+"/config?location="+e.secure.ID, nil, http.StatusOK, nil))
	if !hasLine(cfg, "[Peer]") {
		t.Fatalf("device config for the secure location has no [Peer]:\n%s", cfg)
	}

	// MFA start through proxy 1: whichever core answers is the one to kill.
	px1, px2 := e.proxies[0], e.proxies[1]
	before := px1.answers(t)
	status, body, err := e.publicPost(px1, "/api/v1/public/vpn-mfa/start", map[string]any{"location_id": e.secure.ID, "public_key": pub, "method": "totp"})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("MFA start through %s = %d %s (%v), want 201", px1.name, status, body, err)
	}
	var ch struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &ch); err != nil || ch.Token == "" {
		t.Fatalf("MFA start answer %s: %v", body, err)
	}
	a := e.coreByID(answeredBy(t, before, px1.answers(t)))
	if a == nil {
		t.Fatalf("the MFA start was answered by a core id none of the replicas has")
	}
	t.Logf("MFA start through %s answered by core %d (%s): killing it", px1.name, a.n, a.id)
	code := e.totp.next(t, false) // before the kill: a wait for a TOTP step must not fall in the measured part
	time.Sleep(300 * time.Millisecond)

	killed := time.Now()
	a.proc.kill(t)
	before = px2.answers(t)
	finStart := time.Now()
	status, body, err = e.publicPost(px2, "/api/v1/public/vpn-mfa/finish", map[string]any{"token": ch.Token, "code": code})
	finTook := time.Since(finStart)
	if err != nil || status != http.StatusOK {
		t.Fatalf("MFA finish through %s %v after core %d was killed = %d %s (%v), want 200", px2.name, ms(finStart.Sub(killed)), a.n, status, body, err)
	}
	b := e.coreByID(answeredBy(t, before, px2.answers(t)))
	if b == nil || b == a {
		t.Fatalf("the MFA finish was answered by %+v, want one of the surviving cores", b)
	}
	var fin struct {
		Session struct {
			ID           string `json:"id"`
			PresharedKey string `json:"preshared_key"`
		} `json:"session"`
	}
	if err := json.Unmarshal(body, &fin); err != nil || fin.Session.PresharedKey == "" {
		t.Fatalf("MFA finish answer %s: %v", body, err)
	}
	gm := e.gws[2]
	if err := waitFor(10*time.Second, 20*time.Millisecond, func() error {
		st, err := gm.status()
		if err != nil {
			return err
		}
		if _, _, ok := st.peer(pub); !ok {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the MFA session's peer is not on gateway gm: %v", err)
	}
	cfg = strings.Replace(cfg, "REPLACE_WITH_DEVICE_PRIVATE_KEY", priv, 1)
	cfg = strings.Replace(cfg, "[Peer]", "[Peer]\nPresharedKey = "+fin.Session.PresharedKey, 1)
	wgQuickUp(t, e.t, e.cl1NS, e.dir, "hqm"+e.id, cfg)
	up := time.Now()
	p3 := startUDPProber(e.t, "t3 (MFA session, via gm)", e.cl1NS, haSecureIP+":"+haEchoPort, haProbeInterval)
	if err := waitFor(20*time.Second, 20*time.Millisecond, func() error {
		if !p3.answeredSince(up) {
			return errNotYet
		}
		return nil
	}); err != nil {
		p3.stop()
		t.Fatalf("the MFA session's tunnel carries no traffic: %v", err)
	}
	e.probers = append(e.probers, p3)
	t.Logf("FIGURE kill -9: MFA login started on core %d, finished through %s %v after the kill, answered by core %d in %v; "+
		"the session's peer is on gateway gm and its tunnel passes traffic %v after the kill",
		a.n, px2.name, ms(finStart.Sub(killed)), b.n, ms(finTook), ms(time.Since(killed)))

	if d := 3*time.Second - time.Since(killed); d > 0 {
		time.Sleep(d)
	}
	loop.stop()
	t.Logf("FIGURE kill -9 API loop (GET /api/v1/users, round-robin over 3 replicas, failover on connection errors): %s", loop)
	loop.check(t, "kill -9")
	e.checkProbes(t, "kill -9 of a core", from)

	restart := time.Now()
	e.startCore(t, a)
	ready := e.waitCoreReady(t, a, 60*time.Second)
	relinked := e.waitLinked(t, 60*time.Second)
	t.Logf("FIGURE kill -9: core %d restarted, ready in %v, every gateway and proxy linked to it again %v later (total %v)",
		a.n, ms(ready), ms(relinked), ms(time.Since(restart)))
}

// testRollingRestart: each replica in turn gets SIGTERM and is started
// again once it exited; a writer creates users throughout and every write
// that was acknowledged is there afterwards.
func (e *haEnv) testRollingRestart(t *testing.T) {
	e.ensureCores(t)
	from := e.window()
	prefix := "roll-" + e.id + "-"
	var mu sync.Mutex
	acked := map[string]string{} // id -> username
	writer := startAPILoop(t, 20*time.Millisecond, func(n int) (haResult, bool) {
		r := e.api.do("POST", "/api/v1/users", func(attempt int) any {
			name := fmt.Sprintf("%s%d-%d", prefix, n, attempt)
			return map[string]any{"username": name, "email": name + "@example.com"}
		})
		if r.status != http.StatusCreated {
			return r, false
		}
		var u struct {
			ID       string `json:"id"`
			Username string `json:"username"`
		}
		if err := json.Unmarshal(r.body, &u); err != nil || u.ID == "" {
			return r, false
		}
		mu.Lock()
		acked[u.ID] = u.Username
		mu.Unlock()
		return r, true
	})
	time.Sleep(time.Second)
	var figs []string
	for _, c := range e.cores {
		pid := c.proc.cmd.Process.Pid
		t0 := time.Now()
		c.proc.stop(t, "core stopped")
		stopped := time.Since(t0)
		e.startCore(t, c)
		ready := e.waitCoreReady(t, c, 60*time.Second)
		figs = append(figs, fmt.Sprintf("core %d (pid %d -> %d): exited %v after SIGTERM, ready %v after its start",
			c.n, pid, c.proc.cmd.Process.Pid, ms(stopped), ms(ready)))
	}
	time.Sleep(time.Second)
	writer.stop()
	t.Logf("FIGURE rolling restart: %s", strings.Join(figs, "; "))
	t.Logf("FIGURE rolling restart writer (POST /api/v1/users, round-robin, failover on connection errors): %s", writer)
	writer.check(t, "rolling restart")

	// Every acknowledged write is there.
	found := map[string]string{}
	for offset := 0; ; offset += 500 {
		r := e.api.do("GET", fmt.Sprintf("/api/v1/users?search=%s&limit=500&offset=%d", prefix, offset), nil)
		if r.status != http.StatusOK {
			t.Fatalf("list users: %v", r)
		}
		var page struct {
			Items []struct {
				ID       string `json:"id"`
				Username string `json:"username"`
			} `json:"items"`
			Total int `json:"total"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatalf("list users: %v", err)
		}
		for _, it := range page.Items {
			found[it.ID] = it.Username
		}
		if len(page.Items) == 0 || offset+len(page.Items) >= page.Total {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var lost []string
	for id, name := range acked {
		if found[id] != name {
			lost = append(lost, name)
		}
	}
	t.Logf("FIGURE rolling restart: %d writes acknowledged (201), %d of them read back, %d users found in all (%d unacknowledged attempts committed)",
		len(acked), len(acked)-len(lost), len(found), len(found)-(len(acked)-len(lost)))
	if len(acked) < 50 {
		t.Errorf("only %d writes were acknowledged during the roll", len(acked))
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Errorf("%d acknowledged writes are missing after the rolling restart: %v", len(lost), lost[:min(len(lost), 20)])
	}
	e.checkProbes(t, "rolling restart", from)
	took := e.waitLinked(t, 60*time.Second)
	t.Logf("FIGURE rolling restart: every gateway and proxy linked to all 3 restarted cores %v after the roll", ms(took))
}

// testLeaseFailover: the singleton-jobs lease moves within the bound
// when its holder dies, and a holder that was paused past the TTL commits
// no more sweeps once it resumes.
func (e *haEnv) testLeaseFailover(t *testing.T) {
	e.ensureCores(t)
	if _, err := e.lease(e.cores[0]); err != nil {
		t.Fatal(err)
	}
	from := e.window()
	api := newHAAPI(e.coreNS, e.api.token, e.addrs, 3*time.Second) // a paused replica accepts connections but never answers
	loop := e.readLoop(t, api)

	h1, v1 := e.holder(t, 30*time.Second)
	base := map[*haCore]leaseView{}
	for _, c := range e.cores {
		if c != h1 {
			v, err := e.lease(c)
			if err != nil {
				t.Fatal(err)
			}
			base[c] = v
		}
	}
	killed := time.Now()
	h1.proc.kill(t)
	var h2 *haCore
	var v2 leaseView
	var heldAt time.Time
	err := waitFor(30*time.Second, 20*time.Millisecond, func() error {
		for c, b := range base {
			v, err := e.lease(c)
			if err != nil {
				return fmt.Errorf("core %d: %w", c.n, err)
			}
			if v.held == 1 && heldAt.IsZero() {
				heldAt = time.Now()
			}
			if v.held == 1 && v.sweepOK > b.sweepOK {
				h2, v2 = c, v
				return nil
			}
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("no replica took the jobs lease and swept within 30 s of the holder's death: %v", err)
	}
	takeover := time.Since(killed)
	t.Logf("FIGURE lease: holder core %d (epoch %v) killed; core %d held the lease %v later (epoch %v) and completed a sweep %v after the kill (bound %v, TTL %v, sweep every %s)",
		h1.n, v1.epoch, h2.n, ms(heldAt.Sub(killed)), v2.epoch, ms(takeover), haTakeoverBound, haLeaseTTL, haSweepInterval)
	if takeover > haTakeoverBound {
		t.Errorf("lease takeover with a completed sweep took %v after the holder was killed, want <= %v", ms(takeover), haTakeoverBound)
	}
	if v2.epoch <= v1.epoch {
		t.Errorf("new holder's epoch %v, old holder's %v: want it higher", v2.epoch, v1.epoch)
	}
	e.startCore(t, h1)
	e.waitCoreReady(t, h1, 60*time.Second)

	// Pause the holder past the TTL.
	v2, err = e.lease(h2)
	if err != nil {
		t.Fatal(err)
	}
	if v2.held != 1 {
		t.Fatalf("core %d no longer holds the lease before the pause: %+v", h2.n, v2)
	}
	pid := h2.proc.cmd.Process.Pid
	if err := h2.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = h2.proc.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	if err := waitFor(5*time.Second, time.Millisecond, func() error { return processStopped(pid) }); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// A sweep may have completed between the reading above and the stop:
	// that one ran under a valid lease. Its completion time tells it from
	// a stale one after the resume.
	stale := func(v leaseView) bool {
		return v.sweepOK > v2.sweepOK && !(v.sweepOK == v2.sweepOK+1 && v.sweepLast > 0 && v.sweepLast < float64(paused.UnixNano())/1e9)
	}
	var h3 *haCore
	var v3 leaseView
	err = waitFor(30*time.Second, 50*time.Millisecond, func() error {
		for _, c := range e.cores {
			if c == h2 {
				continue
			}
			v, err := e.lease(c)
			if err != nil {
				return fmt.Errorf("core %d: %w", c.n, err)
			}
			if v.held == 1 && v.epoch > v2.epoch {
				h3, v3 = c, v
				return nil
			}
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("no replica took the lease with a higher epoch while core %d was paused: %v", h2.n, err)
	}
	tookOver := time.Since(paused)
	if d := haLeaseTTL + 2*time.Second + 500*time.Millisecond - time.Since(paused); d > 0 {
		time.Sleep(d)
	}
	resume()
	resumedAt := time.Now()
	pausedFor := resumedAt.Sub(paused)
	var released time.Duration
	err = waitFor(15*time.Second, 20*time.Millisecond, func() error {
		v, err := e.lease(h2)
		if err != nil {
			return err
		}
		if stale(v) {
			return fmt.Errorf("core %d committed a sweep after it resumed with a stale epoch: ok %v -> %v, last at %v (resumed at %v)",
				h2.n, v2.sweepOK, v.sweepOK, v.sweepLast, float64(resumedAt.UnixNano())/1e9)
		}
		if v.held != 0 {
			return fmt.Errorf("core %d still reports the lease held: %+v", h2.n, v)
		}
		if released == 0 {
			released = time.Since(resumedAt)
		}
		return nil
	})
	if err != nil {
		t.Errorf("after the resume: %v", err)
	}
	// Watch a few more sweep intervals: the paused replica must not sweep.
	time.Sleep(3 * time.Second)
	after, err := e.lease(h2)
	if err != nil {
		t.Fatal(err)
	}
	now3, err := e.lease(h3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE lease pause: core %d (epoch %v, %v sweeps ok) paused %v; core %d took the lease with epoch %v %v into the pause; "+
		"after SIGCONT core %d reported held 0 after %v; its sweeps ok %v -> %v, fenced %v -> %v, error %v -> %v; core %d sweeps ok %v -> %v meanwhile",
		h2.n, v2.epoch, v2.sweepOK, ms(pausedFor), h3.n, v3.epoch, ms(tookOver), h2.n, ms(released), v2.sweepOK, after.sweepOK,
		v2.sweepFenced, after.sweepFenced, v2.sweepError, after.sweepError, h3.n, v3.sweepOK, now3.sweepOK)
	if stale(after) {
		t.Errorf("core %d: sweeps ok %v before the pause, %v after the resume (last completed at %v, resumed at %v): a stale holder's work was committed",
			h2.n, v2.sweepOK, after.sweepOK, after.sweepLast, float64(resumedAt.UnixNano())/1e9)
	} else if after.sweepOK != v2.sweepOK {
		t.Logf("core %d completed one sweep between the last reading and the pause (at %v, paused at %v): under its valid lease",
			h2.n, after.sweepLast, float64(paused.UnixNano())/1e9)
	}
	if after.held != 0 {
		t.Errorf("core %d reports the lease held %v after the resume", h2.n, after.held)
	}
	if released > 5*time.Second {
		t.Errorf("core %d took %v after the resume to report the lease lost, want a few seconds", h2.n, ms(released))
	}
	if now3.held != 1 || now3.sweepOK <= v3.sweepOK {
		t.Errorf("core %d (the new holder) afterwards: %+v, want held 1 and sweeps going on (ok was %v)", h3.n, now3, v3.sweepOK)
	}
	if h, _ := e.holder(t, 10*time.Second); h != h3 {
		t.Errorf("lease holder at the end is core %d, want core %d", h.n, h3.n)
	}
	loop.stop()
	t.Logf("FIGURE lease failover API loop (3 s timeout per replica): %s", loop)
	loop.check(t, "lease failover")
	e.checkProbes(t, "lease failover", from)
}

// testPostgresOutage: PostgreSQL is down for haPGOutage; the tunnels carry
// on, every replica says 503 (readiness and API, in JSON, quickly), and all
// recover by themselves when it is back.
func (e *haEnv) testPostgresOutage(t *testing.T) {
	e.ensureCores(t)
	pids := map[*haCore]int{}
	for _, c := range e.cores {
		pids[c] = c.proc.cmd.Process.Pid
	}
	from := e.window()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.pg.PgCtl(ctx, "stop", "-m", "fast", "-w", "-t", "60"); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			_ = e.coreNS.do(func() error { return e.pg.PgCtl(context.Background(), "restart", "-w", "-t", "60", "-l", e.pgLog) })
		}
	}()
	t.Logf("PostgreSQL stopped (pg_ctl stop -m fast) in %v", ms(down.Sub(from.from)))

	hc := e.coreNS.httpClient(15 * time.Second)
	type tally struct {
		n, ok   int
		slowest time.Duration
		codes   map[string]int
		bad     []string
	}
	tallies := map[string]*tally{}
	check := func(kind string, c *haCore, method, path string, body any, wantCode string) {
		tl := tallies[kind]
		if tl == nil {
			tl = &tally{codes: map[string]int{}}
			tallies[kind] = tl
		}
		start := time.Now()
		var status int
		var ctype string
		var raw []byte
		var err error
		if kind == "readyz" {
			var resp *http.Response
			resp, err = hc.Get("http://" + c.addr + path)
			if err == nil {
				ctype = resp.Header.Get("Content-Type")
				status = resp.StatusCode
				raw, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
		} else {
			status, ctype, raw, err = e.api.one(c.addr, method, path, body)
		}
		el := time.Since(start)
		tl.n++
		tl.slowest = max(tl.slowest, el)
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		jerr := json.Unmarshal(raw, &eb)
		tl.codes[fmt.Sprintf("%d %s", status, eb.Error.Code)]++
		good := err == nil && status == http.StatusServiceUnavailable && strings.HasPrefix(ctype, "application/json") && jerr == nil &&
			eb.Error.Message != "" && (wantCode == "" || eb.Error.Code == wantCode) && el <= haOutageHang
		if good {
			tl.ok++
		} else if len(tl.bad) < 5 {
			tl.bad = append(tl.bad, fmt.Sprintf("%s core %d %s %s %v into the outage: %d %q %s (err %v) after %v",
				time.Now().Format("15:04:05.000"), c.n, method, path, ms(time.Since(down)), status, ctype,
				strings.TrimSpace(string(raw[:min(len(raw), 200)])), err, ms(el)))
		}
	}
	rounds := 0
	for time.Since(down) < haPGOutage {
		round := time.Now()
		for _, c := range e.cores {
			check("readyz", c, "GET", "/readyz", nil, "")
			check("GET /api/v1/users", c, "GET", "/api/v1/users?limit=1", nil, "database_unavailable")
			name := fmt.Sprintf("outage-%s-%d-%d", e.id, rounds, c.n)
			check("POST /api/v1/users", c, "POST", "/api/v1/users", map[string]any{"username": name, "email": name + "@example.com"}, "database_unavailable")
		}
		rounds++
		if d := time.Second - time.Since(round); d > 0 && time.Since(down)+d < haPGOutage {
			time.Sleep(d)
		} else if d > 0 {
			time.Sleep(max(0, haPGOutage-time.Since(down)))
		}
	}
	for _, kind := range []string{"readyz", "GET /api/v1/users", "POST /api/v1/users"} {
		tl := tallies[kind]
		t.Logf("FIGURE database down: %s on the 3 replicas: %d calls, %d were 503 JSON as wanted, answers %v, slowest %v",
			kind, tl.n, tl.ok, tl.codes, ms(tl.slowest))
		if tl.ok != tl.n {
			t.Errorf("database down: %d of %d %s calls were not a 503 JSON answer (code database_unavailable for the API) within %v; first ones:\n%s",
				tl.n-tl.ok, tl.n, kind, haOutageHang, strings.Join(tl.bad, "\n"))
		}
	}

	// pg_ctl restart reuses the options of the first start (port, socket
	// directory), from postmaster.opts.
	startAt := time.Now()
	if err := e.coreNS.do(func() error { return e.pg.PgCtl(ctx, "restart", "-w", "-t", "60", "-l", e.pgLog) }); err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	restarted = true
	up := time.Now()
	t.Logf("PostgreSQL down for %v (pg_ctl restart took %v)", ms(up.Sub(down)), ms(up.Sub(startAt)))
	var figs []string
	for _, c := range e.cores {
		if err := waitFor(30*time.Second, 20*time.Millisecond, func() error {
			code, err := getJSON(e.plain, "http://"+c.addr+"/readyz", nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("/readyz = %d", code)
			}
			return err
		}); err != nil {
			t.Errorf("core %d /readyz not 200 within 30 s of the database's return: %v", c.n, err)
			continue
		}
		figs = append(figs, fmt.Sprintf("core %d %v", c.n, ms(time.Since(up))))
	}
	t.Logf("FIGURE database back: /readyz 200 after %s", strings.Join(figs, ", "))
	for _, c := range e.cores {
		if c.proc.exited() || c.proc.cmd.Process.Pid != pids[c] {
			t.Errorf("core %d exited during the outage (%v): it must ride it out", c.n, c.proc.waitErr)
		}
	}
	// A write on every replica, at once.
	for _, c := range e.cores {
		name := fmt.Sprintf("after-outage-%s-%d", e.id, c.n)
		status, _, raw, err := e.api.one(c.addr, "POST", "/api/v1/users", map[string]any{"username": name, "email": name + "@example.com"})
		if err != nil || status != http.StatusCreated {
			t.Errorf("first write on core %d after the database came back = %d %s (%v), want 201", c.n, status, raw, err)
		}
	}
	// A config change reaches both office gateways.
	changed := time.Now()
	_, pub, _ := wgKeyPair(t)
	r := e.api.do("POST", "/api/v1/devices", func(int) any { return map[string]any{"name": "after-outage-" + e.id, "public_key": pub} })
	if r.status != http.StatusCreated {
		t.Fatalf("new device after the outage: %v", r)
	}
	var seen []string
	for _, g := range e.gws[:2] {
		if err := waitFor(30*time.Second, 20*time.Millisecond, func() error {
			st, err := g.status()
			if err != nil {
				return err
			}
			if _, _, ok := st.peer(pub); !ok {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Errorf("the new device's peer did not reach gateway %s within 30 s: %v", g.name, err)
			continue
		}
		seen = append(seen, fmt.Sprintf("%s %v", g.name, ms(time.Since(changed))))
	}
	t.Logf("FIGURE database back: a new device's peer on %s after the POST", strings.Join(seen, ", "))
	e.waitLinked(t, 60*time.Second)
	t.Logf("FIGURE database back: every gateway and proxy linked to all 3 cores %v after the database came back (or earlier)", ms(time.Since(up)))
	if _, err := e.lease(e.cores[0]); err == nil {
		h, v := e.holder(t, 30*time.Second)
		if err := waitFor(30*time.Second, 100*time.Millisecond, func() error {
			w, err := e.lease(h)
			if err != nil {
				return err
			}
			if w.sweepOK <= v.sweepOK {
				return fmt.Errorf("core %d sweeps ok %v, not growing", h.n, w.sweepOK)
			}
			return nil
		}); err != nil {
			t.Errorf("singleton jobs after the outage: %v", err)
		}
		t.Logf("FIGURE database back: core %d holds the jobs lease (epoch %v) and sweeps again, %v after the database came back", h.n, v.epoch, ms(time.Since(up)))
	} else {
		t.Errorf("after the outage: %v", err)
	}
	e.checkProbes(t, "PostgreSQL outage", from)
}
