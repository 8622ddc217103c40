// Package demo is `ward demo`: the whole system in one process, without
// privileges. Core runs on a temporary SQLite database, a proxy, and one
// location with internal MFA served by two gateways whose WireGuard runs on
// gVisor's userspace network stack (wgengine.Netstack: no TUN device, no
// routes); every port is on 127.0.0.1. A user is enrolled and does VPN MFA
// through the proxy's public API like a real client, the client's netstack
// tunnel fetches a page from a small service on the gateways' tunnel
// address, then gateway 1 stops and the client fails over to gateway 2.
//
// Everything is driven through the real interfaces: the admin REST API over
// loopback, adoption with join tokens, the public API through the proxy;
// only the in-process wiring (engines, listeners) is the demo's own.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/coreapp"
	"github.com/wardvpn/ward/internal/gateway"
	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/gwlink"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/logging"
	"github.com/wardvpn/ward/internal/proxy"
)

// Options of a run.
type Options struct {
	// Stay keeps everything running after the story until ctx ends.
	Stay bool
	// Keep leaves the working directory (database, identities, log).
	Keep bool
	// Verbose sends the components' logs to stderr instead of the log file.
	Verbose bool
	// Version is what the components report.
	Version string
}

// What the story uses.
const (
	locationName    = "office"
	locationNetwork = "10.99.0.0/24"
	username        = "alice"
	deviceName      = "alice-laptop"
	stepCount       = 9
	// stallAfter is the client watchdog's silence threshold.
	stallAfter = time.Second
	// fetchEvery is the client's fetch rhythm during the failover.
	fetchEvery = 100 * time.Millisecond
)

