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
	"github.com/wardvpn/ward/internal/pki"
	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"
)

// Manager owns one worker per registered proxy.
type Manager struct {
	vpn       *vpn.Service
	ca        *pki.CA
	coreID    string
	cert      tls.Certificate
	handler   http.Handler
	log       *slog.Logger
	reconcile time.Duration

	mu      sync.Mutex
	workers map[string]*worker
}

// New builds a manager; handler answers the public requests.
func New(vpnSvc *vpn.Service, ca *pki.CA, coreCert tls.Certificate, coreID string, handler http.Handler, log *slog.Logger) *Manager {
	return &Manager{vpn: vpnSvc, ca: ca, coreID: coreID, cert: coreCert, handler: handler, log: log.With("component", "proxylink"),
		reconcile: 2 * time.Second, workers: map[string]*worker{}}
}

func (m *Manager) actor() core.Actor { return core.SystemActor("core " + m.coreID) }

// Run reconciles workers with the proxy registry until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	t := time.NewTicker(m.reconcile)
	defer t.Stop()
	for {
		m.sync(ctx, &wg)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for _, w := range m.workers {
				w.cancel()
			}
			m.mu.Unlock()
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

func (m *Manager) sync(ctx context.Context, wg *sync.WaitGroup) {
	targets, err := m.vpn.ProxyTargets(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("cannot read the proxy registry", "err", err)
		}
		return
	}
	seen := map[string]bool{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range targets {
		seen[t.ID] = true
		if w, ok := m.workers[t.ID]; ok {
			w.update(t)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &worker{m: m, cancel: cancel, target: t, wake: make(chan struct{}, 1), revoked: make(chan struct{}),
			log: m.log.With("proxy_id", t.ID, "proxy", t.Name)}
		m.workers[t.ID] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx)
		}()
	}
	for id, w := range m.workers {
		if !seen[id] {
			w.cancel()
			delete(m.workers, id)
		}
	}
}

// worker keeps one proxy connected.
type worker struct {
	m      *Manager
	cancel context.CancelFunc
	log    *slog.Logger
	wake   chan struct{}
	// revoked is closed when the proxy is deleted while linked: the live
	// relay tells it at once instead of on the next connection.
	revoked chan struct{}

	mu     sync.Mutex
	target vpn.GatewayTarget
}

func (w *worker) update(t vpn.GatewayTarget) {
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

func (w *worker) run(ctx context.Context) {
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
