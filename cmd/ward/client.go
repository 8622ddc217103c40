package main

import (
	"context"
	"io"

	"github.com/wardvpn/ward/internal/client"
)

// runClient is `ward client`; it returns its own exit codes (see
// client.Usage), which say more than the other commands' 0/1/2.
func runClient(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return client.Main(ctx, args, stdin, stdout, stderr)
}
