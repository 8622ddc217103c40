package main

import (
	"context"
	"io"

	"github.com/wardvpn/ward/internal/proxy"
)

func runProxy(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := proxy.ParseConfig(args, stderr)
	if err != nil {
		return usageError{err}
	}
	p, err := proxy.New(cfg, buildVersion(), cfg.Logger(stderr))
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
