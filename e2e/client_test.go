package e2e

// End-to-end test of `ward client` in network namespaces, three zones:
//
//	intranet            DMZ                                client
//	core ns ──veth── dmz ns  (ward proxy, gateways A1, B1) ──veth── client ns
//	        └─veth── dmz2 ns (gateways A2, B2)             ──veth──┘
//
// Core dials the proxy and the gateways; the client reaches only the DMZ
// addresses (it has no route to the intranet). Location A ("office", MFA,
// threshold 120 s) and location B ("lab", MFA, a test-only threshold of a
// few seconds, no keepalive) each have one gateway in each DMZ namespace;
// their endpoints are the DMZ gateway first, then the DMZ2 one. Location C
// ("branch", no MFA) has one gateway, in DMZ2, and lists a dead address as
// its first endpoint. TOTP codes come from Debian's oathtool, an
// implementation independent of ours.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	wardclient "github.com/wardvpn/ward/internal/client"
)

const (
	clAdminPassword = "Client-e2e-Admin-7"
	clUserPassword  = "Client-e2e-User-pass-9"
	clCoreIP        = "10.61.1.1" // core's intranet address
	clCoreAPI       = clCoreIP + ":8000"
	clDMZCore       = "10.61.1.2" // DMZ, core side
	clDMZClient     = "10.61.2.2" // DMZ, client side: proxy and gateways A1/B1
	clDMZ2Core      = "10.61.3.2"
	clDMZ2Client    = "10.61.4.2" // DMZ2, client side: gateways A2/B2
	clProxyURL      = "http://" + clDMZClient + ":8080"
	clEchoA         = "10.77.0.1:7000" // location A's gateway address, in both DMZ namespaces
	clEchoB         = "10.78.0.1:7000"
	clEchoC         = "10.79.0.1:7000"
	clDeadEndpoint  = "10.61.2.99" // in the client's DMZ subnet; nobody has it
	clIdleThreshold = 5            // seconds; location B, with WARD_TEST_MIN_MFA_THRESHOLD
)

// clGateway is one gateway process of the client test.
type clGateway struct {
	name, locID, id string
	ns              *netns
	controlAddr     string
	healthAddr      string
	iface           string
	dataDir         string
	proc            *nsProcess
}

// clLocation is a location as the admin API shows it.
type clLocation struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Revision  int64  `json:"revision"`
}

type clientE2E struct {
	t                           *testing.T
	id, dir                     string
	coreNS, dmzNS, dmz2NS, clNS *netns
	core                        *nsProcess
	proxy                       *nsProcess
	apiC                        *client
	locA, locB, locC            clLocation
	gws                         map[string]*clGateway // a1, a2, b1, b2, c2
	cfgHome                     string                // XDG_CONFIG_HOME of the client
	totp                        totpSource
}

func (e *clientE2E) api(t *testing.T) *client {
	c := *e.apiC
	c.t = t
	return &c
}

// configPath is where the client keeps its config (the XDG default).
func (e *clientE2E) configPath() string { return filepath.Join(e.cfgHome, "ward", "client.json") }

func (e *clientE2E) clientEnv() []string {
	return []string{"XDG_CONFIG_HOME=" + e.cfgHome, "HOME=" + filepath.Join(e.dir, "home")}
}

// wardResult is one run of `ward client`.
type wardResult struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func (r wardResult) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.code, ms(r.elapsed), r.stdout, r.stderr)
}

// ward runs `ward client ARGS` inside the client namespace.
func (e *clientE2E) ward(t *testing.T, stdin string, args ...string) wardResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.clNS.name, wardBin, "client"}, args...)...)
	cmd.Env = cleanEnv(e.clientEnv()...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := wardResult{stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("ward client %s: %v\n%s", strings.Join(args, " "), err, r)
	}
	return r
}

func (e *clientE2E) mustWard(t *testing.T, want int, args ...string) wardResult {
	t.Helper()
	r := e.ward(t, "", args...)
	if r.code != want {
		t.Fatalf("ward client %s: want exit %d, got %s", strings.Join(args, " "), want, r)
	}
	return r
}

func (e *clientE2E) status(t *testing.T) wardclient.StatusReport {
	t.Helper()
	r := e.mustWard(t, 0, "status", "--json")
	var rep wardclient.StatusReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return rep
}

func (e *clientE2E) tunnel(t *testing.T, locID string) *wardclient.TunnelStatus {
	t.Helper()
	for _, l := range e.status(t).Locations {
		if l.ID == locID {
			return l.Tunnel
		}
	}
	t.Fatalf("status lists no location %s", locID)
	return nil
}

// linkExists tells whether an interface exists in the client namespace.
func (e *clientE2E) linkExists(name string) bool {
	return exec.Command("ip", "-n", e.clNS.name, "link", "show", name).Run() == nil
}

// gwStatus reads a gateway's /status.
func (g *clGateway) status() (gatewayStatus, error) {
	var st gatewayStatus
	code, err := getJSON(g.ns.httpClient(2*time.Second), "http://"+g.healthAddr+"/status", &st)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/status = %d", code)
	}
	return st, err
}

// restart stops the gateway (SIGTERM) and starts it again on its data dir,
// without a join token; it returns when /readyz answers 200, with the time
// from the new process's start.
func (g *clGateway) restart(t, owner *testing.T) time.Duration {
	t.Helper()
	g.proc.stop(t, "gateway stopped")
	return g.start(t, owner)
}

