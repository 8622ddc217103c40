package gwlink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/linkset"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// ProtocolVersion is the newest control protocol this core speaks.
const ProtocolVersion = 1

type recvResult struct {
	msg *gw.GatewayMessage
	err error
}

// Session implements linkset.Kind: it runs one Control stream until it fails. connected reports whether
// the gateway got as far as Hello (for backoff).
func (w *worker) Session(ctx context.Context, t vpn.GatewayTarget) (connected bool, err error) {
	conn, err := w.dial(t)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := gw.NewGatewayClient(conn).Control(sctx)
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	incoming := make(chan recvResult, 16)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case incoming <- recvResult{msg, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var hello *gw.Hello
	select {
	case r := <-incoming:
		if r.err != nil {
			return false, fmt.Errorf("control stream: %w", r.err)
		}
		hello = r.msg.GetHello()
	case <-time.After(10 * time.Second):
		return false, errors.New("gateway sent no hello within 10s")
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if hello == nil || hello.GetGatewayId() != t.ID {
		return false, fmt.Errorf("gateway introduced itself as %q, expected %q", hello.GetGatewayId(), t.ID)
	}
	if !slices.Contains(hello.GetProtocolVersions(), ProtocolVersion) {
		return false, fmt.Errorf("gateway speaks protocol versions %v, core needs %d", hello.GetProtocolVersions(), ProtocolVersion)
	}
	if err := stream.Send(&gw.CoreMessage{Msg: &gw.CoreMessage_Welcome{Welcome: &gw.Welcome{ProtocolVersion: ProtocolVersion, CoreId: w.m.coreID}}}); err != nil {
		return false, err
	}
	if t.Revoked {
		return true, w.sendRevoked(stream.Send, incoming)
	}
	link := vpn.LinkEvent{GatewayID: t.ID, CoreID: w.m.coreID, Version: hello.GetVersion(), BootID: hello.GetBootId(),
		Connected: true, AppliedRevision: int64(hello.GetAppliedRevision()), Role: roleName(hello.GetRole()), RoleSince: hello.GetRoleSince()}
	if err := w.m.vpn.RecordLink(ctx, w.m.actor(), link, true); err != nil {
		w.log.Warn("cannot record gateway link", "err", err)
	}
	w.log.Info("gateway connected", "version", hello.GetVersion(), "applied_revision", hello.GetAppliedRevision(), "role", link.Role)
	w.m.metrics.linkUp.WithLabelValues(t.ID).Set(1)
	w.m.metrics.applied.WithLabelValues(t.ID).Set(float64(hello.GetAppliedRevision()))
	defer func() {
		w.m.metrics.linkUp.WithLabelValues(t.ID).Set(0)
		link.Connected = false
		if err != nil && !errors.Is(err, context.Canceled) {
			link.Error = err.Error()
		}
		// The session context may be gone; the disconnect must still land.
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		if rerr := w.m.vpn.RecordLink(rctx, w.m.actor(), link, true); rerr != nil {
			w.log.Warn("cannot record gateway disconnect", "err", rerr)
		}
		w.log.Info("gateway disconnected", "err", err)
	}()

	// Sends come from this loop and from the statistics goroutine.
	var sendMu sync.Mutex
	send := func(m *gw.CoreMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	// Statistics are ingested off this loop, so a large report never holds
	// up a config change. Reports are cumulative: while one is being
	// ingested, a newer one replaces any report still waiting.
	reports := make(chan *gw.StatsReport, 1)
	ingestDone := make(chan struct{})
	go func() {
		defer close(ingestDone)
		for r := range reports {
			w.ingest(ctx, t, r)
			if err := send(&gw.CoreMessage{Msg: &gw.CoreMessage_StatsAck{StatsAck: &gw.StatsAck{BootId: r.GetBootId(), Seq: r.GetSeq()}}}); err != nil {
				w.log.Debug("stats ack not sent", "err", err)
			}
		}
	}()
	defer func() {
		close(reports)
		<-ingestDone
	}()

	// Signatures are computed off this loop, latest job wins.
	signJobs := make(chan signJob, 1)
	signDone := make(chan struct{})
	go func() {
		defer close(signDone)
		for j := range signJobs {
			msg, err := j.sign(w.m.ca.Key)
			if err != nil {
				w.log.Warn("cannot sign the gateway's configuration", "revision", j.revision, "err", err)
				continue
			}
			if err := send(msg); err != nil {
				w.log.Debug("configuration signature not sent", "err", err)
			}
		}
	}()
	defer func() {
		close(signJobs)
		<-signDone
	}()

	wake, unsubscribe := w.m.vpn.Hub().Subscribe(t.LocationID)
	defer unsubscribe()
	poll := time.NewTicker(w.m.opts.RevisionPoll)
	defer poll.Stop()
	heartbeat := time.NewTicker(vpn.LinkHeartbeat)
	defer heartbeat.Stop()
	// Peer endpoints: the whole set right after the first update, then
	// changes on every poll.
	var endpoints endpointSync
	endpointsStarted := false

	// mirror is the gateway's configuration as this stream sent it, so that
	// core can sign the whole of it once the gateway acknowledged it.
	mirror := newConfigMirror()
	var lastSigned time.Time
	sent := int64(hello.GetAppliedRevision())
	var awaitingAck int64
	var ackDeadline time.Time
	for {
		upd, err := w.m.vpn.GatewayUpdateSince(ctx, t.LocationID, sent)
		if err != nil {
			return true, fmt.Errorf("compute update: %w", err)
		}
		if upd.Revision != sent {
			msg := updateMessage(upd)
			if err := send(msg); err != nil {
				return true, err
			}
			mirror.apply(msg)
			sent = upd.Revision
			if awaitingAck == 0 {
				ackDeadline = time.Now().Add(w.m.opts.AckTimeout)
			}
			awaitingAck = sent
		}
		if !mirror.complete {
			// The stream resumed from the gateway's revision (changes only):
			// read the whole configuration once so it can be signed.
			full, err := w.m.vpn.GatewayUpdateSince(ctx, t.LocationID, 0)
			if err != nil {
				return true, fmt.Errorf("read the configuration to sign: %w", err)
			}
			mirror.apply(updateMessage(full))
		}
		if !endpointsStarted {
			endpointsStarted = true
			if err := w.syncEndpoints(ctx, t.LocationID, &endpoints, send); err != nil {
				return true, err
			}
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-w.Revoked():
			return true, w.sendRevoked(send, incoming)
		case <-wake:
		case <-heartbeat.C:
			if err := w.m.vpn.TouchLink(ctx, t.ID, w.m.coreID, link.AppliedRevision); err != nil {
				w.log.Warn("cannot refresh the link", "err", err)
			}
		case <-poll.C:
			if awaitingAck != 0 && time.Now().After(ackDeadline) {
				return true, fmt.Errorf("gateway did not acknowledge revision %d within %s", awaitingAck, w.m.opts.AckTimeout)
			}
			if cur := w.Target(); cur.CertSerial != t.CertSerial {
				// A new join token revoked this adoption: drop the link.
				return true, errors.New("the gateway's adoption was replaced by a new join token")
			}
			if err := w.syncEndpoints(ctx, t.LocationID, &endpoints, send); err != nil {
				return true, err
			}
			// What the ack path left unsigned (acks in a burst) is signed
			// on the poll beat.
			if link.AppliedRevision == sent && awaitingAck == 0 {
				if j, ok := mirror.job(uint64(sent)); ok {
					lastSigned = time.Now()
					queueSign(signJobs, j)
				}
			}
		case r := <-incoming:
			if r.err != nil {
				if status.Code(r.err) == codes.Canceled && ctx.Err() != nil {
					return true, ctx.Err()
				}
				return true, fmt.Errorf("control stream: %w", r.err)
			}
			switch m := r.msg.Msg.(type) {
			case *gw.GatewayMessage_Ack:
				link.AppliedRevision = int64(m.Ack.GetRevision())
				w.m.metrics.applied.WithLabelValues(t.ID).Set(float64(link.AppliedRevision))
				if link.AppliedRevision >= awaitingAck {
					awaitingAck = 0
				}
				// Sign soon after the ack (a restart without core restores
				// only signed configurations), at most every signEvery.
				if link.AppliedRevision == sent && awaitingAck == 0 && time.Since(lastSigned) >= signEvery {
					if j, ok := mirror.job(uint64(sent)); ok {
						lastSigned = time.Now()
						queueSign(signJobs, j)
					}
				}
				if err := w.m.vpn.TouchLink(ctx, t.ID, w.m.coreID, link.AppliedRevision); err != nil {
					w.log.Warn("cannot record ack", "err", err)
				}
			case *gw.GatewayMessage_Role:
				// Kept in link too, so the disconnect records the last role.
				link.Role, link.RoleSince = roleName(m.Role.GetRole()), m.Role.GetSince()
				w.log.Info("gateway role changed", "role", link.Role, "since", time.UnixMilli(link.RoleSince))
				if err := w.m.vpn.RecordRole(ctx, t.ID, w.m.coreID, link.Role, link.RoleSince); err != nil {
					w.log.Warn("cannot record the gateway's role", "err", err)
				}
			case *gw.GatewayMessage_NeedSnapshot:
				w.log.Info("gateway asked for a snapshot", "applied_revision", m.NeedSnapshot.GetAppliedRevision())
				sent = 0
			case *gw.GatewayMessage_Stats:
				select {
				case reports <- m.Stats:
				default:
					select {
					case stale := <-reports:
						w.log.Debug("statistics report superseded before ingestion", "seq", stale.GetSeq())
					default:
					}
					reports <- m.Stats
				}
				if err := w.m.vpn.TouchLink(ctx, t.ID, w.m.coreID, link.AppliedRevision); err != nil {
					w.log.Warn("cannot record contact", "err", err)
				}
			}
		}
	}
}

// sendRevoked tells the gateway it was deleted and waits for it to close the
// stream, which it does once it has dropped its identity.
func (w *worker) sendRevoked(send func(*gw.CoreMessage) error, incoming <-chan recvResult) error {
	if err := send(&gw.CoreMessage{Msg: &gw.CoreMessage_Revoked{Revoked: &gw.Revoked{Reason: "gateway deleted in core"}}}); err != nil {
		return fmt.Errorf("send revocation: %w", err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-incoming:
			if r.err != nil {
				return linkset.ErrRevocationDelivered
			}
		case <-deadline:
			return errors.New("gateway did not confirm the revocation")
		}
	}
}

func (w *worker) ingest(ctx context.Context, t vpn.GatewayTarget, r *gw.StatsReport) {
	rep := stats.Report{GatewayID: t.ID, LocationID: t.LocationID, BootID: r.GetBootId(), Seq: r.GetSeq(), At: r.GetAt(),
		Samples: make([]stats.Sample, len(r.GetSamples()))}
	for i, s := range r.GetSamples() {
		rep.Samples[i] = stats.Sample{PublicKey: s.GetPublicKey(), Generation: s.GetGeneration(), RxBytes: s.GetRxBytes(), TxBytes: s.GetTxBytes(),
			LastHandshake: s.GetLastHandshake(), Endpoint: s.GetEndpoint()}
	}
	ingested, err := w.m.stats.Ingest(ctx, rep)
	switch {
	case err != nil:
		w.m.metrics.batches.WithLabelValues("error").Inc()
		w.log.Warn("statistics batch not ingested", "seq", r.GetSeq(), "err", err)
	case ingested:
		w.m.metrics.batches.WithLabelValues("ingested").Inc()
		w.m.metrics.samples.Add(float64(len(rep.Samples)))
	default:
		w.m.metrics.batches.WithLabelValues("duplicate").Inc()
	}
}

// roleName is a reported role as core stores it; a gateway that reports
// none (older than the report) is vpn.RoleUnknown.
func roleName(r gw.Role) string {
	switch r {
	case gw.Role_ROLE_ACTIVE:
		return vpn.RoleActive
	case gw.Role_ROLE_STANDBY:
		return vpn.RoleStandby
	}
	return vpn.RoleUnknown
}

func updateMessage(u vpn.GatewayUpdate) *gw.CoreMessage {
	iface := &gw.Interface{LocationId: u.Interface.LocationID, LocationName: u.Interface.LocationName, PrivateKey: u.Interface.PrivateKey,
		ListenPort: uint32(u.Interface.ListenPort), Addresses: u.Interface.Addresses, Mtu: uint32(u.Interface.MTU), Fwmark: uint32(u.Interface.FwMark),
		MfaDisconnectThreshold: uint32(u.Interface.MFADisconnectThreshold), PeersWithoutCore: u.Interface.PeersWithoutCore,
		DropPeersAfter: uint32(u.Interface.DropPeersAfter)}
	peers := make([]*gw.Peer, len(u.Peers))
	for i, p := range u.Peers {
		peers[i] = &gw.Peer{PublicKey: p.PublicKey, AllowedIps: p.AllowedIPs, PresharedKey: p.PresharedKey, ExpiresAt: p.ExpiresAt, DeviceId: p.DeviceID}
	}
	if u.Snapshot {
		return &gw.CoreMessage{Msg: &gw.CoreMessage_Snapshot{Snapshot: &gw.Snapshot{Revision: uint64(u.Revision), Interface: iface, Peers: peers}}}
	}
	return &gw.CoreMessage{Msg: &gw.CoreMessage_Changes{Changes: &gw.Changes{FromRevision: uint64(u.FromRevision), ToRevision: uint64(u.Revision),
		Interface: iface, Upserts: peers, Removes: u.Removes}}}
}

func (m *Manager) recordFailure(ctx context.Context, gatewayID string, err error) {
	m.metrics.attempts.WithLabelValues(gatewayID).Inc()
	ev := vpn.LinkEvent{GatewayID: gatewayID, CoreID: m.coreID, Connected: false, Error: err.Error()}
	if rerr := m.vpn.RecordLinkError(ctx, ev); rerr != nil && ctx.Err() == nil {
		m.log.Debug("cannot record link error", "err", rerr)
	}
}
