package demo

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDemoRun plays the whole demo in this process (under -race in `make
// test`) and checks the story it tells.
func TestDemoRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes a few seconds")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	start := time.Now()
	err := Run(ctx, Options{Version: "test"}, &out, &errOut)
	story := out.String()
	if err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, story, errOut.String())
	}
	t.Logf("demo took %s:\n%s", time.Since(start).Round(time.Millisecond), story)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`REST API  http://127\.0\.0\.1:\d+/api/v1`),
		regexp.MustCompile(`admin     user "admin", password \S{12,}`),
		regexp.MustCompile(`public URL http://127\.0\.0\.1:\d+`),
		regexp.MustCompile(`gw-1  control 127\.0\.0\.1:\d+, WireGuard 127\.0\.0\.1:\d+: adopted`),
		regexp.MustCompile(`gw-2  control 127\.0\.0\.1:\d+, WireGuard 127\.0\.0\.1:\d+: adopted`),
		regexp.MustCompile(`POST …/totp/confirm     code \d{6} .*TOTP on, 10 recovery codes`),
		regexp.MustCompile(`"alice-laptop" gets 10\.99\.0\.\d+/32`),
		regexp.MustCompile(`enrollment complete: alice is active`),
		regexp.MustCompile(`session \S+ with a fresh preshared key`),
		regexp.MustCompile(`GET http://10\.99\.0\.1/ → "hello from gateway 1" in `),
		regexp.MustCompile(`client watchdog: .* → peer re-added towards 127\.0\.0\.1:\d+ \(gw-2\)`),
		regexp.MustCompile(`interruption: \S+ (ms|s) without an answer`),
		regexp.MustCompile(`GET http://10\.99\.0\.1/ → "hello from gateway 2" in .*: alice carries on through gw-2`),
		regexp.MustCompile(`gw-1 disconnected, gw-2 connected`),
		regexp.MustCompile(`Done in \S+ s: enrollment, MFA and gateway failover worked`),
		regexp.MustCompile(`Removed /\S+ward-demo-`),
	} {
		if !want.MatchString(story) {
			t.Errorf("the story lacks %q", want)
		}
	}
	if strings.Contains(story, "FAILED") {
		t.Error("the story reports a failure")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the working directory was not removed: %v", left)
	}
}

// TestDemoInterrupted: a cancelled context stops the demo cleanly, with an
// error and nothing left behind.
func TestDemoInterrupted(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Version: "test"}, &out, &errOut) }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "[3/9]") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not reach step 3:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("Run after cancel = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the demo did not stop within a minute of the cancel")
	}
	if !strings.Contains(out.String(), "Interrupted at step") || !strings.Contains(out.String(), "Removed ") {
		t.Errorf("story:\n%s", out.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the working directory was not removed: %v", left)
	}
}

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