func (g *clGateway) start(t, owner *testing.T) time.Duration {
	t.Helper()
	started := time.Now()
	g.proc = startInNetns(t, owner, g.ns, "ward gateway "+g.name, nil, wardBin, "gateway",
		"--data-dir", g.dataDir, "--control-addr", g.controlAddr, "--interface", g.iface, "--health-addr", g.healthAddr,
		"--stats-interval", "500ms")
	hc := g.ns.httpClient(time.Second)
	if err := waitFor(20*time.Second, 10*time.Millisecond, func() error {
		if g.proc.exited() {
			return fmt.Errorf("exited: %v", g.proc.waitErr)
		}
		code, err := getJSON(hc, "http://"+g.healthAddr+"/readyz", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz = %d", code)
		}
		return err
	}); err != nil {
		t.Fatalf("gateway %s not ready after its start: %v\n%s", g.name, err, tailLines(g.proc.out.String(), 30))
	}
	return time.Since(started)
}

func (g *clGateway) hasPeer(key string) (present bool, handshake int64, err error) {
	st, err := g.status()
	if err != nil {
		return false, 0, err
	}
	_, hs, ok := st.peer(key)
	return ok, hs, nil
}

// totpSource computes TOTP codes with oathtool. Core accepts each time
// step once (and none older than the last one used), within one step of
// skew, so it hands out increasing steps and waits when it must.
type totpSource struct {
	oathtool string
	secret   string
	last     int64
	waited   time.Duration
}

func (s *totpSource) at(t *testing.T, step int64) string {
	t.Helper()
	out, err := exec.Command(s.oathtool, "--totp", "-b", "-N", "@"+strconv.FormatInt(step*30, 10), s.secret).CombinedOutput()
	code := strings.TrimSpace(string(out))
	if err != nil || len(code) != 6 {
		t.Fatalf("oathtool: %v %q", err, out)
	}
	return code
}

// next returns a code of a step newer than any used so far that core will
// accept for the next half minute at least.
func (s *totpSource) next(t *testing.T, allowPrevious bool) string {
	t.Helper()
	for {
		now := time.Now()
		cur := now.Unix() / 30
		cands := []int64{cur, cur + 1}
		if allowPrevious && now.Unix()%30 < 20 {
			cands = []int64{cur - 1, cur, cur + 1}
		}
		for _, step := range cands {
			if step > s.last {
				s.last = step
				return s.at(t, step)
			}
		}
		wait := time.Unix((cur+1)*30, 0).Add(50 * time.Millisecond).Sub(now)
		s.waited += wait
		t.Logf("waiting %v for the next TOTP time step (each step is accepted once)", wait.Round(time.Millisecond))
		time.Sleep(wait)
	}
}

// wrong returns a 6-digit code that no step within core's skew accepts.
func (s *totpSource) wrong(t *testing.T) string {
	cur := time.Now().Unix() / 30
	bad := map[string]bool{}
	for st := cur - 2; st <= cur+2; st++ {
		bad[s.at(t, st)] = true
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", (123456+i*7919)%1000000)
		if !bad[c] {
			return c
		}
	}
}

