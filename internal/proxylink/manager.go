// Package proxylink is core's side of the proxy relay: it dials every
// registered proxy, adopts new ones with their join token, keeps one Relay
// stream per proxy, and answers the public requests that come down it with
// core's public HTTP handler.
package proxylink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
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
			w := &worker{m: m, log: m.log.With("proxy_id", t.ID, "proxy", t.Name)}
			w.Link = linkset.NewLink(w, "proxy", w.log, 10*time.Second)
			return w
		}}
	return m
}

func (m *Manager) actor() core.Actor { return core.SystemActor("core " + m.coreID) }

// Run keeps one worker per registered proxy until ctx ends.
func (m *Manager) Run(ctx context.Context) { m.set.Run(ctx) }

// worker keeps one proxy connected; linkset.Link runs its life cycle.
type worker struct {
	*linkset.Link
	m   *Manager
	log *slog.Logger
}

// Session implements linkset.Kind.
func (w *worker) Session(ctx context.Context, t vpn.GatewayTarget) (bool, error) {
	return w.relay(ctx, t)
}

// Forget implements linkset.Kind.
func (w *worker) Forget(ctx context.Context, id string) error {
	return w.m.vpn.ForgetProxy(ctx, w.m.actor(), id)
}

// Failed implements linkset.Kind.
func (w *worker) Failed(ctx context.Context, id string, err error) {
	ev := vpn.LinkEvent{GatewayID: id, CoreID: w.m.coreID, Error: err.Error()}
	if rerr := w.m.vpn.RecordProxyLinkError(ctx, ev); rerr != nil && ctx.Err() == nil {
		w.log.Debug("cannot record link error", "err", rerr)
	}
}

// Adopt implements linkset.Kind.
func (w *worker) Adopt(ctx context.Context, t vpn.GatewayTarget) (string, error) {
	conn, err := grpc.NewClient(t.ControlAddress, grpc.WithTransportCredentials(credentials.NewTLS(adoption.AdoptionTLS())))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := pb.NewProxyClient(conn).Adopt(actx)
	if err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	return adoption.Adopt(actx, stream, w.m.ca, pki.RoleProxy, t.ID, t.JoinKey, func(serial string) error {
		return w.m.vpn.CompleteProxyAdoption(ctx, w.m.actor(), t.ID, t.JoinKey, serial)
	})
}

func (w *worker) dial(t vpn.GatewayTarget) (*grpc.ClientConn, error) {
	return grpc.NewClient(t.ControlAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(adoption.ClientTLS(w.m.ca, w.m.cert, pki.RoleProxy, t.ID, t.CertSerial))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 2 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)),
	)
}