// Run plays the demo: it prints the story on stdout and returns nil when
// every step worked. The working directory is removed at the end unless
// opts.Keep.
func Run(ctx context.Context, opts Options, stdout, stderr io.Writer) error {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	dir, err := os.MkdirTemp("", "ward-demo-")
	if err != nil {
		return fmt.Errorf("create the working directory: %w", err)
	}
	d := &demo{opts: opts, out: stdout, dir: dir, started: time.Now()}
	logPath := filepath.Join(dir, "demo.log")
	var logOut io.Writer = stderr
	if !opts.Verbose {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			os.RemoveAll(dir)
			return fmt.Errorf("create the log file: %w", err)
		}
		d.logFile = f
		logOut = f
	}
	d.log = logging.New(logOut, "info", "text")

	d.printf("ward demo: the whole system in one process, without privileges\n")
	d.printf("  Core, a proxy and two gateways of one MFA location run here; WireGuard runs on gVisor's\n")
	d.printf("  userspace network stack (no TUN device, no routes) and every port is on 127.0.0.1.\n")
	d.printf("  %s\n", whoAmI())
	keepNote := "removed at exit; --keep keeps it"
	if opts.Keep {
		keepNote = "kept at exit (--keep)"
	}
	d.printf("  Working directory %s (%s)\n", dir, keepNote)
	if opts.Verbose {
		d.printf("  Component logs: stderr (--verbose)\n")
	} else {
		d.printf("  Component logs: %s\n", logPath)
	}

	storyCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.cancelStory = cancel
	storyErr := d.story(storyCtx)
	if storyErr == nil && opts.Stay {
		d.stay(storyCtx)
		if ctx.Err() == nil {
			storyErr = storyCtx.Err() // a component ended by itself
		}
	}
	interrupted := false
	if storyErr != nil {
		switch cause := context.Cause(storyCtx); {
		case ctx.Err() != nil:
			storyErr, interrupted = errors.New("interrupted"), true
			d.printf("\nInterrupted at step %d/%d (%s).\n", d.stepNo, stepCount, d.stepName)
		case cause != nil && !errors.Is(cause, context.Canceled):
			storyErr = cause
		}
		if !interrupted {
			d.printf("\nFAILED at step %d/%d (%s): %v\n", d.stepNo, stepCount, d.stepName, storyErr)
		}
	}

	var logTail []string
	if storyErr != nil && !interrupted && !opts.Verbose {
		logTail = tail(logPath, 25) // before the shutdown adds its noise
	}

	d.printf("\nStopping everything... ")
	stopStart := time.Now()
	stopErr := d.shutdown()
	if stopErr != nil {
		d.printf("with errors: %v\n", stopErr)
	} else {
		d.printf("done in %s.\n", round(time.Since(stopStart)))
	}
	if len(logTail) > 0 {
		fmt.Fprintf(stderr, "\nLast lines of the component log when it failed (--keep keeps the whole log, --verbose shows it):\n")
		for _, l := range logTail {
			fmt.Fprintln(stderr, "  "+l)
		}
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if opts.Keep {
		d.printf("Kept %s (database core/ward.db, identities, demo.log).\n", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		d.printf("Could not remove %s: %v\n", dir, err)
	} else {
		d.printf("Removed %s.\n", dir)
	}
	switch {
	case interrupted:
		return fmt.Errorf("demo interrupted at step %d (%s)", d.stepNo, d.stepName)
	case storyErr != nil:
		return fmt.Errorf("demo failed at step %d (%s): %w", d.stepNo, d.stepName, storyErr)
	}
	return stopErr
}

// demo is one run.
type demo struct {
	opts        Options
	out         io.Writer
	outMu       sync.Mutex
	log         *slog.Logger
	logFile     *os.File
	dir         string
	started     time.Time
	cancelStory context.CancelCauseFunc

	stepNo   int
	stepName string

	components []*component // in start order
	coreURL    string
	adminPW    string
	admin      *jsonClient
	proxyURL   string
	proxyID    string
	loc        location
	serviceURL string
	gateways   []*demoGateway
	client     *tunnel
	stopWatch  context.CancelFunc
	switches   chan switchEvent

	// alice's side
	enrollToken  string
	userPassword string
	totpSecret   string
	privateKey   wgtypes.Key
	locCfg       enroll.LocationConfig
	presharedKey string
}

type location struct {
	ID                  string   `json:"id"`
	Name                string   `json:"name"`
	Addresses           []string `json:"addresses"`
	Endpoint            string   `json:"endpoint"`
	ExtraEndpoints      []string `json:"extra_endpoints"`
	MFAMode             string   `json:"mfa_mode"`
	DisconnectThreshold int      `json:"disconnect_threshold"`
	PublicKey           string   `json:"public_key"`
	Revision            int64    `json:"revision"`
}

type componentStatus struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	JoinToken string `json:"join_token"`
	Status    *struct {
		Adopted         bool  `json:"adopted"`
		Connected       bool  `json:"connected"`
		AppliedRevision int64 `json:"applied_revision"`
	} `json:"status"`
}

type demoGateway struct {
	n        int
	name     string
	id       string
	control  string
	wgAddr   netip.AddrPort
	gw       *gateway.Gateway
	eng      atomic.Pointer[wgengine.Netstack]
	comp     *component
	service  *http.Server
	revision int64
}

