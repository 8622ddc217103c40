package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/drill"
)

const drillUsage = `Usage: ward drill [flags]

Failover drill (root; everything runs inside network namespaces it creates
and removes): two gateways share a floating IP through keepalived (VRRPv3,
adverts every 100 ms); a ward client and a stock wg-quick client ping the
gateway through the tunnel every 50 ms while the active gateway fails:
  kill         the node fails (link down, gateway and keepalived SIGKILLed)
  switchover   planned: keepalived stops (priority 0), the old gateway keeps running
  core-down    core is SIGKILLed first, then the node fails as in kill
The same runs against a baseline of plain wireguard-go gateways (same key,
peers, addressing and keepalived) give the ratio. Prints the median outage
(and min–max) per scenario and client; missed targets do not fail the run.

Flags:
`

func runDrill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, drillUsage)
		fs.PrintDefaults()
	}
	runs := fs.Int("runs", 5, "runs per scenario (the table shows the median)")
	scenarios := fs.String("scenarios", strings.Join(drill.AllScenarios, ","), "comma-separated scenarios: kill, switchover, core-down")
	clients := fs.String("clients", strings.Join(drill.AllClients, ","), "comma-separated clients: ward, wg-quick")
	baseline := fs.Bool("baseline", true, "also measure the baseline (plain wireguard-go gateways) for the ratio")
	capD := fs.Duration("baseline-cap", 40*time.Second, "cap on every outage measurement (the baseline reaches it; printed as ≥ cap)")
	keep := fs.Bool("keep", false, "leave namespaces and processes up at the end, for debugging")
	jsonPath := fs.String("json", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("drill: unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return err
	}
	opts := drill.Options{Runs: *runs, Scenarios: splitList(*scenarios), Clients: splitList(*clients), Baseline: *baseline,
		Cap: *capD, Keep: *keep, Self: self, Log: stderr}
	if err := opts.Validate(); err != nil {
		return usageError{fmt.Errorf("drill: %w", err)}
	}
	rep, runErr := drill.Run(ctx, opts)
	if rep == nil {
		return runErr
	}
	fmt.Fprintln(stdout)
	rep.Print(stdout)
	if *jsonPath != "" {
		f, err := os.Create(*jsonPath)
		if err != nil {
			return err
		}
		werr := rep.WriteJSON(f)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
	}
	if runErr != nil {
		return fmt.Errorf("drill: some figures could not be measured: %w", runErr)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