func newClientE2E(t *testing.T) *clientE2E {
	t.Helper()
	requireNetns(t)
	e := &clientE2E{t: t, id: runSuffix(5), dir: t.TempDir(), gws: map[string]*clGateway{}}
	e.totp.oathtool = requireProgram(t, "oathtool", "oathtool")
	e.cfgHome = filepath.Join(e.dir, "xdg")
	if err := os.MkdirAll(filepath.Join(e.dir, "home"), 0o700); err != nil {
		t.Fatal(err)
	}
	id := e.id
	e.coreNS = newNetns(t, "wcl-"+id+"-core")
	e.dmzNS = newNetns(t, "wcl-"+id+"-dmz")
	e.dmz2NS = newNetns(t, "wcl-"+id+"-dmz2")
	e.clNS = newNetns(t, "wcl-"+id+"-cl")
	veth(t, e.coreNS, "k1"+id, clCoreIP+"/24", e.dmzNS, "d1"+id, clDMZCore+"/24")
	veth(t, e.coreNS, "k2"+id, "10.61.3.1/24", e.dmz2NS, "e1"+id, clDMZ2Core+"/24")
	veth(t, e.clNS, "c1"+id, "10.61.2.1/24", e.dmzNS, "d2"+id, clDMZClient+"/24")
	veth(t, e.clNS, "c2"+id, "10.61.4.1/24", e.dmz2NS, "e2"+id, clDMZ2Client+"/24")

	// Stop whatever tunnels the client left, before the namespaces go.
	t.Cleanup(e.stopClientTunnels)

	e.core = startInNetns(t, t, e.coreNS, "ward core", []string{"WARD_ADMIN_PASSWORD=" + clAdminPassword,
		"WARD_TEST_MIN_MFA_THRESHOLD=" + strconv.Itoa(clIdleThreshold)}, wardBin,
		"core", "--data-dir", filepath.Join(e.dir, "core"), "--http-addr", "0.0.0.0:8000", "--public-url", "http://"+clCoreAPI,
		"--sweep-interval", "200ms")
	hc := e.coreNS.httpClient(2 * time.Second)
	if err := waitFor(60*time.Second, 50*time.Millisecond, func() error {
		if e.core.exited() {
			return fmt.Errorf("core exited: %v", e.core.waitErr)
		}
		code, err := getJSON(hc, "http://"+clCoreAPI+"/readyz", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz = %d", code)
		}
		return err
	}); err != nil {
		t.Fatalf("ward core not ready: %v", err)
	}
	jar, _ := cookiejar.New(nil)
	ahc := e.coreNS.httpClient(30 * time.Second)
	ahc.Jar = jar
	e.apiC = &client{t: t, base: "http://" + clCoreAPI, hc: ahc}
	if st := e.apiC.login("admin", clAdminPassword); st != http.StatusOK {
		t.Fatalf("admin login = %d", st)
	}
	api := e.api(t)

	// Locations, then their gateways and the proxy.
	api.must("POST", "/api/v1/locations", map[string]any{"name": "office-" + id, "addresses": []string{"10.77.0.1/24"},
		"endpoint": clDMZClient, "extra_endpoints": []string{clDMZ2Client}, "listen_port": 51820,
		"mfa_mode": "internal", "disconnect_threshold": 120}, http.StatusCreated, &e.locA)
	api.must("POST", "/api/v1/locations", map[string]any{"name": "lab-" + id, "addresses": []string{"10.78.0.1/24"},
		"endpoint": clDMZClient, "extra_endpoints": []string{clDMZ2Client}, "listen_port": 51821, "keepalive": 0,
		"mfa_mode": "internal", "disconnect_threshold": clIdleThreshold}, http.StatusCreated, &e.locB)
	api.must("POST", "/api/v1/locations", map[string]any{"name": "branch-" + id, "addresses": []string{"10.79.0.1/24"},
		"endpoint": clDeadEndpoint, "extra_endpoints": []string{clDMZ2Client}, "listen_port": 51822}, http.StatusCreated, &e.locC)
	start := time.Now()
	for _, g := range []*clGateway{
		{name: "a1", locID: e.locA.ID, ns: e.dmzNS, controlAddr: clDMZCore + ":50166", healthAddr: "127.0.0.1:50167", iface: "wa" + id},
		{name: "b1", locID: e.locB.ID, ns: e.dmzNS, controlAddr: clDMZCore + ":50266", healthAddr: "127.0.0.1:50267", iface: "wb" + id},
		{name: "a2", locID: e.locA.ID, ns: e.dmz2NS, controlAddr: clDMZ2Core + ":50166", healthAddr: "127.0.0.1:50167", iface: "xa" + id},
		{name: "b2", locID: e.locB.ID, ns: e.dmz2NS, controlAddr: clDMZ2Core + ":50266", healthAddr: "127.0.0.1:50267", iface: "xb" + id},
		{name: "c2", locID: e.locC.ID, ns: e.dmz2NS, controlAddr: clDMZ2Core + ":50366", healthAddr: "127.0.0.1:50367", iface: "xc" + id},
	} {
		var created apiGateway
		api.must("POST", "/api/v1/locations/"+g.locID+"/gateways", map[string]any{"name": g.name, "control_address": g.controlAddr},
			http.StatusCreated, &created)
		g.id, g.dataDir = created.ID, filepath.Join(e.dir, "gw-"+g.name)
		g.proc = startInNetns(t, t, g.ns, "ward gateway "+g.name, []string{"WARD_JOIN_TOKEN=" + created.JoinToken}, wardBin, "gateway",
			"--data-dir", g.dataDir, "--control-addr", g.controlAddr, "--interface", g.iface, "--health-addr", g.healthAddr,
			"--stats-interval", "500ms")
		e.gws[g.name] = g
	}
	var px apiProxy
	api.must("POST", "/api/v1/proxies", map[string]any{"name": "edge", "control_address": clDMZCore + ":50068"}, http.StatusCreated, &px)
	e.proxy = startInNetns(t, t, e.dmzNS, "ward proxy", []string{"WARD_JOIN_TOKEN=" + px.JoinToken}, wardBin, "proxy",
		"--data-dir", filepath.Join(e.dir, "proxy"), "--http-addr", clDMZClient+":8080", "--control-addr", clDMZCore+":50068",
		"--health-addr", "127.0.0.1:50069", "--request-timeout", "20s")

	err := waitFor(60*time.Second, 50*time.Millisecond, func() error {
		for _, g := range e.gws {
			if g.proc.exited() {
				return fmt.Errorf("gateway %s exited: %v", g.name, g.proc.waitErr)
			}
			var gw apiGateway
			api.must("GET", "/api/v1/locations/"+g.locID+"/gateways/"+g.id, nil, http.StatusOK, &gw)
			if !gw.Status.Adopted || !gw.Status.Connected {
				return fmt.Errorf("gateway %s: %+v", g.name, gw.Status)
			}
			st, err := g.status()
			if err != nil {
				return fmt.Errorf("gateway %s: %v", g.name, err)
			}
			if !st.Ready {
				return fmt.Errorf("gateway %s not ready: %s", g.name, st.ReadyReason)
			}
		}
		if e.proxy.exited() {
			return fmt.Errorf("proxy exited: %v", e.proxy.waitErr)
		}
		if p := getAPIProxy(api, px.ID); len(p.connectedCores()) == 0 {
			return fmt.Errorf("proxy not linked: %+v", p.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("components not up: %v", err)
	}
	t.Logf("FIGURE setup: 5 gateways adopted and the proxy linked %v after they started", time.Since(start).Round(time.Millisecond))

	// Echo services on the gateways' tunnel addresses, in both DMZs.
	for _, n := range []*netns{e.dmzNS, e.dmz2NS} {
		go serveEcho(n.listen(t, "tcp", "0.0.0.0:7000"))
	}
	return e
}

// stopClientTunnels ends tunnel processes the client left (by the PIDs in
// their pid files, after `ward client down`).
func (e *clientE2E) stopClientTunnels() {
	dir := filepath.Join(e.cfgHome, "ward")
	if e.t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(dir, "tunnel-*.log"))
		for _, l := range logs {
			raw, _ := os.ReadFile(l)
			e.t.Logf("%s:\n%s", filepath.Base(l), tailLines(string(raw), 40))
		}
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "tunnel-*.pid"))
	for _, m := range matches {
		raw, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 {
			continue
		}
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), wardBin) {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill() // a tunnel process this test started (through ward client up)
			}
			e.t.Logf("killed a leftover tunnel process %d (%s)", pid, filepath.Base(m))
		}
	}
}

