// Package proxylink is core's side of the proxy relay: it dials every
// registered proxy, adopts new ones with their join token, keeps one Relay
// stream per proxy, and answers the public requests that come down it with
// core's public HTTP handler.
package proxylink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/wardvpn/ward/internal/adoption"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/linkset"
	"github.com/wardvpn/ward/internal/pki"
	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"
)

// Manager owns one worker per registered proxy.
type Manager struct {
	vpn     *vpn.Service
	ca      *pki.CA
	coreID  string
	cert    tls.Certificate
	handler http.Handler
	log     *slog.Logger
	set     *linkset.Set
}

// New builds a manager; handler answers the public requests.
func New(vpnSvc *vpn.Service, ca *pki.CA, coreCert tls.Certificate, coreID string, handler http.Handler, log *slog.Logger) *Manager {
	m := &Manager{vpn: vpnSvc, ca: ca, coreID: coreID, cert: coreCert, handler: handler, log: log.With("component", "proxylink")}
	m.set = &linkset.Set{List: vpnSvc.ProxyTargets, Every: 2 * time.Second, Log: m.log,
		Spawn: func(t vpn.GatewayTarget) linkset.Worker {
			return &worker{m: m, wake: make(chan struct{}, 1), revoked: make(chan struct{}), log: m.log.With("proxy_id", t.ID, "proxy", t.Name)}
		}}
	return m
}

func (m *Manager) actor() core.Actor { return core.SystemActor("core " + m.coreID) }

// Run keeps one worker per registered proxy until ctx ends.
func (m *Manager) Run(ctx context.Context) { m.set.Run(ctx) }

// worker keeps one proxy connected.
type worker struct {
	m       *Manager
	log     *slog.Logger
	wake    chan struct{}
	revoked chan struct{} // closed when the proxy is deleted in core

	mu     sync.Mutex
	target vpn.GatewayTarget
}

// Update implements linkset.Worker.
func (w *worker) Update(t vpn.GatewayTarget) {
	w.mu.Lock()
	changed := w.target.ControlAddress != t.ControlAddress || w.target.CertSerial != t.CertSerial ||
		string(w.target.JoinKey) != string(t.JoinKey) || w.target.Revoked != t.Revoked
	if t.Revoked && !w.target.Revoked {
		close(w.revoked)
	}
	w.target = t
	w.mu.Unlock()
	if changed {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *worker) current() vpn.GatewayTarget {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.target
}

var errRevocationDelivered = errors.New("revocation delivered to the proxy")

// Run implements linkset.Worker.
func (w *worker) Run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		t := w.current()
		var err error
		connected := false
		switch {
		case t.Revoked && t.CertSerial == "":
			err = errRevocationDelivered
		case t.CertSerial == "":
			if len(t.JoinKey) == 0 || time.Now().UnixMilli() > t.JoinExpiresAt {
				err = errors.New("not adopted and no valid join token: issue one and start the proxy with it")
			} else if err = w.adopt(ctx, t); err == nil {
				continue
			}
		default:
			connected, err = w.relay(ctx, t)
		}
		if errors.Is(err, errRevocationDelivered) {
			if ferr := w.m.vpn.ForgetProxy(ctx, w.m.actor(), t.ID); ferr == nil {
				w.log.Info("proxy told it is revoked; forgotten")
				return
			} else {
				err = fmt.Errorf("cannot remove the revoked proxy: %w", ferr)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = 250 * time.Millisecond
		}
		if err != nil {
			w.log.Warn("proxy link attempt failed", "err", err)
			ev := vpn.LinkEvent{GatewayID: t.ID, CoreID: w.m.coreID, Error: err.Error()}
			if rerr := w.m.vpn.RecordProxyLinkError(ctx, ev); rerr != nil && ctx.Err() == nil {
				w.log.Debug("cannot record link error", "err", rerr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff)))):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (w *worker) adopt(ctx context.Context, t vpn.GatewayTarget) error {
	conn, err := grpc.NewClient(t.ControlAddress, grpc.WithTransportCredentials(credentials.NewTLS(adoption.AdoptionTLS())))
	if err != nil {
		return err
	}
	defer conn.Close()
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := pb.NewProxyClient(conn).Adopt(actx)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	serial, err := adoption.Adopt(actx, stream, w.m.ca, pki.RoleProxy, t.ID, t.JoinKey, func(serial string) error {
		return w.m.vpn.CompleteProxyAdoption(ctx, w.m.actor(), t.ID, t.JoinKey, serial)
	})
	if err != nil {
		return err
	}
	w.log.Info("proxy adopted", "cert_serial", serial)
	w.mu.Lock()
	w.target.CertSerial, w.target.JoinKey = serial, nil
	w.mu.Unlock()
	return nil
}

func (w *worker) dial(t vpn.GatewayTarget) (*grpc.ClientConn, error) {
	return grpc.NewClient(t.ControlAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(adoption.ClientTLS(w.m.ca, w.m.cert, pki.RoleProxy, t.ID, t.CertSerial))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 2 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)),
	)
}
