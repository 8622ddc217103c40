package e2e

// Browser harness: one headless Debian chromium per test, driven with
// chromedp v0.23 (its generic API: chromedp.Do for actions without a value,
// chromedp.Run(ctx, chromedp.Evaluate[T](...)) for values, raw protocol
// calls with chromedp.Call; see research/harness.md §4.3 and §5 item 15).
//
//	b := newBrowser(t, core.base)           // skips or fails when there is no chromium
//	b.login("admin", password)              // through the login form
//	b.open("/users")                        // returns the HTTP status
//	b.fill("#username", "alice")            // clears the field and types
//	b.submit(`form[action="/users"] button[type=submit]`)
//	b.waitText("main h1", "Users")
//	b.screenshots("users")                  // docs/screenshots/users-{desktop,phone}.png
//
// Every method fails the test on error and runs with a timeout
// (browserTimeout), so a missing element reports where the test waited
// instead of hanging. For anything else use b.ctx with chromedp directly,
// bounded by b.timeout().

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserTimeout bounds one browser step (a navigation, a form submission,
// a wait for text). Generous: the machine is small and shared.
const browserTimeout = 30 * time.Second

// screenshotDir is where screenshots go, relative to the e2e package
// (go test runs in the package directory).
const screenshotDir = "../docs/screenshots"

// viewport is a screen size the screenshots are taken at.
type viewport struct {
	name          string
	width, height int64
	scale         float64
	mobile        bool // mobile emulation: meta viewport, touch, mobile UA metrics
}

var (
	desktopViewport = viewport{name: "desktop", width: 1280, height: 800, scale: 1}
	phoneViewport   = viewport{name: "phone", width: 390, height: 844, scale: 2, mobile: true}
)

// findChromium returns the browser to drive: chromium (Debian's package, a
// launcher script at /usr/bin/chromium) or another Chromium build on PATH.
func findChromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on PATH or at /usr/bin/chromium")
}

// requireChromium skips the test when there is no browser and the test is
// not root; as root (CI) scripts/install-deps.sh should have installed
// it, so a missing browser fails.
func requireChromium(t *testing.T) string {
	t.Helper()
	p, err := findChromium()
	if err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skipf("SKIP: browser tests need chromium (%v); install the Debian package chromium, e.g. with scripts/install-deps.sh as root", err)
	}
	t.Fatalf("%v: running as root, so scripts/install-deps.sh should have installed the Debian package chromium", err)
	return ""
}

// browser is one tab of a headless chromium that lives as long as the test.
type browser struct {
	t *testing.T
	// ctx is the tab's chromedp context (no deadline: derive one with
	// b.timeout() for each call).
	ctx  context.Context
	base string // what paths are relative to, e.g. http://127.0.0.1:8000

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // errors and exceptions since the last consoleErrors
}

// browserOption changes how newBrowser starts the browser.
type browserOption func(*browserConfig)

type browserConfig struct {
	netns string
}

// inNetns runs the browser inside a network namespace (ip netns exec, which
// execs in place), so it reaches servers on that namespace's loopback, such
// as core in newGatewayEnv. Needs root (requireNetns).
func inNetns(n *netns) browserOption {
	return func(c *browserConfig) { c.netns = n.name }
}

// newBrowser starts chromium for the test and opens a blank tab; base is
// the origin that open and the other helpers resolve paths against. The
// browser is closed when the test ends; its profile is a fresh temporary
// directory chromedp removes afterwards.
func newBrowser(t *testing.T, base string, opts ...browserOption) *browser {
	t.Helper()
	exe := requireChromium(t)
	var cfg browserConfig
	for _, o := range opts {
		o(&cfg)
	}
	output := &syncBuffer{}
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		// Flags proven on the project's machines (harness.md §4.3): no
		// sandbox (root), no GPU, and nothing that reaches for the network
		// on its own (the machine has none beyond loopback).
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(int(desktopViewport.width), int(desktopViewport.height)),
		chromedp.CombinedOutput(output),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			if cfg.netns != "" {
				cmd.Path, _ = exec.LookPath("ip")
				cmd.Args = append([]string{"ip", "netns", "exec", cfg.netns, cmd.Args[0]}, cmd.Args[1:]...)
			}
			// What chromedp does without ModifyCmdFunc: the browser dies
			// with the thread that started it, even if the test binary is
			// killed.
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		output.Write(fmt.Appendf(nil, "chromedp: "+format+"\n", args...))
	}))
	b := &browser{t: t, ctx: ctx, base: strings.TrimSuffix(base, "/")}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = chromedp.Cancel(cctx) // closes the browser gracefully
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output (last lines, without D-Bus noise):\n%s", tailLines(withoutDBus(output.String()), 40))
		}
	})
	// The first call starts the browser; it gets a context without a
	// deadline (the browser lives as long as ctx), so bound it by hand.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium (%s): %v\n%s", exe, err, tailLines(withoutDBus(output.String()), 40))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium (%s) did not start within 60 s\n%s", exe, tailLines(withoutDBus(output.String()), 40))
	}
	// Collect the page's errors (exceptions, CSP violations, failed loads)
	// for consoleErrors.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.console = append(b.console, m)
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// timeout returns a context for one step on the tab.
func (b *browser) timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, browserTimeout)
}

// do runs actions on the tab; what says what they were for the failure.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s (on %s): %v", what, b.location(), err)
	}
}

// evalJS evaluates a JavaScript expression on the page and decodes its
// value (a generic function: methods cannot have type parameters).
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s (on %s): %v", expr, b.location(), err)
	}
	return v
}