// enroll runs `ward client enroll --totp`, answering the TOTP prompt with a
// code oathtool computes from the secret the client printed.
func (e *clientE2E) enroll(t *testing.T, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.clNS.name, wardBin, "client", "enroll", "--url", clProxyURL,
		"--token", token, "--password-stdin", "--totp", "--name", "laptop")
	cmd.Env = cleanEnv(e.clientEnv()...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut syncBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, clUserPassword+"\n"); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	buf := make([]byte, 4096)
	answered := false
	for {
		n, rerr := stdout.Read(buf)
		out.Write(buf[:n])
		text := out.String()
		if !answered {
			if i := strings.Index(text, "TOTP secret: "); i >= 0 {
				if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
					e.totp.secret = strings.TrimSpace(text[i+len("TOTP secret: ") : i+j])
					code := e.totp.next(t, true)
					if _, err := io.WriteString(stdin, code+"\n"); err != nil {
						t.Fatal(err)
					}
					stdin.Close()
					answered = true
				}
			}
		}
		if rerr != nil {
			break
		}
	}
	err = cmd.Wait()
	if err != nil || !answered {
		t.Fatalf("ward client enroll: %v (TOTP prompt answered: %v)\nstdout:\n%s\nstderr:\n%s", err, answered, out.String(), errOut.String())
	}
	return out.String()
}

