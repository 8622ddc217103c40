// Package pki is ward's private certificate authority. Core creates the CA at
// first start and keeps it in the database so every replica can issue
// certificates; the control links between core and gateways (and proxies)
// are mutual TLS rooted in it. Identities are URI SANs:
// ward://core/<core id>, ward://gateway/<gateway id>.
package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// Roles named in certificate URIs.
const (
	RoleCore    = "core"
	RoleGateway = "gateway"
	RoleProxy   = "proxy"
)

// CA is the instance certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	DER  []byte
}

// EnsureCA loads the CA from the database, creating it on first use.
// Replicas racing at first start agree on one CA.
func EnsureCA(ctx context.Context, db *store.DB) (*CA, error) {
	certPEM, keyPEM, err := newCAPEM()
	if err != nil {
		return nil, err
	}
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		for k, v := range map[string]string{"ca_cert": certPEM, "ca_key": keyPEM} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO instance (key, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, k, v, now); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = 'ca_cert'`).Scan(&certPEM); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = 'ca_key'`).Scan(&keyPEM)
	})
	if err != nil {
		return nil, fmt.Errorf("ensure CA: %w", err)
	}
	return ParseCA([]byte(certPEM), []byte(keyPEM))
}

func newCAPEM() (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "ward instance CA", Organization: []string{"ward"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), nil
}

// ParseCA reads a CA from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("pki: CA is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CA cert: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: CA key cannot sign")
	}
	return &CA{Cert: cert, Key: signer, DER: cb.Bytes}, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// IdentityURI names a component in a certificate.
func IdentityURI(role, id string) *url.URL {
	return &url.URL{Scheme: "ward", Host: role, Path: "/" + id}
}

// Identity extracts (role, id) from a certificate issued by this CA.
func Identity(cert *x509.Certificate) (role, id string, ok bool) {
	for _, u := range cert.URIs {
		if u.Scheme == "ward" && u.Host != "" && len(u.Path) > 1 {
			return u.Host, strings.TrimPrefix(u.Path, "/"), true
		}
	}
	return "", "", false
}

// Issue signs a certificate for pub with the given identity, usable as TLS
// server and client certificate.
func (ca *CA) Issue(pub crypto.PublicKey, role, id string, validity time.Duration) (*x509.Certificate, []byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: role + "/" + id, Organization: []string{"ward"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{IdentityURI(role, id)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s certificate: %w", role, err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, der, err
}

// SignCSR issues a certificate for the key in a CSR after checking its
// self-signature.
func (ca *CA) SignCSR(csrDER []byte, role, id string, validity time.Duration) (*x509.Certificate, []byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("pki: CSR signature: %w", err)
	}
	return ca.Issue(csr.PublicKey, role, id, validity)
}

// Pool returns a pool holding only this CA.
func Pool(caDER []byte) (*x509.CertPool, error) {
	cert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p, nil
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// TLSCertificate bundles a leaf and its key for crypto/tls.
func TLSCertificate(der []byte, key crypto.Signer) tls.Certificate {
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// SelfSigned returns a throwaway self-signed certificate, used by an
// unadopted gateway whose identity core checks through the join token.
func SelfSigned(key crypto.Signer) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "unadopted ward gateway"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// VerifyChain checks that the leaf chains to the pool and names the role
// (and, when wantID is set, the id). It returns the id.
func VerifyChain(rawCerts [][]byte, pool *x509.CertPool, role, wantID string) (string, error) {
	if len(rawCerts) == 0 {
		return "", errors.New("pki: no certificate presented")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("pki: parse peer certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, raw := range rawCerts[1:] {
		if c, err := x509.ParseCertificate(raw); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", fmt.Errorf("pki: peer certificate not issued by this instance: %w", err)
	}
	gotRole, id, ok := Identity(leaf)
	if !ok || gotRole != role {
		return "", fmt.Errorf("pki: peer certificate is not a %s identity", role)
	}
	if wantID != "" && id != wantID {
		return "", fmt.Errorf("pki: peer is %s %s, expected %s", role, id, wantID)
	}
	return id, nil
}

// Join tokens look like "wgj1.<unix expiry>.<secret>". Both sides derive the
// HMAC key from the whole token; the expiry lets the gateway refuse an old
// token on its own.

// JoinKey derives the adoption HMAC key from a join token.
func JoinKey(token string) []byte {
	sum := sha256.Sum256([]byte("ward-join-v1\x00" + token))
	return sum[:]
}

// JoinTokenExpiry parses the expiry out of a token.
func JoinTokenExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "wgj1" || len(parts[2]) < 20 {
		return time.Time{}, errors.New("malformed join token")
	}
	sec, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return time.Time{}, errors.New("malformed join token")
	}
	return time.Unix(sec, 0), nil
}

// AdoptMAC is the HMAC one side sends to prove it holds the join token.
func AdoptMAC(key []byte, role, gatewayID string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ward-adopt-" + role + "\x00" + gatewayID + "\x00"))
	for _, p := range parts {
		m.Write([]byte(strconv.Itoa(len(p)) + ":"))
		m.Write(p)
	}
	return m.Sum(nil)
}

// IssueCoreCertificate issues a core replica's client certificate for the
// control links (a fresh key per process start; replicas share the CA).
func IssueCoreCertificate(ca *CA, coreID string) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	_, der, err := ca.Issue(key.Public(), RoleCore, coreID, 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, err
	}
	return TLSCertificate(der, key), nil
}
