package gateway

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// tokenHash identifies the join token an identity came from.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte("ward-join-used\x00" + token))
	return hex.EncodeToString(sum[:])
}

// adoptableLocked: a join token is configured that has not adopted this
// gateway yet (first adoption, or re-adoption after core issued a new one).
func (g *Gateway) adoptableLocked() bool {
	return g.cfg.JoinToken != "" && (g.ident == nil || g.ident.TokenHash != tokenHash(g.cfg.JoinToken))
}

func (g *Gateway) tlsConfigForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	g.tlsMu.RLock()
	defer g.tlsMu.RUnlock()
	if g.ident == nil {
		// Not adopted: the certificate is self-signed; core authenticates
		// this gateway through the join token inside the Adopt exchange.
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{g.unadopted}, NextProtos: []string{"h2"}}, nil
	}
	id := g.ident
	// Mutual TLS with a core identity is required, except while a new join
	// token may re-adopt the gateway; Control still demands the identity.
	clientAuth := tls.RequireAndVerifyClientCert
	if g.adoptableLocked() {
		clientAuth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pki.TLSCertificate(id.CertDER, id.key)},
		ClientAuth:   clientAuth,
		ClientCAs:    id.pool,
		NextProtos:   []string{"h2"},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil // only reachable in re-adoption mode
			}
			_, err := pki.VerifyChain(raw, id.pool, pki.RoleCore, "")
			return err
		},
	}, nil
}

// Adopt implements the adoption exchange (see the proto for the protocol).
func (g *Gateway) Adopt(stream gw.Gateway_AdoptServer) error {
	err := g.adopt(stream)
	if err != nil {
		g.log.Warn("adoption attempt failed", "err", err)
	}
	return err
}

func (g *Gateway) adopt(stream gw.Gateway_AdoptServer) error {
	g.tlsMu.Lock()
	switch {
	case g.cfg.JoinToken == "":
		g.tlsMu.Unlock()
		return status.Error(codes.FailedPrecondition, "gateway has no join token")
	case !g.adoptableLocked():
		g.tlsMu.Unlock()
		return status.Error(codes.FailedPrecondition, "gateway is already adopted with this join token; a used token cannot adopt again")
	case g.adoptInUse:
		g.tlsMu.Unlock()
		return status.Error(codes.Aborted, "another adoption is in progress")
	}
	g.adoptInUse = true
	g.tlsMu.Unlock()
	defer func() { g.tlsMu.Lock(); g.adoptInUse = false; g.tlsMu.Unlock() }()

	token := g.cfg.JoinToken
	exp, err := pki.JoinTokenExpiry(token)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if time.Now().After(exp) {
		g.log.Warn("adoption refused: the join token has expired", "expired_at", exp)
		return status.Error(codes.PermissionDenied, "join token expired")
	}
	key := pki.JoinKey(token)
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	begin := msg.GetBegin()
	if begin == nil || begin.GetGatewayId() == "" || len(begin.GetCoreNonce()) < 16 {
		return status.Error(codes.InvalidArgument, "expected AdoptBegin")
	}
	idKey, err := pki.NewKey()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gateway/" + begin.GetGatewayId()}}, idKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	mac := pki.AdoptMAC(key, "gateway", begin.GetGatewayId(), begin.GetCoreNonce(), nonce, csr)
	if err := stream.Send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Offer{Offer: &gw.AdoptOffer{GatewayNonce: nonce, CsrDer: csr, Mac: mac}}}); err != nil {
		return err
	}
	msg, err = stream.Recv()
	if err != nil {
		return err
	}
	grant := msg.GetGrant()
	if grant == nil {
		return status.Error(codes.InvalidArgument, "expected AdoptGrant")
	}
	want := pki.AdoptMAC(key, "core", begin.GetGatewayId(), begin.GetCoreNonce(), nonce, grant.GetCertDer(), grant.GetCaDer())
	if !hmac.Equal(want, grant.GetMac()) {
		g.log.Warn("adoption refused: the peer does not know the join token")
		return status.Error(codes.PermissionDenied, "adoption proof does not match the join token")
	}
	if err := checkGrant(grant, begin.GetGatewayId(), idKey.Public()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(idKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	id := &identity{GatewayID: begin.GetGatewayId(), CertDER: grant.GetCertDer(), CADER: grant.GetCaDer(), KeyDER: keyDER, TokenHash: tokenHash(token)}
	if err := id.init(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := id.save(g.cfg.DataDir); err != nil {
		return status.Error(codes.Internal, fmt.Sprintf("save identity: %v", err))
	}
	g.tlsMu.Lock()
	g.ident = id
	g.tlsMu.Unlock()
	g.log.Info("gateway adopted by core", "gateway_id", id.GatewayID)
	return stream.Send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Done{Done: &gw.AdoptDone{}}})
}

func checkGrant(grant *gw.AdoptGrant, gatewayID string, pub any) error {
	pool, err := pki.Pool(grant.GetCaDer())
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	if _, err := pki.VerifyChain([][]byte{grant.GetCertDer()}, pool, pki.RoleGateway, gatewayID); err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(grant.GetCertDer())
	if err != nil {
		return err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if eq, ok := pub.(equaler); !ok || !eq.Equal(cert.PublicKey) {
		return errors.New("certificate is not for the requested key")
	}
	return nil
}

// forget drops the adoption (core revoked this gateway) and stops serving:
// a revoked gateway must not keep the location's key and peers in use.
func (g *Gateway) forget(reason string) {
	g.tlsMu.Lock()
	g.ident = nil
	g.cfg.JoinToken = ""
	g.tlsMu.Unlock()
	g.mu.Lock()
	if g.engine != nil {
		g.runHook("pre-down", g.cfg.PreDown)
		_ = g.engine.Close()
		g.engine = nil
		g.removeMasqueradeLocked()
		g.runHook("post-down", g.cfg.PostDown)
	}
	g.state = applied{peers: map[string]*gw.Peer{}}
	g.mu.Unlock()
	for _, f := range []string{identityFile, configFile} {
		if err := removeFile(g.cfg.DataDir, f); err != nil {
			g.log.Error("could not remove file of the revoked adoption", "file", f, "err", err)
		}
	}
	g.log.Warn("core revoked this gateway: adoption, configuration and interface removed", "reason", reason)
}