func TestClientEndToEnd(t *testing.T) {
	t.Parallel()
	testStart := time.Now()
	e := newClientE2E(t)
	var (
		devKey    string
		codeA1    string
		bgPID     int
		fg        *nsProcess
		labTunnel *wardclient.TunnelStatus
		fgIface   = "wf" + e.id
		bgIface   = "wo" + e.id
		labIface  = "wl" + e.id
		officeRef = e.locA.Name
		labRef    = e.locB.Name
	)

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Isolation", func(t *testing.T) {
			// The client reaches the DMZ, never the intranet.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if c, err := e.clNS.dial(ctx, "tcp", clCoreAPI); err == nil {
				c.Close()
				t.Fatalf("the client namespace reached core at %s", clCoreAPI)
			} else {
				t.Logf("client → core %s: %v (as it must)", clCoreAPI, err)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel2()
			c, err := e.dmzNS.dial(ctx2, "tcp", clCoreAPI)
			if err != nil {
				t.Fatalf("the DMZ cannot reach core's address either (so the check above proves nothing): %v", err)
			}
			c.Close()
			if err := echoOnce(e.clNS, clDMZClient+":7000", 2*time.Second); err != nil {
				t.Fatalf("the client cannot reach the DMZ: %v", err)
			}
		}},

		{"Enroll", func(t *testing.T) {
			api := e.api(t)
			var u struct {
				ID string `json:"id"`
			}
			active := false
			api.must("POST", "/api/v1/users", map[string]any{"username": "alice", "email": "alice@example.com", "first_name": "Alice",
				"active": active}, http.StatusCreated, &u)
			var en struct {
				Token string `json:"token"`
			}
			api.must("POST", "/api/v1/users/"+u.ID+"/enrollment", map[string]any{"send_email": false}, http.StatusCreated, &en)

			// Not enrolled yet: exit 4.
			if r := e.ward(t, "", "status"); r.code != 4 || !strings.Contains(r.stderr, "ward client enroll") {
				t.Fatalf("status before enrollment: want exit 4 naming `ward client enroll`, got %s", r)
			}
			// A wrong token: exit 3.
			if r := e.ward(t, clUserPassword+"\n", "enroll", "--url", clProxyURL, "--token", "nope", "--password-stdin"); r.code != 3 ||
				!strings.Contains(r.stderr, "next:") {
				t.Fatalf("enroll with a bad token: want exit 3 with a next step, got %s", r)
			}

			start := time.Now()
			out := e.enroll(t, en.Token)
			t.Logf("FIGURE enroll (password, TOTP confirmed with an oathtool code, device, complete, sync) took %v", time.Since(start).Round(time.Millisecond))
			if n := strings.Count(out, "\n  "); !strings.Contains(out, "Recovery codes") || n < 10 {
				t.Fatalf("enroll output shows no recovery codes:\n%s", out)
			}
			if !strings.Contains(out, "otpauth://totp/") || e.totp.secret == "" {
				t.Fatalf("enroll printed no otpauth URL:\n%s", out)
			}

			// The config: 0600 in a 0700 directory, with the private key.
			st, err := os.Stat(e.configPath())
			if err != nil {
				t.Fatal(err)
			}
			dst, err := os.Stat(filepath.Dir(e.configPath()))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
				t.Fatalf("config mode %v, dir mode %v; want 0600 and 0700", st.Mode().Perm(), dst.Mode().Perm())
			}
			var cfg wardclient.Config
			raw, _ := os.ReadFile(e.configPath())
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.PrivateKey == "" || cfg.PublicKey == "" || !strings.HasPrefix(cfg.SyncToken, "wardc_") || !cfg.Completed ||
				cfg.ProxyURL != clProxyURL || cfg.Username != "alice" || len(cfg.Locations) != 3 {
				t.Fatalf("config after enrollment: %+v", cfg)
			}
			devKey = cfg.PublicKey

			rep := e.status(t)
			for _, l := range rep.Locations {
				wantMFA := "internal"
				if l.ID == e.locC.ID {
					wantMFA = "disabled"
				}
				if l.MFAMode != wantMFA || len(l.Endpoints) != 2 || l.Up {
					t.Fatalf("status location %+v", l)
				}
			}
			if r := e.mustWard(t, 0, "status"); !strings.Contains(r.stdout, "Enrolled as alice at "+clProxyURL) ||
				!strings.Contains(r.stdout, clDMZClient+":51820, "+clDMZ2Client+":51820") {
				t.Fatalf("status text:\n%s", r.stdout)
			}

			// Sync: nothing new, then a change made by the admin shows.
			if r := e.mustWard(t, 0, "sync"); !strings.Contains(r.stdout, "No changes") {
				t.Fatalf("sync: %s", r)
			}
			api.must("PATCH", "/api/v1/locations/"+e.locA.ID, map[string]any{"dns": []string{"10.77.0.53"}}, http.StatusOK, nil)
			if r := e.mustWard(t, 0, "sync"); !strings.Contains(r.stdout, "changed: "+officeRef+" (dns)") {
				t.Fatalf("sync after a DNS change: %s", r)
			}
			if r := e.ward(t, "", "up", "nowhere"); r.code != 4 || !strings.Contains(r.stderr, "unknown location") {
				t.Fatalf("up of an unknown location: want exit 4, got %s", r)
			}
			if r := e.ward(t, "", "up"); r.code != 2 {
				t.Fatalf("up without a location: want exit 2, got %s", r)
			}
		}},

		{"MFAUpBackground", func(t *testing.T) {
			codeA1 = e.totp.next(t, false)
			r := e.mustWard(t, 0, "up", officeRef, "--code", codeA1, "--interface", bgIface)
			t.Logf("FIGURE up (sync, MFA start+finish through the proxy, gateways' ack, tunnel, handshake), background: %v", ms(r.elapsed))
			if !strings.Contains(r.stdout, "is up (pid") {
				t.Fatalf("up output: %s", r)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if out, err := e.clNS.exec(ctx, nil, "ip", "route", "get", "10.77.0.1"); err != nil || !strings.Contains(out, "dev "+bgIface) {
				t.Fatalf("route to 10.77.0.1: %v %s", err, out)
			}
			start := time.Now()
			if err := echoOnce(e.clNS, clEchoA, 3*time.Second); err != nil {
				t.Fatalf("TCP echo through the MFA tunnel: %v", err)
			}
			t.Logf("FIGURE first TCP echo through the tunnel: %v", ms(time.Since(start)))
			tun := e.tunnel(t, e.locA.ID)
			if tun == nil || tun.LastHandshake == 0 || tun.Interface != bgIface || tun.Endpoint != clDMZClient+":51820" || !tun.MFA || tun.SessionID == "" {
				t.Fatalf("status of the tunnel: %+v", tun)
			}
			bgPID = tun.PID
			if r := e.mustWard(t, 0, "status"); !strings.Contains(r.stdout, "interface "+bgIface) || !strings.Contains(r.stdout, "last handshake") {
				t.Fatalf("status text with a tunnel up:\n%s", r.stdout)
			} else {
				t.Logf("ward client status:\n%s", r.stdout)
			}
			// The session's peer is on every gateway of the location.
			for _, name := range []string{"a1", "a2"} {
				ok, _, err := e.gws[name].hasPeer(devKey)
				if err != nil || !ok {
					t.Fatalf("gateway %s does not list the device's peer: %v", name, err)
				}
			}
			if _, hs, _ := e.gws["a1"].hasPeer(devKey); hs == 0 {
				t.Fatalf("gateway a1 saw no handshake")
			}
			if r := e.ward(t, "", "up", officeRef, "--code", "000000"); r.code != 6 || !strings.Contains(r.stderr, "already up") {
				t.Fatalf("second up of a location that is up: want exit 6 'already up', got %s", r)
			}
		}},

		{"WrongAndReplayedCode", func(t *testing.T) {
			r := e.mustWard(t, 0, "down", officeRef)
			if !strings.Contains(r.stdout, "is down") {
				t.Fatalf("down: %s", r)
			}
			if e.linkExists(bgIface) {
				t.Fatalf("interface %s still exists after down", bgIface)
			}
			if alive := exec.Command("kill", "-0", strconv.Itoa(bgPID)).Run() == nil; alive {
				if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", bgPID)); !strings.Contains(string(st), ") Z ") {
					t.Fatalf("tunnel process %d still runs after down", bgPID)
				}
			}
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(e.configPath()), "tunnel-*.pid")); len(m) != 0 {
				t.Fatalf("pid files left after down: %v", m)
			}
			if r := e.mustWard(t, 0, "down", officeRef); !strings.Contains(r.stdout, "not up") {
				t.Fatalf("second down: %s", r)
			}

			wrong := e.totp.wrong(t)
			r = e.ward(t, "", "up", officeRef, "--code", wrong, "--interface", bgIface)
			t.Logf("wrong code: %s", r)
			if r.code != 3 || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stderr, "wrong") || !strings.Contains(r.stderr, "next:") {
				t.Fatalf("a wrong code: want exit 3 with a clear message, got %s", r)
			}
			r = e.ward(t, "", "up", officeRef, "--code", codeA1, "--interface", bgIface)
			t.Logf("replayed code: %s", r)
			if r.code != 3 || !strings.Contains(r.stderr, "already used") {
				t.Fatalf("the replayed code: want exit 3 'already used', got %s", r)
			}
			if e.linkExists(bgIface) {
				t.Fatal("a refused login left an interface")
			}
			if r := e.ward(t, "", "up", officeRef, "--interface", bgIface); r.code != 2 || !strings.Contains(r.stderr, "--code") {
				t.Fatalf("up without a code and no input: want exit 2 naming --code, got %s", r)
			}
		}},

		{"DeadFirstEndpoint", func(t *testing.T) {
			// No MFA here, and the first endpoint answers nothing: the
			// handshake goes unanswered, the client moves to the second.
			iface := "wc" + e.id
			r := e.mustWard(t, 0, "up", e.locC.Name, "--interface", iface)
			tun := e.tunnel(t, e.locC.ID)
			if tun == nil || tun.Endpoint != clDMZ2Client+":51822" || tun.Switches < 1 || tun.MFA || tun.SessionID != "" {
				t.Fatalf("tunnel with a dead first endpoint: %+v", tun)
			}
			if err := echoOnce(e.clNS, clEchoC, 3*time.Second); err != nil {
				t.Fatalf("TCP echo through the second endpoint: %v", err)
			}
			t.Logf("FIGURE up with a dead first endpoint (no MFA): ready on the second endpoint %v after the command started", ms(r.elapsed))
			e.mustWard(t, 0, "down", e.locC.Name)
		}},

		{"IdleSessionClosed", func(t *testing.T) {
			code := e.totp.next(t, false)
			e.mustWard(t, 0, "up", labRef, "--code", code, "--interface", labIface)
			if err := echoOnce(e.clNS, clEchoB, 3*time.Second); err != nil {
				t.Fatalf("TCP echo through the lab tunnel: %v", err)
			}
			tun := e.tunnel(t, e.locB.ID)
			if tun == nil || tun.SessionID == "" || tun.LastHandshake == 0 {
				t.Fatalf("lab tunnel status: %+v", tun)
			}
			for _, name := range []string{"b1", "b2"} {
				if ok, _, err := e.gws[name].hasPeer(devKey); err != nil || !ok {
					t.Fatalf("gateway %s does not list the session's peer: %v", name, err)
				}
			}
			// Idle: no traffic, no keepalive. The sweep closes the session
			// once its newest handshake is older than the threshold, and
			// every gateway of the location drops the peer.
			hs := time.UnixMilli(tun.LastHandshake)
			var gone time.Time
			err := waitFor(40*time.Second, 100*time.Millisecond, func() error {
				for _, name := range []string{"b1", "b2"} {
					ok, _, err := e.gws[name].hasPeer(devKey)
					if err != nil {
						return err
					}
					if ok {
						return fmt.Errorf("gateway %s still lists the peer", name)
					}
				}
				gone = time.Now()
				return nil
			})
			if err != nil {
				t.Fatalf("the idle session's peer stayed: %v", err)
			}
			t.Logf("FIGURE idle MFA session: peer gone from both gateways %v after the last handshake (threshold %d s, sweep 200 ms, stats 500 ms)",
				gone.Sub(hs).Round(time.Millisecond), clIdleThreshold)
			var audit struct {
				Items []struct {
					Action  string         `json:"action"`
					Details map[string]any `json:"details"`
				} `json:"items"`
			}
			e.api(t).must("GET", "/api/v1/audit?action=vpn_session.closed&target_id="+tun.SessionID, nil, http.StatusOK, &audit)
			if len(audit.Items) != 1 || audit.Items[0].Details["reason"] != "inactive" {
				t.Fatalf("audit of the session's close: %+v", audit.Items)
			}
			// The tunnel process still runs, but the gateways no longer
			// know its key: nothing passes.
			if err := echoOnce(e.clNS, clEchoB, time.Second); err == nil {
				t.Fatal("traffic still passes after the session was closed")
			}
			e.mustWard(t, 0, "down", labRef)
			// The client must do MFA again: the old code does not do.
			if r := e.ward(t, "", "up", labRef, "--code", code, "--interface", labIface); r.code != 3 {
				t.Fatalf("up with the code of the closed session: want exit 3, got %s", r)
			}
			// This time the code comes as a line on stdin, as a script would
			// pipe it (a person gets a prompt).
			code = e.totp.next(t, false)
			r := e.ward(t, code+"\n", "up", labRef, "--interface", labIface)
			if r.code != 0 {
				t.Fatalf("up with the code on stdin: %s", r)
			}
			if err := echoOnce(e.clNS, clEchoB, 3*time.Second); err != nil {
				t.Fatalf("TCP echo after a new MFA login: %v", err)
			}
			t.Logf("FIGURE up after the idle close with a fresh code: %v", ms(r.elapsed))
			e.mustWard(t, 0, "down", labRef)
		}},

		{"ForegroundAndGatewayFailover", func(t *testing.T) {
			code := e.totp.next(t, false)
			start := time.Now()
			fg = startInNetns(t, e.t, e.clNS, "ward client up --foreground", e.clientEnv(), wardBin, "client", "up", officeRef,
				"--foreground", "--code", code, "--interface", fgIface)
			err := waitFor(45*time.Second, 20*time.Millisecond, func() error {
				if fg.exited() {
					return fmt.Errorf("exited: %v\n%s", fg.waitErr, fg.out.String())
				}
				if !strings.Contains(fg.out.String(), "is up: interface "+fgIface) {
					return errNotYet
				}
				return nil
			})
			if err != nil {
				t.Fatalf("foreground up: %v", err)
			}
			t.Logf("FIGURE up --foreground: up %v after start", ms(time.Since(start)))
			if err := echoOnce(e.clNS, clEchoA, 3*time.Second); err != nil {
				t.Fatalf("TCP echo through the foreground tunnel: %v", err)
			}
			if tun := e.tunnel(t, e.locA.ID); tun == nil || tun.Interface != fgIface || tun.Endpoint != clDMZClient+":51820" {
				t.Fatalf("foreground tunnel status: %+v", tun)
			}

			// Gateway A1 dies; the client moves to A2 by itself.
			p := startProber(t, e.clNS, clEchoA, 50*time.Millisecond, 400*time.Millisecond)
			time.Sleep(500 * time.Millisecond)
			if f := failures(p.snapshot()); len(f) > 0 {
				t.Fatalf("probes failed before the failover: %v", f[0].err)
			}
			// A restart without core restores what core signed: let the
			// signature of the new session's revision reach a1 first (the
			// reboot step below restarts it from disk).
			if err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
				st, err := e.gws["a1"].status()
				if err != nil {
					return err
				}
				if st.SignedRevision != st.AppliedRevision || st.UnsignedChanges != 0 {
					return fmt.Errorf("gateway a1 signed revision %d, applied %d, %d unsigned changes", st.SignedRevision, st.AppliedRevision, st.UnsignedChanges)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			e.gws["a1"].proc.kill(t)
			err = waitFor(20*time.Second, 50*time.Millisecond, func() error {
				rs := p.snapshot()
				last := rs[len(rs)-1]
				if last.err != nil || !last.start.After(killed) || len(failures(rs)) == 0 {
					return errNotYet
				}
				return nil
			})
			if err != nil {
				t.Fatalf("traffic did not resume after gateway a1 died (%d failed probes)", len(failures(p.snapshot())))
			}
			time.Sleep(time.Second)
			rs := p.stop()
			var lastFail, recovered time.Time
			for _, r := range rs {
				if r.err != nil && r.start.After(killed) {
					lastFail = r.start
				}
			}
			for _, r := range rs {
				if r.err == nil && r.start.After(lastFail) {
					recovered = r.end
					break
				}
			}
			outage := recovered.Sub(killed)
			t.Logf("FIGURE gateway failover: outage %v after SIGKILL of gateway a1 (%d of %d probes failed, every 50 ms, 400 ms timeout)",
				ms(outage), len(failures(rs)), len(rs))
			if outage > 8*time.Second {
				t.Fatalf("failover took %v, want well under 8 s (StallAfter 1.5 s)", outage)
			}
			tun := e.tunnel(t, e.locA.ID)
			if tun == nil || tun.Endpoint != clDMZ2Client+":51820" || tun.Switches < 1 {
				t.Fatalf("tunnel after the failover: %+v", tun)
			}
			if !strings.Contains(fg.out.String(), "switched endpoint") {
				t.Fatalf("the client did not log the switch:\n%s", fg.out.String())
			}
		}},

		{"LabSessionBeforeCoreDies", func(t *testing.T) {
			// An MFA session of the lab (threshold a few seconds, no
			// keepalive) that will be idle past its threshold while core
			// is away: the gateways must drop it by themselves.
			code := e.totp.next(t, false)
			e.mustWard(t, 0, "up", labRef, "--code", code, "--interface", labIface)
			if err := echoOnce(e.clNS, clEchoB, 3*time.Second); err != nil {
				t.Fatalf("TCP echo through the lab tunnel: %v", err)
			}
			labTunnel = e.tunnel(t, e.locB.ID)
			if labTunnel == nil || labTunnel.LastHandshake == 0 {
				t.Fatalf("lab tunnel status: %+v", labTunnel)
			}
			// Both lab gateways hold the peer before core dies. Whether
			// core told them of the handshake yet or not, they must not
			// keep the session past its rules.
			if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
				for _, name := range []string{"b1", "b2"} {
					st, err := e.gws[name].status()
					if err != nil {
						return err
					}
					if _, _, ok := st.peer(devKey); !ok {
						return fmt.Errorf("gateway %s does not list the lab peer", name)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}},

		{"CoreStopped", func(t *testing.T) {
			if fg == nil {
				t.Skip("no foreground tunnel")
			}
			killed := time.Now()
			e.core.kill(t)
			hc := e.clNS.httpClient(5 * time.Second)
			var first time.Duration
			err := waitFor(15*time.Second, 20*time.Millisecond, func() error {
				resp, err := hc.Get(clProxyURL + "/api/v1/public/enrollment/x")
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				first = time.Since(killed)
				return nil
			})
			if err != nil {
				t.Fatalf("the proxy never answered 503 after core died: %v", err)
			}
			var worst time.Duration
			for range 10 {
				s := time.Now()
				resp, err := hc.Get(clProxyURL + "/api/v1/public/enrollment/x")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				el := time.Since(s)
				worst = max(worst, el)
				if resp.StatusCode != 503 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
					!strings.Contains(string(body), `"code":"core_unavailable"`) {
					t.Fatalf("proxy without core: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
			}
			if worst > time.Second {
				t.Fatalf("a 503 took %v, want it at once", worst)
			}
			t.Logf("FIGURE core SIGKILL: proxy answers 503 JSON %v after the kill; slowest of 10 503s %v", ms(first), ms(worst))

			r := e.ward(t, "", "sync")
			if r.code != 5 || !strings.Contains(r.stderr, "core_unavailable") || !strings.Contains(r.stderr, "next:") {
				t.Fatalf("sync without core: want exit 5 with a clear message, got %s", r)
			}
			t.Logf("FIGURE sync without core: exit 5 after %v: %s", ms(r.elapsed), strings.TrimSpace(r.stderr))
			if r := e.mustWard(t, 0, "status"); !strings.Contains(r.stdout, ": UP") {
				t.Fatalf("status without core: %s", r)
			}

			p := startProber(t, e.clNS, clEchoA, 100*time.Millisecond, time.Second)
			time.Sleep(3 * time.Second)
			rs := p.stop()
			if f := failures(rs); len(f) > 0 {
				t.Fatalf("the established tunnel without core: %d of %d probes failed (first: %v)", len(f), len(rs), f[0].err)
			}
			if len(rs) < 25 {
				t.Fatalf("only %d probes in 3 s", len(rs))
			}
			t.Logf("FIGURE established tunnel without core: %d probes over 3 s, 0 failed", len(rs))
		}},

		{"GatewayRebootWithoutCore", func(t *testing.T) {
			if fg == nil || labTunnel == nil {
				t.Skip("no foreground or lab tunnel")
			}
			// Core (and its SQLite database) are down. Gateways a1 and b1
			// are down too, and come back after the lab session's deadline
			// passed: the office session (threshold 120 s) must be restored
			// from the signed config on disk, the lab one must not.
			a1, b1, b2 := e.gws["a1"], e.gws["b1"], e.gws["b2"]
			for _, g := range []*clGateway{a1, b1} {
				if !g.proc.exited() { // a1 was killed in the failover step
					g.proc.stop(t, "gateway stopped")
				}
			}
			deadline := time.UnixMilli(labTunnel.LastHandshake).Add(clIdleThreshold * time.Second)
			// b2 stays up: it drops the idle lab peer on its own.
			var droppedAt time.Time
			if err := waitFor(30*time.Second, 100*time.Millisecond, func() error {
				ok, _, err := b2.hasPeer(devKey)
				if err != nil {
					return err
				}
				if ok {
					return errNotYet
				}
				droppedAt = time.Now()
				return nil
			}); err != nil {
				t.Fatalf("gateway b2 kept the lab session's peer past its threshold without core: %v", err)
			}
			// A gateway that never learnt of the handshake counts from the
			// session's start (its deadline to connect), a little before
			// the handshake: allow that much.
			if droppedAt.Before(deadline.Add(-time.Second)) {
				t.Fatalf("gateway b2 dropped the lab peer %v before its deadline\n%s", deadline.Sub(droppedAt), tailLines(b2.proc.out.String(), 15))
			}
			time.Sleep(time.Until(deadline.Add(time.Second)))
			readyA := a1.start(t, e.t)
			readyB := b1.start(t, e.t)
			stA, err := a1.status()
			if err != nil {
				t.Fatal(err)
			}
			if _, _, ok := stA.peer(devKey); !ok || !stA.Ready || len(stA.CoreLinks) != 0 {
				t.Fatalf("gateway a1 rebooted without core: the office session's peer is not back: %+v", stA)
			}
			stB, err := b1.status()
			if err != nil {
				t.Fatal(err)
			}
			if _, _, ok := stB.peer(devKey); ok || !stB.Ready {
				t.Fatalf("gateway b1 rebooted without core restored the lab peer past its deadline: %+v", stB)
			}
			if readyA > 2*time.Second || readyB > 2*time.Second {
				t.Errorf("rebooted gateways ready after %v and %v, want within 2 s", readyA, readyB)
			}
			// The office tunnel carries traffic.
			if err := waitFor(20*time.Second, 100*time.Millisecond, func() error { return echoOnce(e.clNS, clEchoA, time.Second) }); err != nil {
				t.Fatalf("office tunnel after the gateway reboot without core: %v", err)
			}
			t.Logf("FIGURE gateways rebooted with core and database down: ready with the signed config in %v (a1) and %v (b1); "+
				"office MFA peer restored, lab MFA peer past its deadline not restored (b2 dropped it by itself %v after the deadline)",
				ms(readyA), ms(readyB), ms(droppedAt.Sub(deadline)))
			e.mustWard(t, 0, "down", labRef)
		}},

		{"ForegroundStops", func(t *testing.T) {
			if fg == nil {
				t.Skip("no foreground tunnel")
			}
			fg.stop(t, "tunnel down")
			if e.linkExists(fgIface) {
				t.Fatalf("interface %s exists after SIGTERM", fgIface)
			}
			for _, l := range e.status(t).Locations {
				if l.Up {
					t.Fatalf("status after the foreground process ended: %+v", l)
				}
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			break
		}
	}
	t.Logf("FIGURE whole test %v, of which %v waiting for TOTP time steps", time.Since(testStart).Round(time.Millisecond),
		e.totp.waited.Round(time.Millisecond))
}
