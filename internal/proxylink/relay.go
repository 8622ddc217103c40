package proxylink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/linkset"
)

// ProtocolVersion is the relay protocol this core speaks.
const ProtocolVersion = 1

// maxInFlight bounds concurrent public requests per proxy stream.
const maxInFlight = 256

// relay runs one Relay stream until it fails.
func (w *worker) relay(ctx context.Context, t vpn.GatewayTarget) (bool, error) {
	conn, err := w.dial(t)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewProxyClient(conn).Relay(sctx)
	if err != nil {
		return false, fmt.Errorf("open relay: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("relay: %w", err)
	}
	hello := first.GetHello()
	if hello == nil || hello.GetProxyId() != t.ID {
		return false, fmt.Errorf("proxy introduced itself as %q, expected %q", hello.GetProxyId(), t.ID)
	}
	var sendMu sync.Mutex
	send := func(m *pb.CoreToProxy) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	if t.Revoked {
		if err := send(&pb.CoreToProxy{Msg: &pb.CoreToProxy_Revoked{Revoked: &gw.Revoked{Reason: "proxy deleted in core"}}}); err != nil {
			return true, err
		}
		_, _ = stream.Recv() // the proxy ends the stream once it forgot
		return true, linkset.ErrRevocationDelivered
	}
	if err := send(&pb.CoreToProxy{Msg: &pb.CoreToProxy_Hello{Hello: &pb.CoreHello{ProtocolVersion: ProtocolVersion, CoreId: w.m.coreID}}}); err != nil {
		return false, err
	}
	link := vpn.LinkEvent{GatewayID: t.ID, CoreID: w.m.coreID, Version: hello.GetVersion(), Connected: true}
	if err := w.m.vpn.RecordProxyLink(ctx, w.m.actor(), link, true); err != nil {
		w.log.Warn("cannot record proxy link", "err", err)
	}
	w.log.Info("proxy connected", "version", hello.GetVersion())
	defer func() {
		link.Connected = false
		if err != nil && !errors.Is(err, context.Canceled) {
			link.Error = err.Error()
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		if rerr := w.m.vpn.RecordProxyLink(rctx, w.m.actor(), link, true); rerr != nil {
			w.log.Warn("cannot record proxy disconnect", "err", rerr)
		}
	}()

	// A deletion while linked is delivered on this stream at once; the
	// proxy ends the stream once it has dropped its identity.
	var revoking atomic.Bool
	revokeSent := make(chan error, 1)
	go func() {
		select {
		case <-w.Revoked():
		case <-sctx.Done():
			return
		}
		revoking.Store(true)
		revokeSent <- send(&pb.CoreToProxy{Msg: &pb.CoreToProxy_Revoked{Revoked: &gw.Revoked{Reason: "proxy deleted in core"}}})
	}()

	var inflight sync.Map // request id -> cancel func
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	// Heartbeat: keep last_contact fresh while the link lives, so a killed
	// replica's row goes stale; and drop the link when a new join token
	// replaced this adoption.
	go func() {
		tick := time.NewTicker(vpn.LinkHeartbeat)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			if terr := w.m.vpn.TouchProxyLink(sctx, t.ID, w.m.coreID); terr != nil {
				w.log.Debug("cannot refresh the link", "err", terr)
			}
			if cur := w.Target(); cur.CertSerial != t.CertSerial {
				w.log.Info("the proxy's adoption was replaced by a new join token; dropping the link")
				cancel()
				return
			}
		}
	}()
	for {
		msg, rerr := stream.Recv()
		if rerr != nil {
			cancel() // abandon requests in flight; the proxy retries idempotent ones elsewhere
			if revoking.Load() && <-revokeSent == nil {
				return true, linkset.ErrRevocationDelivered
			}
			err = fmt.Errorf("relay: %w", rerr)
			return true, err
		}
		switch m := msg.Msg.(type) {
		case *pb.ProxyToCore_Request:
			req := m.Request
			rctx, rcancel := context.WithCancel(sctx)
			inflight.Store(req.GetId(), rcancel)
			select {
			case sem <- struct{}{}:
			case <-sctx.Done():
				rcancel()
				return true, sctx.Err()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				defer inflight.Delete(req.GetId())
				defer rcancel()
				resp := w.serve(rctx, req)
				if rctx.Err() != nil && sctx.Err() == nil {
					return // cancelled by the proxy
				}
				if serr := send(&pb.CoreToProxy{Msg: &pb.CoreToProxy_Response{Response: resp}}); serr != nil {
					w.log.Debug("response not sent", "id", req.GetId(), "err", serr)
				}
			}()
		case *pb.ProxyToCore_Cancel:
			if c, ok := inflight.Load(m.Cancel); ok {
				c.(context.CancelFunc)()
			}
		}
	}
}

// serve answers one relayed request with the public handler.
func (w *worker) serve(ctx context.Context, in *pb.HTTPRequest) *pb.HTTPResponse {
	req, err := http.NewRequestWithContext(ctx, in.GetMethod(), in.GetUri(), bytes.NewReader(in.GetBody()))
	if err != nil {
		return &pb.HTTPResponse{Id: in.GetId(), Status: http.StatusBadRequest,
			Headers: []*pb.Header{{Name: "Content-Type", Values: []string{"application/json"}}},
			Body:    []byte(`{"error":{"code":"bad_request","message":"malformed request"}}` + "\n")}
	}
	for _, h := range in.GetHeaders() {
		for _, v := range h.GetValues() {
			req.Header.Add(h.GetName(), v)
		}
	}
	// The proxy is authenticated by mutual TLS, so its word on the client
	// address is trusted; whatever the client sent is replaced.
	req.Header.Set("X-Forwarded-For", in.GetRemoteIp())
	proto := "http"
	if in.GetTls() {
		proto = "https"
	}
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Host = in.GetHost()
	req.RemoteAddr = in.GetRemoteIp() + ":0"
	rec := &recorder{header: http.Header{}}
	w.m.handler.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	out := &pb.HTTPResponse{Id: in.GetId(), Status: int32(rec.status), Body: rec.body.Bytes()}
	for name, values := range rec.header {
		out.Headers = append(out.Headers, &pb.Header{Name: name, Values: values})
	}
	return out
}

// recorder is an in-memory http.ResponseWriter.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
