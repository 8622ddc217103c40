package main

import (
	"context"
	"io"

	"github.com/wardvpn/ward/internal/gateway"
)

func runGateway(ctx context.Context, args []string, stderr io.Writer) error {
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
