// Package e2e runs the ward binary as real processes on loopback and talks
// to them over HTTP, the way an operator and their scripts would.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/store/storetest"
)

// wardBin is the binary built once by TestMain.
var wardBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ward-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root (go env GOMOD = %q): %v\n", gomod, err)
		return 1
	}
	wardBin = filepath.Join(dir, "ward")
	build := exec.Command("go", "build", "-o", wardBin, "./cmd/ward")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/ward: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	pg.stop()
	return code
}

// syncBuffer is a bytes.Buffer safe for the process's writer goroutines and
// the test reading it at the same time.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cleanEnv is the test's environment without WARD_* variables, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// shared PostgreSQL server, started on first use.
type pgShared struct {
	once sync.Once
	srv  *storetest.PGServer
	err  error
	mu   sync.Mutex
	n    int
}

var pg pgShared

// newDatabase returns the URL of a new, empty database on the shared
// server; without PostgreSQL binaries the test skips, unless
// WARD_REQUIRE_POSTGRES=1 makes that a failure.
func (p *pgShared) newDatabase(t *testing.T) string {
	t.Helper()
	p.once.Do(func() {
		if _, err := storetest.FindPGBin("initdb"); err != nil {
			p.err = fmt.Errorf("%w: %v", storetest.ErrNoPostgres, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		p.srv, p.err = storetest.StartPG(ctx)
	})
	if p.err != nil {
		if errors.Is(p.err, storetest.ErrNoPostgres) && os.Getenv("WARD_REQUIRE_POSTGRES") != "1" {
			t.Skipf("SKIP postgres: %v (install the postgresql package, or set WARD_REQUIRE_POSTGRES=1 to make this a failure)", p.err)
		}
		t.Fatalf("start throwaway postgres: %v", p.err)
	}
	p.mu.Lock()
	p.n++
	name := fmt.Sprintf("e2e_%d_%d", os.Getpid(), p.n)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, err := p.srv.CreateDatabase(ctx, name, "")
	if err != nil {
		t.Fatal(err)
	}
	return url
}

func (p *pgShared) stop() {
	if p.srv != nil {
		p.srv.Stop()
	}
}

// coreProc is a running `ward core`.
type coreProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	base           string // http://127.0.0.1:PORT
	done           chan struct{}
	waitErr        error
}

// coreOpts configure one start of core.
type coreOpts struct {
	dataDir  string
	database string   // empty: SQLite in dataDir
	env      []string // extra KEY=VALUE
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCore runs ward core and waits until /readyz answers 200. The process
// is killed when the test ends if it is still running, and its output is
// logged when the test failed.
func startCore(t *testing.T, o coreOpts) *coreProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := launchCore(t, o)
		err := p.waitReady(60 * time.Second)
		if err == nil {
			return p
		}
		// Another process may have taken the free port in between.
		if attempt < 3 && p.exited() && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("port clash, retrying: %v", err)
			continue
		}
		t.Fatalf("ward core did not become ready: %v", err)
	}
}

func launchCore(t *testing.T, o coreOpts) *coreProc {
	t.Helper()
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"core", "--data-dir", o.dataDir, "--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--public-url", base}
	if o.database != "" {
		args = append(args, "--database", o.database)
	}
	p := &coreProc{cmd: exec.Command(wardBin, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, base: base, done: make(chan struct{})}
	p.cmd.Env = cleanEnv(o.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ward core: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	pid := p.cmd.Process.Pid
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill() // our own child, by its PID
			<-p.done
		}
		if t.Failed() {
			t.Logf("ward core (pid %d, %s) stdout:\n%s", pid, base, p.stdout.String())
			t.Logf("ward core (pid %d, %s) stderr:\n%s", pid, base, p.stderr.String())
		}
	})
	return p
}

func (p *coreProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *coreProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("core exited before it was ready: %v", p.waitErr)
		}
		resp, err := hc.Get(p.base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no 200 from /readyz within %v (last: %s)", timeout, last)
}

// stop sends SIGTERM and checks for a clean exit within a loose deadline.
func (p *coreProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("ward core did not exit within 20 s of SIGTERM")
	}
	if p.waitErr != nil {
		t.Fatalf("ward core exited with %v after SIGTERM, want status 0", p.waitErr)
	}
	if !strings.Contains(p.stderr.String(), "core stopped") {
		t.Fatalf("log has no \"core stopped\" after SIGTERM")
	}
}

// runWard runs a short ward command and returns its exit code and output.
func runWard(t *testing.T, stdin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wardBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("ward %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

// client is a logged-in API session: cookie jar plus CSRF token.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newClient(t *testing.T, base string) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// request sends a JSON body (nil for none) and returns status and body.
func (c *client) request(method, path string, body any) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// must sends a request, requires the status and decodes the JSON answer
// into out (unless nil).
func (c *client) must(method, path string, body any, wantStatus int, out any) []byte {
	c.t.Helper()
	status, _, b := c.request(method, path, body)
	if status != wantStatus {
		c.t.Fatalf("%s %s = %d, want %d: %s", method, path, status, wantStatus, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return b
}

// login posts the credentials and returns the HTTP status; on 200 the
// client holds the session and its CSRF token.
func (c *client) login(username, password string) int {
	c.t.Helper()
	var resp struct {
		CSRFToken string `json:"csrf_token"`
		User      struct {
			Username string `json:"username"`
			IsAdmin  bool   `json:"is_admin"`
		} `json:"user"`
	}
	status, _, b := c.request("POST", "/api/v1/auth/login", map[string]string{"username": username, "password": password})
	if status != http.StatusOK {
		return status
	}
	if err := json.Unmarshal(b, &resp); err != nil || resp.CSRFToken == "" || resp.User.Username != username {
		c.t.Fatalf("login answer %s: %v", b, err)
	}
	c.csrf = resp.CSRFToken
	return status
}

// loginStatus tries a login with a fresh client.
func loginStatus(t *testing.T, base, username, password string) int {
	t.Helper()
	return newClient(t, base).login(username, password)
}

// mustLogin returns a logged-in client or fails.
func mustLogin(t *testing.T, base, username, password string) *client {
	t.Helper()
	c := newClient(t, base)
	if status := c.login(username, password); status != http.StatusOK {
		t.Fatalf("login as %s = %d, want 200", username, status)
	}
	return c
}
