package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/gateway"
)

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "notify":
			return runGatewayNotify(ctx, args[1:], stdout, stderr)
		case "healthcheck":
			return runGatewayHealthcheck(ctx, args[1:], stderr)
		}
	}
	cfg, err := gateway.ParseConfig(args, stderr)
	if err != nil {
		return usageError{err}
	}
	log := cfg.Logger(stderr)
	g, err := gateway.New(cfg, buildVersion(), log)
	if err != nil {
		return err
	}
	return g.Run(ctx)
}

// envOr is the WARD_* variable's value, or def when unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// runGatewayNotify is keepalived's notify hook: it tells the gateway running
// with the data dir its VRRP state (master, backup, fault or stop).
func runGatewayNotify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward gateway notify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: ward gateway notify [--data-dir DIR] master|backup|fault|stop")
		fs.PrintDefaults()
	}
	dataDir := fs.String("data-dir", envOr("WARD_DATA_DIR", "./ward-gateway"), "the running gateway's data dir (WARD_DATA_DIR)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("name exactly one state: master, backup, fault or stop")}
	}
	role, err := gateway.Notify(ctx, *dataDir, strings.ToLower(fs.Arg(0)))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gateway is %s\n", role)
	return nil
}

// runGatewayHealthcheck exits 0 when the gateway's /readyz answers 200 within
// 1 s: keepalived's track_script, without curl on the node.
func runGatewayHealthcheck(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward gateway healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL to probe (default: /readyz on --health-addr)")
	addr := fs.String("health-addr", envOr("WARD_HEALTH_ADDR", ":50067"), "the gateway's health address (WARD_HEALTH_ADDR)")
	timeout := fs.Duration("timeout", time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	target := *url
	if target == "" {
		var err error
		if target, err = gateway.HealthURL(*addr); err != nil {
			return usageError{err}
		}
	}
	return gateway.Healthcheck(ctx, target, *timeout)
}