func (d *demo) printf(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

// step starts the next chapter of the story.
func (d *demo) step(title string) {
	d.stepNo++
	d.stepName = title
	d.printf("\n[%d/%d] %s\n", d.stepNo, stepCount, title)
}

// say prints one indented line of the current step.
func (d *demo) say(format string, args ...any) {
	d.printf("      "+format+"\n", args...)
}

func (d *demo) story(ctx context.Context) error {
	steps := []func(context.Context) error{d.startCore, d.startProxy, d.createLocation, d.startGateways, d.createUser,
		d.enroll, d.vpnMFA, d.connect, d.failover}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	d.printf("\nDone in %s: enrollment, MFA and gateway failover worked, without any privilege.\n", round(time.Since(d.started)))
	return nil
}

// component is a server running in a goroutine of its own.
type component struct {
	name     string
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	stopping atomic.Bool
	after    func() // runs once it stopped (close the database, ...)
}

// launch runs serve until the component is stopped; an earlier end fails
// the story.
func (d *demo) launch(name string, serve func(context.Context) error) *component {
	ctx, cancel := context.WithCancel(context.Background())
	c := &component{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = serve(ctx)
		if !c.stopping.Load() {
			if c.err == nil {
				c.err = errors.New("stopped by itself")
			}
			d.cancelStory(fmt.Errorf("%s stopped unexpectedly: %w", name, c.err))
		}
	}()
	d.components = append(d.components, c)
	return c
}

func (c *component) stop(timeout time.Duration) error {
	c.stopping.Store(true)
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(timeout):
		return fmt.Errorf("%s did not stop within %s", c.name, timeout)
	}
	if c.after != nil {
		c.after()
		c.after = nil
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}

// shutdown stops the client, then the components in reverse start order.
func (d *demo) shutdown() error {
	if d.stopWatch != nil {
		d.stopWatch()
	}
	if d.client != nil {
		d.client.close()
	}
	for _, g := range d.gateways {
		if g.service != nil {
			g.service.Close()
		}
	}
	var errs []error
	for i := len(d.components) - 1; i >= 0; i-- {
		c := d.components[i]
		select {
		case <-c.done:
			if c.after != nil {
				c.after()
				c.after = nil
			}
			continue // stopped earlier (gateway 1), or failed
		default:
		}
		if err := c.stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitFor polls cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("%s: not within %s (last error: %v)", what, timeout, last)
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// freeUDPPort finds a UDP port on 127.0.0.1 that is free now.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// Step 1.
func (d *demo) startCore(ctx context.Context) error {
	d.step("Core: the control plane, on a new SQLite database")
	ln, err := listenLoopback()
	if err != nil {
		return err
	}
	d.coreURL = "http://" + ln.Addr().String()
	cfg := coreapp.Config{DataDir: filepath.Join(d.dir, "core"), HTTPAddr: ln.Addr().String(), PublicURL: d.coreURL,
		LogLevel: "info", LogFormat: "text", SweepInterval: 2 * time.Second, LeaseTTL: lease.DefaultTTL,
		// Dial newly registered gateways within a quarter second.
		LinkOptions: gwlink.Options{Reconcile: 250 * time.Millisecond}}
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return err
	}
	app, err := coreapp.Open(ctx, cfg, d.opts.Version, d.log.With("node", "core"), io.Discard)
	if err != nil {
		ln.Close()
		return err
	}
	c := d.launch("core", func(ctx context.Context) error { return app.Serve(ctx, ln) })
	c.after = func() { app.Close() }
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, coreapp.InitialPasswordFile))
	if err != nil {
		return fmt.Errorf("read the generated admin password: %w", err)
	}
	d.adminPW = strings.TrimSpace(string(raw))
	d.admin = newJSONClient(d.coreURL)
	err = waitFor(ctx, 10*time.Second, "core ready", func() (bool, error) {
		_, err := d.admin.call(ctx, "GET", "/readyz", nil, nil, http.StatusOK)
		return err == nil, err
	})
	if err != nil {
		return err
	}
	if err := d.admin.login(ctx, "admin", d.adminPW); err != nil {
		return fmt.Errorf("admin login: %w", err)
	}
	d.say("database  %s (migrated; instance secrets and CA created)", filepath.Join(cfg.DataDir, "ward.db"))
	d.say("REST API  %s/api/v1  (described by %s/api/v1/openapi.json)", d.coreURL, d.coreURL)
	d.say("admin     user \"admin\", password %s  (generated at first start)", d.adminPW)
	d.say("logged in as admin: POST /api/v1/auth/login; every step below uses this API")
	return nil
}

