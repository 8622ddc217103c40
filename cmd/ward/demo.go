package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/wardvpn/ward/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ward demo [--stay] [--keep] [--verbose]

Runs the whole system in this process, without privileges: core on a temporary SQLite
database, a proxy, one MFA location with two gateways (WireGuard on a userspace network
stack, everything on 127.0.0.1), an enrolled user whose client does MFA and fetches a page
through the tunnel; then gateway 1 stops and the client carries on through gateway 2.

`)
		fs.PrintDefaults()
	}
	var opts demo.Options
	fs.BoolVar(&opts.Stay, "stay", false, "keep everything running after the demo, to try the API, until Ctrl-C")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the temporary directory (database, identities, log) after exit")
	fs.BoolVar(&opts.Verbose, "verbose", false, "show the components' logs on stderr instead of writing them to demo.log")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	opts.Version = buildVersion()
	return demo.Run(ctx, opts, stdout, stderr)
}
