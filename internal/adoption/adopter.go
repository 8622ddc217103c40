package adoption

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// AdoptionTLS is core's TLS for the Adopt RPC: the component's certificate
// cannot be verified yet; the HMAC over the join token authenticates it.
func AdoptionTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
}

// Adopt runs core's side of the exchange on an open Adopt stream. complete
// records the issued serial and consumes the join token; it runs after the
// component confirmed, because the component refuses the same token again.
func Adopt(ctx context.Context, stream Stream, ca *pki.CA, role, id string, joinKey []byte, complete func(serial string) error) (string, error) {
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	// A stream the component already ended (it refused at once, e.g. it
	// has no join token) fails Send with io.EOF; the component's reason is
	// the status Recv returns.
	send := func(m *gw.AdoptMessage) error {
		err := stream.Send(m)
		if errors.Is(err, io.EOF) {
			if _, rerr := stream.Recv(); rerr != nil {
				return rerr
			}
		}
		return err
	}
	if err := send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Begin{Begin: &gw.AdoptBegin{GatewayId: id, CoreNonce: nonce}}}); err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	msg, err := stream.Recv()
	if err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	offer := msg.GetOffer()
	if offer == nil {
		return "", errors.New("adopt: no certificate request offered")
	}
	want := pki.AdoptMAC(joinKey, role, id, nonce, offer.GetGatewayNonce(), offer.GetCsrDer())
	if !hmac.Equal(want, offer.GetMac()) {
		return "", fmt.Errorf("adopt: the %s does not hold this %s's join token", role, role)
	}
	cert, der, err := ca.SignCSR(offer.GetCsrDer(), role, id, 5*365*24*time.Hour)
	if err != nil {
		return "", err
	}
	serial := cert.SerialNumber.Text(16)
	mac := pki.AdoptMAC(joinKey, "core", id, nonce, offer.GetGatewayNonce(), der, ca.DER)
	if err := send(&gw.AdoptMessage{Step: &gw.AdoptMessage_Grant{Grant: &gw.AdoptGrant{CertDer: der, CaDer: ca.DER, Mac: mac}}}); err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	if msg, err = stream.Recv(); err != nil || msg.GetDone() == nil {
		return "", fmt.Errorf("adopt: the %s did not confirm: %v", role, err)
	}
	if err := complete(serial); err != nil {
		return "", fmt.Errorf("adopt: %w", err)
	}
	return serial, nil
}

// ClientTLS is core's mutual TLS towards an adopted component: core's
// certificate, and the component must present exactly the pinned serial of
// the given identity from this CA.
func ClientTLS(ca *pki.CA, coreCert tls.Certificate, role, id, serial string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{coreCert},
		InsecureSkipVerify: true, // the chain, identity and pinned serial are checked below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if _, err := pki.VerifyChain(raw, pool, role, id); err != nil {
				return err
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if leaf.SerialNumber.Text(16) != serial {
				return fmt.Errorf("the %s presents a certificate that core has revoked (a new join token was issued)", role)
			}
			return nil
		},
	}
}
