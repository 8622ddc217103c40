package proxy

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"
)

// ProtocolVersion is the relay protocol this proxy speaks.
const ProtocolVersion = 1

// errLinkLost fails the requests in flight on a relay that ended.
var errLinkLost = errors.New("core link lost")

// coreLink is one core replica's Relay stream.
type coreLink struct {
	coreID string
	since  time.Time
	stream pb.Proxy_RelayServer

	sendMu sync.Mutex

	mu      sync.Mutex
	pending map[uint64]chan *pb.HTTPResponse
	closed  bool
}

func (l *coreLink) send(m *pb.ProxyToCore) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.stream.Send(m)
}

// register reserves a response slot; it fails when the link already ended.
func (l *coreLink) register(id uint64) (chan *pb.HTTPResponse, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, false
	}
	ch := make(chan *pb.HTTPResponse, 1)
	l.pending[id] = ch
	return ch, true
}

func (l *coreLink) forget(id uint64) {
	l.mu.Lock()
	delete(l.pending, id)
	l.mu.Unlock()
}

func (l *coreLink) deliver(r *pb.HTTPResponse) {
	l.mu.Lock()
	ch := l.pending[r.GetId()]
	delete(l.pending, r.GetId())
	l.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// close fails every request in flight: their channels are closed.
func (l *coreLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for id, ch := range l.pending {
		close(ch)
		delete(l.pending, id)
	}
}

// pool is the set of connected cores, picked round-robin.
type pool struct {
	mu    sync.Mutex
	links []*coreLink
	next  atomic.Uint64
}

func (p *pool) add(l *coreLink) {
	p.mu.Lock()
	p.links = append(p.links, l)
	p.mu.Unlock()
}

func (p *pool) remove(l *coreLink) {
	p.mu.Lock()
	p.links = slices.DeleteFunc(p.links, func(x *coreLink) bool { return x == l })
	p.mu.Unlock()
}

func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// pick returns the next link, skipping the ones already tried.
func (p *pool) pick(tried map[*coreLink]bool) *coreLink {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	start := int(p.next.Add(1))
	for i := 0; i < n; i++ {
		l := p.links[(start+i)%n]
		if !tried[l] {
			return l
		}
	}
	return nil
}

func (p *pool) snapshot() []*coreLink {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.links)
}

// Relay serves one core replica's stream.
func (p *Proxy) Relay(stream pb.Proxy_RelayServer) error {
	coreID, err := p.adoptee.VerifyCore(stream.Context())
	if err != nil {
		return err
	}
	link := &coreLink{coreID: coreID, since: time.Now(), stream: stream, pending: map[uint64]chan *pb.HTTPResponse{}}
	if err := link.send(&pb.ProxyToCore{Msg: &pb.ProxyToCore_Hello{Hello: &pb.ProxyHello{ProxyId: p.adoptee.ID(), Version: p.version,
		ProtocolVersions: []uint32{ProtocolVersion}}}}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if h := first.GetHello(); h == nil || h.GetProtocolVersion() != ProtocolVersion {
		return status.Error(codes.FailedPrecondition, "expected a core hello with protocol version 1")
	}
	p.links.add(link)
	p.metrics.links.Inc()
	p.log.Info("core connected", "core_id", coreID)
	defer func() {
		p.links.remove(link)
		link.close()
		p.metrics.links.Dec()
		p.log.Info("core disconnected", "core_id", coreID)
	}()
	type received struct {
		msg *pb.CoreToProxy
		err error
	}
	incoming := make(chan received, 1)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case incoming <- received{m, err}:
			case <-stream.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-p.shutdown:
			return status.Error(codes.Unavailable, "proxy shutting down")
		case <-stream.Context().Done():
			return stream.Context().Err()
		case r := <-incoming:
			if r.err != nil {
				return r.err
			}
			switch m := r.msg.Msg.(type) {
			case *pb.CoreToProxy_Response:
				link.deliver(m.Response)
			case *pb.CoreToProxy_Revoked:
				p.forget(m.Revoked.GetReason())
				return status.Error(codes.PermissionDenied, "revoked")
			}
		}
	}
}
