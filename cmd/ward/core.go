package main

import (
	"context"
	"io"

	"github.com/wardvpn/ward/internal/coreapp"
)

func runCore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := coreapp.ParseConfig("ward core", args, stderr)
	if err != nil {
		return usageError{err}
	}
	return coreapp.Run(ctx, cfg, buildVersion(), stdout, stderr)
}
