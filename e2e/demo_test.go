package e2e

// `ward demo` is the README's first-look command: it must run on a fresh
// clone without any privilege. When the tests run as root the demo runs as
// user nobody (uid 65534, no capabilities) to prove it; otherwise it runs as
// the calling user, who is unprivileged already.

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const nobodyUID = 65534

// demoCmd prepares `ward demo args...` as an unprivileged user, with TMPDIR
// pointing at a fresh directory that the test checks afterwards.
func demoCmd(t *testing.T, ctx context.Context, args ...string) (cmd *exec.Cmd, tmp string) {
	t.Helper()
	bin := wardBin
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// The test's own temporary directories are private to root: give
		// nobody a readable copy of the binary and a TMPDIR of its own.
		binDir := mkdirShared(t, 0o755)
		bin = filepath.Join(binDir, "ward")
		copyFile(t, wardBin, bin)
		tmp = mkdirShared(t, 0o777)
		cred = &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}
	} else {
		tmp = t.TempDir()
	}
	cmd = exec.CommandContext(ctx, bin, append([]string{"demo"}, args...)...)
	cmd.Env = cleanEnv("TMPDIR=" + tmp)
	cmd.Dir = tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd, tmp
}

func mkdirShared(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ward-e2e-demo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("the demo left files in TMPDIR %s: %v %v", dir, left, err)
	}
}

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, tmp := demoCmd(t, ctx)
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	story := out.String()
	if err != nil {
		t.Fatalf("ward demo: %v (after %s)\nstdout:\n%s\nstderr:\n%s", err, took, story, errOut.String())
	}
	t.Logf("ward demo took %s:\n%s", took.Round(time.Millisecond), story)
	if errOut.String() != "" {
		t.Errorf("stderr is not empty:\n%s", errOut.String())
	}
	if os.Geteuid() == 0 && !strings.Contains(story, "Running as uid 65534 with no capabilities.") {
		t.Error("the demo does not say it ran as nobody without capabilities")
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`REST API  http://127\.0\.0\.1:\d+/api/v1`),
		regexp.MustCompile(`admin     user "admin", password \S{12,}`),
		regexp.MustCompile(`public URL http://127\.0\.0\.1:\d+`),
		regexp.MustCompile(`gw-2  control 127\.0\.0\.1:\d+, WireGuard 127\.0\.0\.1:\d+: adopted, revision \d+ applied`),
		regexp.MustCompile(`link http://127\.0\.0\.1:\d+/enroll/\S+`),
		regexp.MustCompile(`enrollment complete: alice is active`),
		regexp.MustCompile(`session \S+ with a fresh preshared key`),
		regexp.MustCompile(`→ "hello from gateway 1" in \S+ (ms|s) \(WireGuard handshake included\)`),
		regexp.MustCompile(`\+\s*\d+ ms  gw-1 stopped`),
		regexp.MustCompile(`client watchdog: .* \(gw-2\), a new handshake starts`),
		regexp.MustCompile(`interruption: \S+ (ms|s) without an answer`),
		regexp.MustCompile(`→ "hello from gateway 2" in .*: alice carries on through gw-2`),
		regexp.MustCompile(`Done in \S+ s: enrollment, MFA and gateway failover worked`),
		regexp.MustCompile(`Stopping everything\.\.\. done`),
		regexp.MustCompile(`Removed /\S+/ward-demo-\d+\.`),
	} {
		if !want.MatchString(story) {
			t.Errorf("the story lacks %q", want)
		}
	}
	// The issue asks for under 20 s; machines here swing 2.5x under load.
	if took > time.Minute {
		t.Errorf("the demo took %s", took)
	}
	requireEmptyDir(t, tmp)
}

// TestDemoStayInterrupt: with --stay everything keeps running until
// Ctrl-C, which stops it cleanly with status 0.
func TestDemoStayInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, tmp := demoCmd(t, ctx, "--stay", "--keep")
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	err := waitFor(2*time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			return errors.Join(errors.New("the demo exited before Ctrl-C"), err)
		default:
		}
		if !strings.Contains(out.String(), "Still running (--stay)") {
			return errors.New("not there yet")
		}
		return nil
	})
	if err != nil {
		_ = cmd.Process.Kill() // our own child, by its PID
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	// While it stays, core answers.
	api := regexp.MustCompile(`API=(http://127\.0\.0\.1:\d+)/api/v1`).FindStringSubmatch(out.String())
	if api == nil {
		t.Fatalf("no API URL in:\n%s", out.String())
	}
	pw := regexp.MustCompile(`admin password: (\S+)`).FindStringSubmatch(out.String())
	if pw == nil {
		t.Fatalf("no admin password in:\n%s", out.String())
	}
	admin := mustLogin(t, api[1], "admin", pw[1])
	var gws struct {
		Items []struct {
			Name   string `json:"name"`
			Status struct {
				Connected bool `json:"connected"`
			} `json:"status"`
		} `json:"items"`
	}
	loc := regexp.MustCompile(`/locations/(\S+)/gateways`).FindStringSubmatch(out.String())
	if loc == nil {
		t.Fatalf("no location id in:\n%s", out.String())
	}
	admin.must("GET", "/api/v1/locations/"+loc[1]+"/gateways", nil, 200, &gws)
	if len(gws.Items) != 2 {
		t.Fatalf("gateways: %+v", gws)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ward demo --stay after Ctrl-C: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("ward demo did not stop within a minute of SIGINT:\n%s", out.String())
	}
	kept := regexp.MustCompile(`Kept (/\S+/ward-demo-\d+) `).FindStringSubmatch(out.String())
	if kept == nil {
		t.Fatalf("no kept directory in:\n%s", out.String())
	}
	for _, f := range []string{"core/ward.db", "demo.log", "gw-1", "gw-2", "proxy"} {
		if _, err := os.Stat(filepath.Join(kept[1], f)); err != nil {
			t.Errorf("--keep: %v", err)
		}
	}
	if err := os.RemoveAll(kept[1]); err != nil {
		t.Error(err)
	}
	requireEmptyDir(t, tmp)
}
