package adoption

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// Stream is either side of the Adopt RPC.
type Stream interface {
	Send(*gw.AdoptMessage) error
	Recv() (*gw.AdoptMessage, error)
}

// Adoptee is the component side: it holds the identity, picks the TLS
// configuration for each connection and runs the Adopt exchange.
type Adoptee struct {
	role    string // pki.RoleGateway or pki.RoleProxy
	dataDir string
	log     *slog.Logger

	mu        sync.RWMutex
	ident     *Identity
	token     string
	unadopted tls.Certificate
	inUse     bool
}

// NewAdoptee loads the identity from dataDir, if any. token is the join
// token the process was started with (may be empty).
func NewAdoptee(role, dataDir, token string, log *slog.Logger) (*Adoptee, error) {
	ident, err := loadIdentity(dataDir)
	if err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	der, err := pki.SelfSigned(key)
	if err != nil {
		return nil, err
	}
	return &Adoptee{role: role, dataDir: dataDir, log: log, ident: ident, token: token, unadopted: pki.TLSCertificate(der, key)}, nil
}

// ID is the adopted identity's id, or "" when not adopted.
func (a *Adoptee) ID() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.ident == nil {
		return ""
	}
	return a.ident.ID
}

// adoptableLocked: a join token is configured that has not adopted this
// component yet (first adoption, or re-adoption after core issued a new one).
func (a *Adoptee) adoptableLocked() bool {
	return a.token != "" && (a.ident == nil || a.ident.TokenHash != tokenHash(a.token))
}

// ServerTLS is the TLS configuration of the control port.
func (a *Adoptee) ServerTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: a.configForClient}
}

func (a *Adoptee) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.ident == nil {
		// Not adopted: the certificate is self-signed; core authenticates
		// this component through the join token inside the Adopt exchange.
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{a.unadopted}, NextProtos: []string{"h2"}}, nil
	}
	id := a.ident
	// Mutual TLS with a core identity is required, except while a new join
	// token may re-adopt the component; control RPCs still demand it.
	clientAuth := tls.RequireAndVerifyClientCert
	if a.adoptableLocked() {
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

// VerifyCore checks that an RPC comes over mutual TLS from a core identity
// of the CA this component was adopted by, and returns the core's id.
func (a *Adoptee) VerifyCore(ctx context.Context) (string, error) {
	a.mu.RLock()
	id := a.ident
	a.mu.RUnlock()
	if id == nil {
		return "", status.Error(codes.FailedPrecondition, a.role+" is not adopted")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", status.Error(codes.Unauthenticated, "a core client certificate is required")
	}
	raw := make([][]byte, len(info.State.PeerCertificates))
	for i, c := range info.State.PeerCertificates {
		raw[i] = c.Raw
	}
	coreID, err := pki.VerifyChain(raw, id.pool, pki.RoleCore, "")
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	return coreID, nil
}

// Serve runs the component side of the Adopt RPC.
func (a *Adoptee) Serve(stream Stream) error {
	err := a.serve(stream)
	if err != nil {
		a.log.Warn("adoption attempt failed", "err", err)
	}
	return err
}

func (a *Adoptee) serve(stream Stream) error {
	a.mu.Lock()
	switch {
	case a.token == "":
		a.mu.Unlock()
		return status.Error(codes.FailedPrecondition, a.role+" has no join token")
	case !a.adoptableLocked():
		a.mu.Unlock()
		return status.Error(codes.FailedPrecondition, a.role+" is already adopted with this join token; a used token cannot adopt again")
	case a.inUse:
		a.mu.Unlock()
		return status.Error(codes.Aborted, "another adoption is in progress")
	}
	a.inUse = true
	token := a.token
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.inUse = false; a.mu.Unlock() }()

	exp, err := pki.JoinTokenExpiry(token)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if time.Now().After(exp) {
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
	id := begin.GetGatewayId()
	idKey, err := pki.NewKey()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: a.role + "/" + id}}, idKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	mac := pki.AdoptMAC(key, a.role, id, begin.GetCoreNonce(), nonce, csr)
	if err := stream.Send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Offer{Offer: &gw.AdoptOffer{GatewayNonce: nonce, CsrDer: csr, Mac: mac}}}); err != nil {
		return err
	}
	if msg, err = stream.Recv(); err != nil {
		return err
	}
	grant := msg.GetGrant()
	if grant == nil {
		return status.Error(codes.InvalidArgument, "expected AdoptGrant")
	}
	want := pki.AdoptMAC(key, "core", id, begin.GetCoreNonce(), nonce, grant.GetCertDer(), grant.GetCaDer())
	if !hmac.Equal(want, grant.GetMac()) {
		return status.Error(codes.PermissionDenied, "adoption proof does not match the join token")
	}
	if err := checkGrant(grant, a.role, id, idKey.Public()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(idKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	ident := &Identity{ID: id, CertDER: grant.GetCertDer(), CADER: grant.GetCaDer(), KeyDER: keyDER, TokenHash: tokenHash(token)}
	if err := ident.init(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := ident.save(a.dataDir); err != nil {
		return status.Error(codes.Internal, fmt.Sprintf("save identity: %v", err))
	}
	a.mu.Lock()
	a.ident = ident
	a.mu.Unlock()
	a.log.Info(a.role+" adopted by core", a.role+"_id", id)
	return stream.Send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Done{Done: &gw.AdoptDone{}}})
}

func checkGrant(grant *gw.AdoptGrant, role, id string, pub crypto.PublicKey) error {
	pool, err := pki.Pool(grant.GetCaDer())
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	if _, err := pki.VerifyChain([][]byte{grant.GetCertDer()}, pool, role, id); err != nil {
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

// Forget drops the identity (core revoked the component) and the join
// token; a new token is needed to adopt it again.
func (a *Adoptee) Forget() error {
	a.mu.Lock()
	a.ident = nil
	a.token = ""
	a.mu.Unlock()
	return RemoveFile(a.dataDir, IdentityFile)
}

// CAPublicKey is the public key of the CA this component was adopted by
// (core signs gateway configurations with it), or nil when not adopted.
func (a *Adoptee) CAPublicKey() crypto.PublicKey {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.ident == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(a.ident.CADER)
	if err != nil {
		return nil
	}
	return cert.PublicKey
}
