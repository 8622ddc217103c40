package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime/debug"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
	"github.com/wardvpn/ward/internal/wgbind"
)

// errGap means a Changes message starts past the applied revision.
var errGap = errors.New("changes start beyond the applied revision")

// applied mirrors what is installed on the device.
type applied struct {
	revision uint64
	iface    *gw.Interface
	peers    map[string]*gw.Peer
}

// applySnapshot brings the device to the snapshot with a diff against the
// device itself. Older or equal revisions are ignored: several cores send
// the same snapshot. It reports whether anything was applied.
func (g *Gateway) applySnapshot(s *gw.Snapshot) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A gateway that removed peers by itself while core was away takes the
	// snapshot of its own revision too: that is how they come back.
	if g.state.revision != 0 && s.GetRevision() <= g.state.revision && !(g.localDirty && s.GetRevision() == g.state.revision) {
		return false, nil
	}
	if err := g.configureLocked(s.GetInterface()); err != nil {
		return false, err
	}
	desired := make([]wgengine.PeerConfig, 0, len(s.GetPeers()))
	byKey := make(map[string]*gw.Peer, len(s.GetPeers()))
	for _, p := range s.GetPeers() {
		pc, err := peerConfig(p)
		if err != nil {
			return false, err
		}
		desired = append(desired, pc)
		byKey[p.GetPublicKey()] = p
	}
	current, err := g.engine.Peers()
	if err != nil {
		return false, err
	}
	set, remove := wgengine.Diff(current, desired)
	if err := g.engine.Apply(set, remove); err != nil {
		return false, err
	}
	g.noteInstalledLocked(current, set)
	for _, p := range set {
		g.noteTouchedLocked(p.PublicKey)
	}
	g.noteSessionsLocked(byKey)
	for _, k := range remove {
		delete(g.installed, k)
	}
	g.noteTouchedLocked(remove...)
	g.localDirty = false
	g.state = applied{revision: s.GetRevision(), iface: s.GetInterface(), peers: byKey}
	g.afterApplyLocked(len(set), len(remove))
	return true, nil
}

// applyChanges applies the peers changed since from. Duplicates (to at or
// below the applied revision) are ignored; a gap asks for a snapshot.
func (g *Gateway) applyChanges(c *gw.Changes) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.GetToRevision() <= g.state.revision {
		return false, nil
	}
	if g.state.revision == 0 || c.GetFromRevision() > g.state.revision {
		return false, errGap
	}
	if err := g.configureLocked(c.GetInterface()); err != nil {
		return false, err
	}
	var set []wgengine.PeerConfig
	var remove []string
	for _, p := range c.GetUpserts() {
		if old, ok := g.state.peers[p.GetPublicKey()]; ok && samePeerMsg(old, p) {
			continue
		}
		pc, err := peerConfig(p)
		if err != nil {
			return false, err
		}
		set = append(set, pc)
	}
	for _, k := range c.GetRemoves() {
		if _, ok := g.state.peers[k]; ok {
			remove = append(remove, k)
		}
	}
	if err := g.engine.Apply(set, remove); err != nil {
		return false, err
	}
	for _, k := range remove {
		// The generation is kept: a later reinstall must get a new one.
		delete(g.state.peers, k)
	}
	g.noteTouchedLocked(remove...)
	for _, p := range set {
		g.noteTouchedLocked(p.PublicKey)
	}
	upserts := make(map[string]*gw.Peer, len(c.GetUpserts()))
	for _, p := range c.GetUpserts() {
		upserts[p.GetPublicKey()] = p
	}
	g.noteSessionsLocked(upserts)
	for _, k := range remove {
		delete(g.installed, k)
	}
	for _, p := range c.GetUpserts() {
		if _, ok := g.state.peers[p.GetPublicKey()]; !ok {
			g.generation[p.GetPublicKey()]++
		}
		g.state.peers[p.GetPublicKey()] = p
	}
	g.state.revision = c.GetToRevision()
	g.state.iface = c.GetInterface()
	g.afterApplyLocked(len(set), len(remove))
	return true, nil
}