// jsString quotes s for JavaScript source.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// location is the tab's URL (for messages; never fails the test).
func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "?"
	}
	return loc
}

// path is the path and query of the tab's URL.
func (b *browser) path() string {
	b.t.Helper()
	u, err := url.Parse(b.location())
	if err != nil {
		b.t.Fatalf("browser location: %v", err)
	}
	return u.RequestURI()
}

// open navigates to base+path, waits for the page to load and returns the
// HTTP status of the document (after redirects).
func (b *browser) open(path string) int64 {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.t.Fatalf("browser: open %s: %v", path, err)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// fill clears the input sel (a CSS selector) and types value into it with
// real key events.
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.do("wait for "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
	// chromedp.SetValue(sel, "") reports a failure for the empty value.
	evalJS[chromedp.Void](b, `document.querySelector(`+jsString(sel)+`).value = ""`)
	b.do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), value))
}

// submit clicks sel (a submit button), waits for the page the form leads
// to (after redirects) and returns its HTTP status.
func (b *browser) submit(sel string) int64 {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: submit with %s (on %s): %v", sel, b.location(), err)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// text is the text content of the first element matching sel, "" if none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return evalJS[string](b, `(document.querySelector(`+jsString(sel)+`)?.textContent ?? "").replace(/\s+/g, " ").trim()`)
}

// waitText waits until the first element matching sel contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	var got string
	err := waitFor(browserTimeout, 50*time.Millisecond, func() error {
		if got = b.text(sel); !strings.Contains(got, want) {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		b.t.Fatalf("browser: %s never contained %q within %v on %s (last: %q)", sel, want, browserTimeout, b.location(), got)
	}
}

// login logs in through the login form and returns the HTTP status of the
// page it leads to: the overview (or ?next), or the second-factor page for
// users with one.
func (b *browser) login(username, password string) int64 {
	b.t.Helper()
	if st := b.open("/login"); st != 200 {
		b.t.Fatalf("GET /login = %d", st)
	}
	b.fill("#username", username)
	b.fill("#password", password)
	return b.submit(`form[action="/login"] button[type=submit]`)
}

// consoleErrors returns (and forgets) the page errors seen so far:
// uncaught exceptions, console.error calls and browser log errors such as
// CSP violations and failed loads. The favicon, which the UI does not
// have, is left out.
func (b *browser) consoleErrors() []string {
	// Let messages of the last page arrive.
	time.Sleep(100 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.console {
		if strings.Contains(m.URL, "/favicon.ico") || strings.Contains(m.Text, "/favicon.ico") {
			continue
		}
		where := m.URL
		if where != "" {
			where = fmt.Sprintf(" (%s:%d)", where, m.Line+1)
		}
		out = append(out, m.String()+where)
	}
	b.console = nil
	return out
}

// settle waits until the page is loaded and htmx has no request in flight,
// then a little longer for scripts to draw (charts).
func (b *browser) settle() {
	b.t.Helper()
	err := waitFor(browserTimeout, 50*time.Millisecond, func() error {
		if !evalJS[bool](b, `document.readyState === "complete" && !document.querySelector(".htmx-request")`) {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		b.t.Fatalf("browser: %s did not settle within %v", b.location(), browserTimeout)
	}
	time.Sleep(300 * time.Millisecond)
}

// emulate sets the tab's screen (desktop, or a phone with mobile emulation).
func (b *browser) emulate(v viewport) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(v.scale)}
	if v.mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.do("emulate "+v.name, chromedp.EmulateViewport(v.width, v.height, opts...))
}

// screenshots writes full-page PNGs of the current page at desktop and
// phone widths to docs/screenshots/<name>-desktop.png and
// <name>-phone.png (overwriting them). The page is reloaded for each
// width, so it must be one a GET shows; the tab is back at desktop width
// afterwards.
func (b *browser) screenshots(name string) {
	b.t.Helper()
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	for _, v := range []viewport{desktopViewport, phoneViewport} {
		b.emulate(v)
		b.do("reload for the "+v.name+" screenshot", chromedp.Reload())
		b.settle()
		ctx, cancel := b.timeout()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.t.Fatalf("browser: screenshot of %s at %s: %v", b.location(), v.name, err)
		}
		file := filepath.Join(screenshotDir, name+"-"+v.name+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.t.Logf("screenshot %s: %s (%d KiB)", file, b.path(), len(png)/1024)
	}
	b.emulate(desktopViewport)
}

// activeElement describes the focused element as "tag#id.class" for
// keyboard tests.
func (b *browser) activeElement() string {
	b.t.Helper()
	return evalJS[string](b, `(() => { const e = document.activeElement; if (!e) return "";
		return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + String(e.className).trim().split(/\s+/).join(".") : ""); })()`)
}

// press sends keys (see chromedp/kb, e.g. kb.Tab, kb.Enter) to the focused
// element.
func (b *browser) press(keys string) {
	b.t.Helper()
	b.do(fmt.Sprintf("press %q", keys), chromedp.KeyEvent(keys))
}

// has reports whether an element matches sel now (no waiting).
func (b *browser) has(sel string) bool {
	b.t.Helper()
	return evalJS[bool](b, `document.querySelector(`+jsString(sel)+`) !== null`)
}

// attr is the attribute of the first element matching sel ("" if either is
// missing).
func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	return evalJS[string](b, `document.querySelector(`+jsString(sel)+`)?.getAttribute(`+jsString(name)+`) ?? ""`)
}

// withoutDBus drops chromium's complaints about the missing D-Bus (there is
// none in a test container) from its output.
func withoutDBus(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "dbus/") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
