package gateway

import (
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wardvpn/ward/internal/adoption"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// coreLink is one core replica's control stream.
type coreLink struct {
	coreID string
	since  time.Time
	sendMu sync.Mutex
	stream gw.Gateway_ControlServer
	// roleKick wakes the stream's loop to report a role change; sentRole
	// and sentSince are what it reported last (touched by that loop only).
	roleKick  chan struct{}
	sentRole  Role
	sentSince time.Time
}

func (l *coreLink) send(m *gw.GatewayMessage) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.stream.Send(m)
}

// Control serves one core replica's stream. Several may be open at once;
// they all carry the same revisions, and applying ignores what is already
// applied, so duplicates are harmless and order is kept.
func (g *Gateway) Control(stream gw.Gateway_ControlServer) error {
	coreID, err := g.adoptee.VerifyCore(stream.Context())
	if err != nil {
		return err
	}
	return g.serveControl(coreID, stream)
}

// serveControl runs a verified core replica's stream.
func (g *Gateway) serveControl(coreID string, stream gw.Gateway_ControlServer) error {
	link := &coreLink{coreID: coreID, since: time.Now(), stream: stream, roleKick: make(chan struct{}, 1)}
	role := g.roles.get()
	link.sentRole, link.sentSince = role.Role, role.Since
	g.mu.Lock()
	hello := &gw.Hello{GatewayId: g.gatewayID(), Version: g.version, ProtocolVersions: []uint32{ProtocolVersion}, BootId: g.bootID,
		AppliedRevision: g.state.revision, Role: roleProto(role.Role), RoleSince: role.Since.UnixMilli()}
	if g.localDirty {
		// Peers were removed here while core was away: only a snapshot
		// brings back the ones core still wants.
		hello.AppliedRevision = 0
	}
	if g.state.iface != nil {
		hello.LocationId = g.state.iface.GetLocationId()
	}
	g.mu.Unlock()
	if err := link.send(&gw.GatewayMessage{Msg: &gw.GatewayMessage_Hello{Hello: hello}}); err != nil {
		return err
	}
	g.addLink(link)
	defer g.removeLink(link)
	// The role may have changed between reading it for Hello and addLink,
	// when this link was not there to be told.
	link.kickRole()
	g.log.Info("core connected", "core_id", coreID)
	defer g.log.Info("core disconnected", "core_id", coreID)
	type received struct {
		msg *gw.CoreMessage
		err error
	}
	incoming := make(chan received, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case incoming <- received{msg, err}:
			case <-stream.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var msg *gw.CoreMessage
		select {
		case <-g.shutdown:
			return status.Error(codes.Unavailable, "gateway shutting down")
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-link.roleKick:
			if err := g.sendRole(link); err != nil {
				return err
			}
			continue
		case r := <-incoming:
			if r.err != nil {
				return r.err
			}
			msg = r.msg
		}
		if err := g.handle(link, msg); err != nil {
			return err
		}
	}
}

// handle applies one message from a core.
func (g *Gateway) handle(link *coreLink, msg *gw.CoreMessage) error {
	g.touchContact()
	switch m := msg.Msg.(type) {
	case *gw.CoreMessage_Welcome:
		if m.Welcome.GetProtocolVersion() != ProtocolVersion {
			return status.Errorf(codes.FailedPrecondition, "protocol version %d not supported", m.Welcome.GetProtocolVersion())
		}
	case *gw.CoreMessage_Snapshot:
		if _, err := g.applySnapshot(m.Snapshot); err != nil {
			g.log.Error("applying snapshot failed", "revision", m.Snapshot.GetRevision(), "err", err)
			return status.Errorf(codes.Internal, "apply snapshot: %v", err)
		}
		return g.ack(link)
	case *gw.CoreMessage_Changes:
		_, err := g.applyChanges(m.Changes)
		if errors.Is(err, errGap) {
			g.mu.Lock()
			rev := g.state.revision
			g.mu.Unlock()
			return link.send(&gw.GatewayMessage{Msg: &gw.GatewayMessage_NeedSnapshot{NeedSnapshot: &gw.NeedSnapshot{AppliedRevision: rev}}})
		}
		if err != nil {
			g.log.Error("applying changes failed", "to_revision", m.Changes.GetToRevision(), "err", err)
			return status.Errorf(codes.Internal, "apply changes: %v", err)
		}
		return g.ack(link)
	case *gw.CoreMessage_ConfigSignature:
		g.handleSignature(m.ConfigSignature)
	case *gw.CoreMessage_PeerEndpoints:
		g.mergeEndpoints(m.PeerEndpoints.GetEndpoints())
	case *gw.CoreMessage_StatsAck:
	case *gw.CoreMessage_Revoked:
		g.forget(m.Revoked.GetReason())
		return status.Error(codes.PermissionDenied, "revoked")
	}
	return nil
}

func (g *Gateway) ack(link *coreLink) error {
	g.mu.Lock()
	rev := g.state.revision
	g.mu.Unlock()
	return link.send(&gw.GatewayMessage{Msg: &gw.GatewayMessage_Ack{Ack: &gw.Ack{Revision: rev}}})
}

// roleProto is the wire form of a role.
func roleProto(r Role) gw.Role {
	switch r {
	case RoleActive:
		return gw.Role_ROLE_ACTIVE
	case RoleStandby:
		return gw.Role_ROLE_STANDBY
	}
	return gw.Role_ROLE_UNSPECIFIED
}

// kickRole wakes the link's loop to compare the role with what it reported;
// one pending wake-up is enough.
func (l *coreLink) kickRole() {
	select {
	case l.roleKick <- struct{}{}:
	default:
	}
}

// sendRole reports the current role on link unless the link already has it.
// It runs on the link's own loop, so a core that reads slowly holds up only
// its own stream, never the role loop that drives the engine.
func (g *Gateway) sendRole(link *coreLink) error {
	info := g.roles.get()
	if info.Role == link.sentRole && info.Since.Equal(link.sentSince) {
		return nil
	}
	if err := link.send(&gw.GatewayMessage{Msg: &gw.GatewayMessage_Role{Role: &gw.RoleStatus{Role: roleProto(info.Role),
		Since: info.Since.UnixMilli()}}}); err != nil {
		return err
	}
	link.sentRole, link.sentSince = info.Role, info.Since
	return nil
}

// reportRole tells every connected core to check the role.
func (g *Gateway) reportRole() {
	links, _ := g.linkSnapshot()
	for _, l := range links {
		l.kickRole()
	}
}

func (g *Gateway) gatewayID() string { return g.adoptee.ID() }

func (g *Gateway) addLink(l *coreLink) {
	g.linksMu.Lock()
	g.links[l] = struct{}{}
	g.lastContact = time.Now()
	g.linksMu.Unlock()
	g.metrics.links.Inc()
}

func (g *Gateway) removeLink(l *coreLink) {
	g.linksMu.Lock()
	delete(g.links, l)
	if len(g.links) == 0 {
		g.coreLeft = time.Now()
	}
	g.linksMu.Unlock()
	g.metrics.links.Dec()
}

func (g *Gateway) touchContact() {
	g.linksMu.Lock()
	g.lastContact = time.Now()
	g.linksMu.Unlock()
}

func (g *Gateway) linkSnapshot() ([]*coreLink, time.Time) {
	g.linksMu.Lock()
	defer g.linksMu.Unlock()
	out := make([]*coreLink, 0, len(g.links))
	for l := range g.links {
		out = append(out, l)
	}
	return out, g.lastContact
}

func removeFile(dir, name string) error { return adoption.RemoveFile(dir, name) }