// noteSessionsLocked records when a key got a new session here (it is new,
// or its preshared key changed: an MFA login), before g.state.peers takes
// the new peers. Not while restoring: the saved sessions are not new, and
// their handshakes from before the restart still count.
func (g *Gateway) noteSessionsLocked(next map[string]*gw.Peer) {
	if g.restoring {
		return
	}
	now := time.Now()
	for k, p := range next {
		if old, ok := g.state.peers[k]; !ok || old.GetPresharedKey() != p.GetPresharedKey() {
			g.installed[k] = now
		}
	}
}

// noteInstalledLocked starts a new generation for every peer newly installed
// on the device. Removed peers keep their generation, so a reinstall (whose
// counters restart) never reuses the generation of the previous install.
func (g *Gateway) noteInstalledLocked(current []wgengine.PeerState, set []wgengine.PeerConfig) {
	had := make(map[string]bool, len(current))
	for _, p := range current {
		had[p.PublicKey] = true
	}
	for _, p := range set {
		if !had[p.PublicKey] {
			g.generation[p.PublicKey]++
		}
	}
}

func (g *Gateway) afterApplyLocked(set, removed int) {
	g.metrics.applies.Inc()
	g.metrics.peers.Set(float64(len(g.state.peers)))
	g.metrics.revision.Set(float64(g.state.revision))
	g.lastApply = time.Now()
	if set > 0 || removed > 0 {
		g.log.Info("config applied", "revision", g.state.revision, "peers", len(g.state.peers), "set", set, "removed", removed)
	} else {
		g.log.Debug("config applied", "revision", g.state.revision, "peers", len(g.state.peers))
	}
	g.setMemoryLimitLocked()
	g.signalPersistLocked()
}

// signalPersistLocked asks the persist loop to write. Coalesced: one pending
// signal is enough, and applying (under g.mu) must never wait for the
// persist loop, which may be pausing or gone.
func (g *Gateway) signalPersistLocked() {
	select {
	case g.persistDirty <- struct{}{}:
	default:
	}
}

// setMemoryLimitLocked bounds wireguard-go's buffer pools (they grow to
// hundreds of MB under load) while leaving room for ~25 KB per peer, unless
// the operator set GOMEMLIMIT.
func (g *Gateway) setMemoryLimitLocked() {
	if g.memLimitFromEnv || g.engine == nil || g.engine.Kind() != "userspace" {
		return
	}
	debug.SetMemoryLimit(160<<20 + int64(len(g.state.peers))*40<<10)
}

// configureLocked creates the engine on first use and applies interface
// settings; an equal interface is left alone.
func (g *Gateway) configureLocked(iface *gw.Interface) error {
	if iface == nil {
		return errors.New("config without interface")
	}
	in := wgengine.Interface{Name: g.cfg.Interface, PrivateKey: iface.GetPrivateKey(), ListenPort: int(iface.GetListenPort()),
		FwMark: int(iface.GetFwmark()), MTU: int(iface.GetMtu())}
	for _, a := range iface.GetAddresses() {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("interface address %q: %w", a, err)
		}
		in.Addresses = append(in.Addresses, p)
	}
	created := false
	if g.engine == nil {
		g.runHook("pre-up", g.cfg.PreUp)
		e, err := g.newEngine(in.MTU)
		if err != nil {
			return err
		}
		// The role applies from the first Configure: a standby's device
		// never comes up, an active one in active-passive mode takes over
		// (the role loop initiates once the peers are applied).
		role := g.roles.get()
		if role.Role != RoleActive {
			if err := e.SetActive(false); err != nil {
				_ = e.Close()
				return fmt.Errorf("start the interface as standby: %w", err)
			}
		}
		g.engine = e
		g.engineStandby = role.Role != RoleActive
		if !g.engineStandby {
			g.activatedAt = time.Now()
			// A lone gateway initiates only when it comes back with a saved
			// configuration (a restart), and only if allowed.
			g.initiatePending = role.HA || (g.restoring && g.cfg.HandshakeOnStart)
			g.kickRole()
		}
		created = true
	}
	if g.state.iface == nil || !sameInterface(g.state.iface, iface) || created {
		if err := g.engine.Configure(in); err != nil {
			return err
		}
	}
	if created {
		if g.cfg.Masquerade {
			m := newMasquerade(g.cfg.Interface)
			if err := m.install(); err != nil {
				return err
			}
			g.masq = m
		}
		g.runHook("post-up", g.cfg.PostUp)
		g.log.Info("interface up", "interface", g.cfg.Interface, "backend", g.engine.Kind(), "listen_port", in.ListenPort)
	}
	return nil
}

