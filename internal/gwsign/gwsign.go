// Package gwsign signs a gateway's whole configuration at a revision with
// core's CA key, so a gateway restarting while no core is reachable
// restores only a configuration core issued: a peer written into the file
// on the gateway's disk by anyone else is refused.
//
// The digest covers a normalised copy of what the gateway persists (the
// interface and every peer, peers sorted by key and allowed IPs sorted), in
// deterministic protobuf encoding, so fields added to the protocol later are
// covered without changing this package.
package gwsign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// domain separates these signatures from anything else the CA key signs
// (certificates use their own structure, but be explicit).
const domain = "ward gateway configuration v1\x00"

// ErrBadSignature means the signature does not match the configuration.
var ErrBadSignature = errors.New("gwsign: configuration signature does not verify")

// Digest is the SHA-256 of the canonical form of a gateway configuration.
func Digest(revision uint64, iface *gw.Interface, peers []*gw.Peer) ([32]byte, error) {
	norm := &gw.Snapshot{Revision: revision, Interface: iface}
	if iface != nil && !slices.IsSorted(iface.GetAddresses()) {
		c := proto.Clone(iface).(*gw.Interface)
		c.Addresses = sortedCopy(c.Addresses)
		norm.Interface = c
	}
	// Copies only where the order must change (core sends allowed IPs
	// sorted already): this runs over every peer of the location.
	norm.Peers = make([]*gw.Peer, len(peers))
	for i, p := range peers {
		if !slices.IsSorted(p.GetAllowedIps()) {
			c := proto.Clone(p).(*gw.Peer)
			c.AllowedIps = sortedCopy(c.AllowedIps)
			p = c
		}
		norm.Peers[i] = p
	}
	slices.SortFunc(norm.Peers, func(a, b *gw.Peer) int { return strings.Compare(a.GetPublicKey(), b.GetPublicKey()) })
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(norm)
	if err != nil {
		return [32]byte{}, fmt.Errorf("gwsign: encode configuration: %w", err)
	}
	return sha256.Sum256(append([]byte(domain), raw...)), nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// Sign signs a digest with core's CA key.
func Sign(key crypto.Signer, digest [32]byte) ([]byte, error) {
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("gwsign: sign: %w", err)
	}
	return sig, nil
}

// Verify checks a signature made by Sign against the CA's public key.
func Verify(pub crypto.PublicKey, digest [32]byte, sig []byte) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("gwsign: unsupported CA key type %T", pub)
	}
	if !ecdsa.VerifyASN1(k, digest[:], sig) {
		return ErrBadSignature
	}
	return nil
}
