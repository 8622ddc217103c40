package gwlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/wardvpn/ward/internal/adoption"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// worker keeps one gateway connected.
type worker struct {
	m   *Manager
	log *slog.Logger

	mu      sync.Mutex
	target  vpn.GatewayTarget
	wake    chan struct{}
	revoked chan struct{}
}

// Update implements linkset.Worker.
func (w *worker) Update(t vpn.GatewayTarget) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
		w.revoked = make(chan struct{})
	}
	changed := w.target.ControlAddress != t.ControlAddress || w.target.CertSerial != t.CertSerial || string(w.target.JoinKey) != string(t.JoinKey)
	if t.Revoked && !w.target.Revoked {
		close(w.revoked) // a live session sends Revoked at once
		changed = true
	}
	w.target = t
	if changed {
		w.kick()
	}
}

func (w *worker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) current() vpn.GatewayTarget {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.target
}

// errRevocationDelivered ends a session whose gateway was told it is revoked.
var errRevocationDelivered = errors.New("revocation delivered to the gateway")

// Run implements linkset.Worker.
func (w *worker) Run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		t := w.current()
		var err error
		switch {
		case t.Revoked && t.CertSerial == "":
			err = errRevocationDelivered // never adopted: nothing to tell
		case t.Revoked:
			_, err = w.session(ctx, t)
		case t.CertSerial == "":
			if len(t.JoinKey) == 0 || time.Now().UnixMilli() > t.JoinExpiresAt {
				err = errors.New("not adopted and no valid join token: issue one and start the gateway with it")
			} else if err = w.adopt(ctx, t); err == nil {
				backoff = 250 * time.Millisecond
				continue // the registry now holds the serial
			}
		default:
			var connected bool
			connected, err = w.session(ctx, t)
			if connected {
				backoff = 250 * time.Millisecond
			}
		}
		if errors.Is(err, errRevocationDelivered) {
			ferr := w.m.vpn.ForgetGateway(ctx, w.m.actor(), t.ID)
			if ferr == nil {
				w.log.Info("gateway told it is revoked; forgotten")
				return
			}
			err = fmt.Errorf("cannot remove the revoked gateway: %w", ferr)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.log.Warn("gateway link attempt failed", "err", err)
			w.m.recordFailure(ctx, t.ID, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-time.After(jitter(backoff)):
		}
		backoff = min(backoff*2, w.m.opts.MaxBackoff)
	}
}

// adopt runs the join-token exchange over TLS that cannot be verified yet;
// the gateway's knowledge of the token is what authenticates it.
func (w *worker) adopt(ctx context.Context, t vpn.GatewayTarget) error {
	conn, err := grpc.NewClient(t.ControlAddress, grpc.WithTransportCredentials(credentials.NewTLS(adoption.AdoptionTLS())))
	if err != nil {
		return err
	}
	defer conn.Close()
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := gw.NewGatewayClient(conn).Adopt(actx)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	serial, err := adoption.Adopt(actx, stream, w.m.ca, pki.RoleGateway, t.ID, t.JoinKey, func(serial string) error {
		// The gateway stored its identity and will not accept this token
		// again, so at most one replica gets here per token.
		return w.m.vpn.CompleteAdoption(ctx, w.m.actor(), t.ID, t.JoinKey, serial)
	})
	if err != nil {
		return err
	}
	w.m.metrics.adopted.Inc()
	w.log.Info("gateway adopted", "cert_serial", serial)
	w.mu.Lock()
	w.target.CertSerial, w.target.JoinKey = serial, nil
	w.mu.Unlock()
	return nil
}

// dial opens a mutual-TLS connection that accepts only this gateway's
// current certificate.
func (w *worker) dial(t vpn.GatewayTarget) (*grpc.ClientConn, error) {
	return grpc.NewClient(t.ControlAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(adoption.ClientTLS(w.m.ca, w.m.cert, pki.RoleGateway, t.ID, t.CertSerial))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 2 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
	)
}