func (g *Gateway) newEngine(mtu int) (wgengine.Engine, error) {
	if g.cfg.NewEngine != nil {
		return g.cfg.NewEngine(mtu)
	}
	opts := wgengine.UserspaceOptions{UAPI: g.cfg.UAPI}
	// Behind a floating IP, replies must leave from the floating IP:
	// wireguard-go's default bind loses the sticky source with UDP GRO, and
	// clients then roam to the node's own address and never follow a
	// failover. wgbind answers from the address each packet came to; it
	// gives up GSO/GRO, so it is used only where it is needed.
	if len(g.cfg.FloatingIPs) > 0 {
		opts.Bind = wgbind.New()
	}
	switch g.cfg.Backend {
	case "kernel":
		return wgengine.NewKernel(g.cfg.Interface)
	case "userspace":
		return wgengine.NewUserspaceWith(g.cfg.Interface, mtu, opts, g.log)
	}
	k, err := wgengine.NewKernel(g.cfg.Interface)
	if err == nil {
		return k, nil
	}
	g.log.Info("kernel WireGuard unavailable, using embedded wireguard-go", "reason", err)
	return wgengine.NewUserspaceWith(g.cfg.Interface, mtu, opts, g.log)
}

func (g *Gateway) runHook(name, command string) {
	if command == "" {
		return
	}
	command = strings.ReplaceAll(command, "%i", g.cfg.Interface)
	out, err := exec.Command("/bin/sh", "-c", command).CombinedOutput()
	if err != nil {
		g.log.Error("hook failed", "hook", name, "err", err, "output", strings.TrimSpace(string(out)))
		return
	}
	g.log.Info("hook ran", "hook", name)
}

func sameInterface(a, b *gw.Interface) bool {
	return a.GetPrivateKey() == b.GetPrivateKey() && a.GetListenPort() == b.GetListenPort() && a.GetMtu() == b.GetMtu() &&
		a.GetFwmark() == b.GetFwmark() && strings.Join(a.GetAddresses(), ",") == strings.Join(b.GetAddresses(), ",")
}

func samePeerMsg(a, b *gw.Peer) bool {
	return a.GetPresharedKey() == b.GetPresharedKey() && a.GetKeepalive() == b.GetKeepalive() &&
		strings.Join(a.GetAllowedIps(), ",") == strings.Join(b.GetAllowedIps(), ",") && a.GetExpiresAt() == b.GetExpiresAt()
}

func peerConfig(p *gw.Peer) (wgengine.PeerConfig, error) {
	pc := wgengine.PeerConfig{PublicKey: p.GetPublicKey(), PresharedKey: p.GetPresharedKey(), Keepalive: int(p.GetKeepalive())}
	for _, a := range p.GetAllowedIps() {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			return pc, fmt.Errorf("peer allowed ip %q: %w", a, err)
		}
		pc.AllowedIPs = append(pc.AllowedIPs, pfx)
	}
	return pc, nil
}
