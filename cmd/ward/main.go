// Command ward is the single binary of the ward VPN platform; each component
// is a subcommand.
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
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `ward: a WireGuard VPN platform built for high availability

Usage:
  ward core [flags]                   run the control plane (REST API, gateway links)
  ward gateway [flags]                run a WireGuard gateway for one location
  ward gateway notify STATE           keepalived notify hook: master, backup, fault or stop
  ward gateway healthcheck            exit 0 when the gateway's /readyz answers 200 (keepalived track_script)
  ward proxy [flags]                  run the public proxy (enrollment, MFA, client sync)
  ward client COMMAND                 the VPN client: enroll, status, up, down, sync ("ward client help")
  ward admin reset-password USER      set a user's password directly in the database
  ward demo [--stay] [--keep]         the whole system in one process, unprivileged: a first look
  ward drill [--runs 5]               failover drill in network namespaces (root): outage per scenario vs. plain WireGuard
  ward version                        print the version

Run "ward core -h", "ward gateway -h" or "ward proxy -h" for the configuration flags; every flag also has a WARD_* variable.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "core":
		err = runCore(ctx, args[1:], stdout, stderr)
	case "gateway":
		err = runGateway(ctx, args[1:], stdout, stderr)
	case "proxy":
		err = runProxy(ctx, args[1:], stderr)
	case "client":
		return runClient(ctx, args[1:], stdin, stdout, stderr)
	case "admin":
		err = runAdmin(ctx, args[1:], stdin, stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "drill":
		err = runDrill(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "ward %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ward: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "ward: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "ward: %v\n", err)
		return 1
	}
	return 0
}

// usageError marks a mistake on the command line (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}
