package gwlink

import (
	"crypto"
	"time"

	"github.com/wardvpn/ward/internal/gwsign"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// signEvery bounds how often a stream signs after acks: signing digests the
// whole configuration (milliseconds at 10,000 peers), and a burst of changes
// needs only its last revision signed.
const signEvery = 250 * time.Millisecond

// configMirror follows what one stream sent the gateway (the snapshot, then
// every change), so core can sign the gateway's whole configuration at the
// acknowledged revision without reading it again. Only a stream that sent
// a snapshot knows the whole configuration: a stream that resumed with
// changes (the gateway already had an earlier revision) signs nothing until
// it sends one.
type configMirror struct {
	complete bool
	revision uint64
	iface    *gw.Interface
	peers    map[string]*gw.Peer
	signed   uint64
}

func newConfigMirror() *configMirror { return &configMirror{peers: map[string]*gw.Peer{}} }

func (m *configMirror) apply(msg *gw.CoreMessage) {
	switch u := msg.Msg.(type) {
	case *gw.CoreMessage_Snapshot:
		m.complete, m.revision, m.iface = true, u.Snapshot.GetRevision(), u.Snapshot.GetInterface()
		m.peers = make(map[string]*gw.Peer, len(u.Snapshot.GetPeers()))
		for _, p := range u.Snapshot.GetPeers() {
			m.peers[p.GetPublicKey()] = p
		}
	case *gw.CoreMessage_Changes:
		if !m.complete || u.Changes.GetFromRevision() > m.revision {
			m.complete = false
			return
		}
		m.revision, m.iface = u.Changes.GetToRevision(), u.Changes.GetInterface()
		for _, k := range u.Changes.GetRemoves() {
			delete(m.peers, k)
		}
		for _, p := range u.Changes.GetUpserts() {
			m.peers[p.GetPublicKey()] = p
		}
	}
}

// signJob is a configuration to sign, copied out of the mirror so the
// digest (milliseconds at 10,000 peers) runs off the stream's loop.
type signJob struct {
	revision uint64
	iface    *gw.Interface
	peers    []*gw.Peer
}

// job returns the configuration at revision to sign, when the mirror holds
// exactly that revision and it was not handed out for signing yet.
func (m *configMirror) job(revision uint64) (signJob, bool) {
	if !m.complete || m.revision != revision || m.signed == revision || revision == 0 {
		return signJob{}, false
	}
	m.signed = revision
	peers := make([]*gw.Peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	return signJob{revision: revision, iface: m.iface, peers: peers}, true
}

// sign signs the job with core's CA key.
func (j signJob) sign(key crypto.Signer) (*gw.CoreMessage, error) {
	d, err := gwsign.Digest(j.revision, j.iface, j.peers)
	if err != nil {
		return nil, err
	}
	sig, err := gwsign.Sign(key, d)
	if err != nil {
		return nil, err
	}
	return &gw.CoreMessage{Msg: &gw.CoreMessage_ConfigSignature{ConfigSignature: &gw.ConfigSignature{Revision: j.revision, Signature: sig}}}, nil
}

// queueSign hands a job to the signer, replacing one still waiting (only
// the newest revision matters).
func queueSign(jobs chan signJob, j signJob) {
	for {
		select {
		case jobs <- j:
			return
		default:
		}
		select {
		case <-jobs:
		default:
		}
	}
}
