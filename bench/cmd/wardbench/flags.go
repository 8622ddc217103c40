package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/store"
)

// parseFlags parses a benchmark's flags: -h passes through, a bad flag or a
// stray argument is a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}

// parseEngines reads an -engines list such as "sqlite,postgres".
func parseEngines(list string) ([]store.Engine, error) {
	var out []store.Engine
	for _, e := range strings.Split(list, ",") {
		switch e = strings.TrimSpace(e); e {
		case string(store.SQLite), string(store.Postgres):
			out = append(out, store.Engine(e))
		case "":
		default:
			return nil, usageError{fmt.Errorf("-engines: unknown engine %q (sqlite, postgres)", e)}
		}
	}
	if len(out) == 0 {
		return nil, usageError{errors.New("-engines: name at least one engine")}
	}
	return out, nil
}

// perEngine runs one benchmark on each engine in turn, keeping the rows of
// every engine even when another one fails, and stops when ctx ends.
func perEngine(ctx context.Context, engines []store.Engine, run func(store.Engine) ([]harness.Row, error)) ([]harness.Row, error) {
	var rows []harness.Row
	var errs []error
	for _, engine := range engines {
		r, err := run(engine)
		rows = append(rows, r...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", engine, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return rows, errors.Join(errs...)
}