// Step 2.
func (d *demo) startProxy(ctx context.Context) error {
	d.step("Proxy: the public front, registered and adopted with a join token")
	control, err := listenLoopback()
	if err != nil {
		return err
	}
	public, err := listenLoopback()
	if err != nil {
		control.Close()
		return err
	}
	d.proxyURL = "http://" + public.Addr().String()
	var px componentStatus
	if _, err := d.admin.call(ctx, "POST", "/api/v1/proxies", map[string]string{"name": "proxy-1", "control_address": control.Addr().String()}, &px, http.StatusCreated); err != nil {
		control.Close()
		public.Close()
		return err
	}
	d.proxyID = px.ID
	if _, err := d.admin.call(ctx, "PATCH", "/api/v1/settings", map[string]string{"proxy_public_url": d.proxyURL, "instance_name": "ward demo"}, nil, http.StatusOK); err != nil {
		control.Close()
		public.Close()
		return err
	}
	p, err := proxy.New(proxy.Config{DataDir: filepath.Join(d.dir, "proxy"), HTTPAddr: public.Addr().String(), ControlAddr: control.Addr().String(),
		JoinToken: px.JoinToken, RateLimit: 20, RateBurst: 40, RequestTimeout: 10 * time.Second, LogLevel: "info", LogFormat: "text"},
		d.opts.Version, d.log.With("node", "proxy"))
	if err != nil {
		control.Close()
		public.Close()
		return err
	}
	d.launch("proxy", func(ctx context.Context) error { return p.Serve(ctx, control, public, nil) })
	d.say("POST /api/v1/proxies {control_address %s} → one-time join token", control.Addr())
	start := time.Now()
	err = waitFor(ctx, 15*time.Second, "proxy adopted and linked", func() (bool, error) {
		var st componentStatus
		if _, err := d.admin.call(ctx, "GET", "/api/v1/proxies/"+d.proxyID, nil, &st, http.StatusOK); err != nil {
			return false, err
		}
		return st.Status != nil && st.Status.Adopted && st.Status.Connected, nil
	})
	if err != nil {
		return err
	}
	d.say("core dialled it, both proved the token, the proxy got a certificate: linked (mutual TLS) in %s", round(time.Since(start)))
	d.say("public URL %s  (enrollment pages and the public API: enrollment, VPN MFA, client sync)", d.proxyURL)
	return nil
}

// Step 3.
func (d *demo) createLocation(ctx context.Context) error {
	d.step(fmt.Sprintf("Location %q: %s, MFA internal, one endpoint per gateway", locationName, locationNetwork))
	var ports [2]int
	for i := range ports {
		var err error
		if ports[i], err = freeUDPPort(); err != nil {
			return err
		}
		if i == 1 && ports[1] == ports[0] {
			return errors.New("could not find two free UDP ports")
		}
	}
	ep := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	in := map[string]any{"name": locationName, "addresses": []string{locationNetwork}, "endpoint": ep(0), "extra_endpoints": []string{ep(1)},
		"listen_port": ports[0], "mfa_mode": "internal"}
	if _, err := d.admin.call(ctx, "POST", "/api/v1/locations", in, &d.loc, http.StatusCreated); err != nil {
		return err
	}
	if len(d.loc.Addresses) == 0 {
		return errors.New("the location has no address")
	}
	iface, err := netip.ParsePrefix(d.loc.Addresses[0])
	if err != nil {
		return err
	}
	d.serviceURL = "http://" + iface.Addr().String() + "/"
	for i := range ports {
		d.gateways = append(d.gateways, &demoGateway{n: i + 1, name: fmt.Sprintf("gw-%d", i+1),
			wgAddr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ports[i]))})
	}
	d.say("POST /api/v1/locations → interface address %s, WireGuard key %s… (shared by its gateways)", d.loc.Addresses[0], d.loc.PublicKey[:10])
	d.say("endpoints %s (gateway 1), then %s (gateway 2) for clients to fail over to", ep(0), ep(1))
	d.say("MFA internal: a device gets a peer only after MFA; sessions idle for %d s are closed", d.loc.DisconnectThreshold)
	return nil
}

