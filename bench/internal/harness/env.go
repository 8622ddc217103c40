// Package harness is what every wardbench benchmark shares: a scratch
// directory with a cleanup stack, the ward binary built once, `ward core`
// processes, a throwaway PostgreSQL server, a small API client, a latency
// recorder and the result table that puts each figure beside its target.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Env is one wardbench run: the module root, a scratch directory and the
// ward binary, built on first use.
type Env struct {
	// Root is the directory of ward's go.mod.
	Root string
	// TmpDir is removed by Close.
	TmpDir string
	// Progress receives progress lines (stderr).
	Progress io.Writer

	Cleanups
	buildOnce sync.Once
	wardBin   string
	buildErr  error
}

// NewEnv finds the module root with `go env GOMOD` and creates the scratch
// directory.
func NewEnv(ctx context.Context, progress io.Writer) (*Env, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return nil, errors.New("run wardbench inside the ward module (go env GOMOD is empty)")
	}
	tmp, err := os.MkdirTemp("", "wardbench-")
	if err != nil {
		return nil, err
	}
	return &Env{Root: filepath.Dir(gomod), TmpDir: tmp, Progress: progress}, nil
}

// Close runs the cleanups (newest first) and removes the scratch directory.
func (e *Env) Close() {
	e.Cleanups.Run()
	if e.TmpDir != "" {
		os.RemoveAll(e.TmpDir)
	}
}

// Logf prints a progress line with the time since start.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.Progress, "wardbench %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// MkdirTemp creates a directory inside the scratch directory.
func (e *Env) MkdirTemp(pattern string) (string, error) {
	return os.MkdirTemp(e.TmpDir, pattern)
}

// WardBinary builds ./cmd/ward once per run, the way `make build` does.
func (e *Env) WardBinary(ctx context.Context) (string, error) {
	e.buildOnce.Do(func() {
		start := time.Now()
		bin := filepath.Join(e.TmpDir, "ward")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ward")
		cmd.Dir = e.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			e.buildErr = fmt.Errorf("go build ./cmd/ward: %w\n%s", err, out)
			return
		}
		e.wardBin = bin
		e.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	})
	return e.wardBin, e.buildErr
}

// Cleanups is a stack of functions run newest first. The zero value is ready.
type Cleanups struct {
	mu  sync.Mutex
	fns []func()
}

// Defer adds fn to the stack.
func (c *Cleanups) Defer(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, fn)
}

// Run runs and forgets every function, newest first.
func (c *Cleanups) Run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}
