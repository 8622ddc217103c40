package gwlink

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/wardvpn/ward/internal/adoption"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/linkset"
	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// worker keeps one gateway connected; linkset.Link runs its life cycle.
type worker struct {
	*linkset.Link
	m   *Manager
	log *slog.Logger
}

// Forget implements linkset.Kind.
func (w *worker) Forget(ctx context.Context, id string) error {
	return w.m.vpn.ForgetGateway(ctx, w.m.actor(), id)
}

// Failed implements linkset.Kind.
func (w *worker) Failed(ctx context.Context, id string, err error) { w.m.recordFailure(ctx, id, err) }

// Adopt implements linkset.Kind: the join-token exchange over TLS that
// cannot be verified yet; the gateway's knowledge of the token is what
// authenticates it.
func (w *worker) Adopt(ctx context.Context, t vpn.GatewayTarget) (string, error) {
	conn, err := grpc.NewClient(t.ControlAddress, grpc.WithTransportCredentials(credentials.NewTLS(adoption.AdoptionTLS())))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := gw.NewGatewayClient(conn).Adopt(actx)
	if err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	serial, err := adoption.Adopt(actx, stream, w.m.ca, pki.RoleGateway, t.ID, t.JoinKey, func(serial string) error {
		// The gateway stored its identity and will not accept this token
		// again, so at most one replica gets here per token.
		return w.m.vpn.CompleteAdoption(ctx, w.m.actor(), t.ID, t.JoinKey, serial)
	})
	if err != nil {
		return "", err
	}
	w.m.metrics.adopted.Inc()
	return serial, nil
}

// dial opens a mutual-TLS connection that accepts only this gateway's
// current certificate.
func (w *worker) dial(t vpn.GatewayTarget) (*grpc.ClientConn, error) {
	return grpc.NewClient(t.ControlAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(adoption.ClientTLS(w.m.ca, w.m.cert, pki.RoleGateway, t.ID, t.CertSerial))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 2 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
	)
}
