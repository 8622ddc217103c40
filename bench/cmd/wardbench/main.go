// Command wardbench runs ward's benchmarks and prints every figure beside
// its target in one table, as a ratio (see bench/README.md).
//
//	wardbench all            every benchmark with its defaults (make bench)
//	wardbench api [flags]    one benchmark; -h lists its flags
//	wardbench list           the registered benchmarks
//
// A missed target is reported as MISSED in the table; the exit status is
// non-zero only when a benchmark could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
)

// benchmark is one entry of the table `wardbench all` runs. run parses its
// own flags from args (nil under `all`: the defaults) and returns its rows.
type benchmark struct {
	name    string
	summary string
	run     func(ctx context.Context, env *harness.Env, args []string) ([]harness.Row, error)
}

// benchmarks holds every benchmark in registration order. Each benchmark's
// file registers itself from an init function.
var benchmarks []benchmark

func register(b benchmark) { benchmarks = append(benchmarks, b) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage:\n  wardbench all            run every benchmark with its defaults\n  wardbench NAME [flags]   run one benchmark (NAME -h lists its flags)\n  wardbench list           list the benchmarks\n\nBenchmarks:")
	for _, b := range benchmarks {
		fmt.Fprintf(w, "  %-8s %s\n", b.name, b.summary)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var selected []benchmark
	var benchArgs []string
	switch args[0] {
	case "list":
		usage(stdout)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "all":
		if len(args) > 1 {
			fmt.Fprintln(stderr, "wardbench all takes no flags; run a single benchmark to change its parameters")
			return 2
		}
		selected = benchmarks
	default:
		for _, b := range benchmarks {
			if b.name == args[0] {
				selected = []benchmark{b}
			}
		}
		if selected == nil {
			fmt.Fprintf(stderr, "wardbench: unknown benchmark %q\n\n", args[0])
			usage(stderr)
			return 2
		}
		benchArgs = args[1:]
	}

	env, err := harness.NewEnv(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "wardbench: %v\n", err)
		return 1
	}
	defer env.Close()

	start := time.Now()
	loadStart := harness.LoadAverage()
	var failed []string
	var met, missed int
	for _, b := range selected {
		env.Logf("== %s: %s", b.name, b.summary)
		rows, err := b.run(ctx, env, benchArgs)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if len(rows) > 0 {
			fmt.Fprintf(stdout, "\n== %s: %s\n", b.name, b.summary)
			harness.PrintTable(stdout, rows)
		}
		for _, r := range rows {
			switch {
			case r.Met():
				met++
			case r.Missed():
				missed++
			}
		}
		if err != nil {
			var usageErr usageError
			if errors.As(err, &usageErr) {
				fmt.Fprintf(stderr, "wardbench %s: %v\n", b.name, err)
				return 2
			}
			fmt.Fprintf(stderr, "wardbench %s: FAILED: %v\n", b.name, err)
			failed = append(failed, b.name)
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Fprintf(stdout, "\ntargets: %d met, %d missed; wall time %s\n", met, missed, time.Since(start).Round(time.Second))
	fmt.Fprintf(stdout, "machine: %d CPUs, %s; load average (1/5/15 min) %s at start, %s at end\n",
		runtime.NumCPU(), runtime.Version(), loadStart, harness.LoadAverage())
	if len(failed) > 0 {
		fmt.Fprintf(stdout, "benchmarks that could not run: %v\n", failed)
		return 1
	}
	return 0
}

// usageError is a mistake in a benchmark's flags (exit status 2).
type usageError struct{ error }