// Step 4.
func (d *demo) startGateways(ctx context.Context) error {
	d.step("Gateways: two `ward gateway`s for the location, adopted with their join tokens")
	start := time.Now()
	for _, g := range d.gateways {
		if err := d.startGateway(ctx, g); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
	}
	err := waitFor(ctx, 20*time.Second, "gateways adopted, linked and configured", func() (bool, error) {
		for _, g := range d.gateways {
			if ok, _ := g.gw.Ready(); !ok {
				return false, nil
			}
			var st componentStatus
			if _, err := d.admin.call(ctx, "GET", "/api/v1/locations/"+d.loc.ID+"/gateways/"+g.id, nil, &st, http.StatusOK); err != nil {
				return false, err
			}
			if st.Status == nil || !st.Status.Adopted || !st.Status.Connected || st.Status.AppliedRevision == 0 {
				return false, nil
			}
			g.revision = st.Status.AppliedRevision
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, g := range d.gateways {
		d.say("%s  control %s, WireGuard %s: adopted, revision %d applied (%s)", g.name, g.control, g.wgAddr, g.revision, round(time.Since(start)))
	}
	iface, _ := netip.ParsePrefix(d.loc.Addresses[0])
	for _, g := range d.gateways {
		eng := g.eng.Load()
		if eng == nil || eng.Net() == nil {
			return fmt.Errorf("%s: no netstack engine", g.name)
		}
		ln, err := eng.Net().ListenTCP(&net.TCPAddr{IP: iface.Addr().AsSlice(), Port: 80})
		if err != nil {
			return fmt.Errorf("%s: service: %w", g.name, err)
		}
		answer := fmt.Sprintf("hello from gateway %d\n", g.n)
		g.service = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, answer)
		})}
		go g.service.Serve(ln)
	}
	d.say("service   %s on each gateway's tunnel address answers \"hello from gateway N\"", d.serviceURL)
	return nil
}

func (d *demo) startGateway(ctx context.Context, g *demoGateway) error {
	control, err := listenLoopback()
	if err != nil {
		return err
	}
	g.control = control.Addr().String()
	var created componentStatus
	if _, err := d.admin.call(ctx, "POST", "/api/v1/locations/"+d.loc.ID+"/gateways", map[string]string{"name": g.name, "control_address": g.control},
		&created, http.StatusCreated); err != nil {
		control.Close()
		return err
	}
	g.id = created.ID
	log := d.log.With("node", g.name)
	cfg := gateway.Config{DataDir: filepath.Join(d.dir, g.name), ControlAddr: g.control, Interface: g.name, Backend: "auto",
		StatsInterval: 2 * time.Second, JoinToken: created.JoinToken, LogLevel: "info", LogFormat: "text",
		NewEngine: func(mtu int) (wgengine.Engine, error) {
			e := wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: g.wgAddr, MTU: mtu, Log: log})
			g.eng.Store(e)
			return e, nil
		}}
	gw, err := gateway.New(cfg, d.opts.Version, log)
	if err != nil {
		control.Close()
		return err
	}
	g.gw = gw
	g.comp = d.launch(g.name, func(ctx context.Context) error { return gw.Serve(ctx, control, nil) })
	return nil
}

// Step 5.
func (d *demo) createUser(ctx context.Context) error {
	d.step(fmt.Sprintf("User %q: created by the admin, with an enrollment link", username))
	var u struct {
		ID string `json:"id"`
	}
	in := map[string]any{"username": username, "email": username + "@example.com", "first_name": "Alice", "active": false}
	if _, err := d.admin.call(ctx, "POST", "/api/v1/users", in, &u, http.StatusCreated); err != nil {
		return err
	}
	var st struct {
		Token     string `json:"token"`
		URL       string `json:"url"`
		ExpiresAt int64  `json:"expires_at"`
	}
	if _, err := d.admin.call(ctx, "POST", "/api/v1/users/"+u.ID+"/enrollment", map[string]any{"send_email": false}, &st, http.StatusCreated); err != nil {
		return err
	}
	d.enrollToken = st.Token
	d.say("POST /api/v1/users (no password, inactive), POST /api/v1/users/{id}/enrollment")
	d.say("link %s", st.URL)
	d.say("     (valid until %s; without --stay it ends with the demo)", time.UnixMilli(st.ExpiresAt).Format("2006-01-02 15:04"))
	return nil
}
