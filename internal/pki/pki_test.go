package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/pki"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

func TestEnsureCA(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ca, err := pki.EnsureCA(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Fatalf("CA certificate is not a path-length-0 CA: %+v", ca.Cert)
		}
		if !bytes.Equal(ca.Cert.Raw, ca.DER) {
			t.Fatal("CA DER and parsed certificate differ")
		}
		if err := ca.Cert.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("CA is not self-signed: %v", err)
		}
		if ca.Cert.NotAfter.Before(time.Now().AddDate(19, 0, 0)) {
			t.Fatalf("CA expires too early: %v", ca.Cert.NotAfter)
		}

		// Calling again (another replica, a restart) returns the same CA.
		again, err := pki.EnsureCA(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.DER, ca.DER) {
			t.Fatal("second EnsureCA returned another CA certificate")
		}
		if !ca.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(again.Key.Public()) {
			t.Fatal("second EnsureCA returned another CA key")
		}
		if !ca.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ca.Cert.PublicKey) {
			t.Fatal("CA key does not match the CA certificate")
		}
		// A certificate issued by one copy verifies against the other.
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		_, der, err := again.Issue(key.Public(), pki.RoleCore, "core-a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pki.Pool(ca.DER)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleCore, "core-a"); err != nil || id != "core-a" {
			t.Fatalf("verify across copies: %q %v", id, err)
		}
	})
}

func TestEnsureCAConcurrent(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 6
		var wg sync.WaitGroup
		ders := make([][]byte, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				ca, err := pki.EnsureCA(ctx, db)
				errs[i] = err
				if err == nil {
					ders[i] = ca.DER
				}
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if !bytes.Equal(ders[i], ders[0]) {
				t.Fatalf("replica %d got another CA than replica 0", i)
			}
		}
		var rows int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM instance WHERE key IN ('ca_cert', 'ca_key')`).Scan(&rows); err != nil || rows != 2 {
			t.Fatalf("instance rows for the CA: %d %v", rows, err)
		}
		later, err := pki.EnsureCA(ctx, db)
		if err != nil || !bytes.Equal(later.DER, ders[0]) {
			t.Fatalf("EnsureCA after the race: %v", err)
		}
	})
}

// testCA returns a fresh CA from a fresh SQLite database.
func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.EnsureCA(context.Background(), env.Open(t, store.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueAndVerifyChain(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	if bytes.Equal(ca.DER, other.DER) {
		t.Fatal("two instances share a CA")
	}
	pool, err := pki.Pool(ca.DER)
	if err != nil {
		t.Fatal(err)
	}
	otherPool, err := pki.Pool(other.DER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, der, err := ca.Issue(key.Public(), pki.RoleGateway, "gw-1", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.Raw, der) {
		t.Fatal("Issue returned a certificate that does not match its DER")
	}
	if role, id, ok := pki.Identity(cert); !ok || role != pki.RoleGateway || id != "gw-1" {
		t.Fatalf("Identity = %q %q %v", role, id, ok)
	}
	if got := pki.IdentityURI(pki.RoleGateway, "gw-1").String(); got != "ward://gateway/gw-1" || len(cert.URIs) != 1 || cert.URIs[0].String() != got {
		t.Fatalf("identity URI = %q, certificate URIs %v", got, cert.URIs)
	}
	if cert.IsCA {
		t.Fatal("leaf certificate is a CA")
	}
	hasUsage := func(u x509.ExtKeyUsage) bool {
		for _, x := range cert.ExtKeyUsage {
			if x == u {
				return true
			}
		}
		return false
	}
	if !hasUsage(x509.ExtKeyUsageServerAuth) || !hasUsage(x509.ExtKeyUsageClientAuth) {
		t.Fatalf("leaf usages = %v, want server and client auth", cert.ExtKeyUsage)
	}

	// The right role and id, or any id of the role.
	if id, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleGateway, "gw-1"); err != nil || id != "gw-1" {
		t.Fatalf("verify gateway gw-1: %q %v", id, err)
	}
	if id, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleGateway, ""); err != nil || id != "gw-1" {
		t.Fatalf("verify any gateway: %q %v", id, err)
	}
	// Extra certificates after the leaf are ignored when they are not needed.
	if id, err := pki.VerifyChain([][]byte{der, other.DER, []byte("junk")}, pool, pki.RoleGateway, "gw-1"); err != nil || id != "gw-1" {
		t.Fatalf("verify with extra certificates: %q %v", id, err)
	}

	selfKey, _ := pki.NewKey()
	selfDER, err := pki.SelfSigned(selfKey)
	if err != nil {
		t.Fatal(err)
	}
	_, expiredDER, err := ca.Issue(key.Public(), pki.RoleGateway, "gw-1", -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, otherDER, err := other.Issue(key.Public(), pki.RoleGateway, "gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		certs    [][]byte
		pool     *x509.CertPool
		role, id string
		want     string
	}{
		{"wrong role", [][]byte{der}, pool, pki.RoleCore, "", "not a core identity"},
		{"wrong id", [][]byte{der}, pool, pki.RoleGateway, "gw-2", "expected gw-2"},
		{"another instance's CA", [][]byte{otherDER}, pool, pki.RoleGateway, "gw-1", "not issued by this instance"},
		{"checked against another CA", [][]byte{der}, otherPool, pki.RoleGateway, "gw-1", "not issued by this instance"},
		{"self-signed", [][]byte{selfDER}, pool, pki.RoleGateway, "", "not issued by this instance"},
		{"the CA itself", [][]byte{ca.DER}, pool, pki.RoleGateway, "", "not a gateway identity"},
		{"expired", [][]byte{expiredDER}, pool, pki.RoleGateway, "gw-1", "not issued by this instance"},
		{"nothing", nil, pool, pki.RoleGateway, "", "no certificate"},
		{"garbage", [][]byte{[]byte("not a certificate")}, pool, pki.RoleGateway, "", "parse peer certificate"},
	} {
		id, err := pki.VerifyChain(tc.certs, tc.pool, tc.role, tc.id)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: id %q err %v, want an error containing %q", tc.name, id, err, tc.want)
		}
	}

	// The issued certificate works for mutual TLS with the instance pool.
	tc := pki.TLSCertificate(der, key)
	if tc.Leaf == nil || !bytes.Equal(tc.Leaf.Raw, der) || len(tc.Certificate) != 1 {
		t.Fatalf("TLSCertificate = %+v", tc)
	}
	if _, err := tls.X509KeyPair(pemCert(der), pemKey(t, key)); err != nil {
		t.Fatalf("issued certificate and key do not pair: %v", err)
	}
	if _, err := pki.Pool([]byte("junk")); err == nil {
		t.Fatal("Pool accepted junk")
	}
}

func TestSignCSR(t *testing.T) {
	ca := testCA(t)
	pool, err := pki.Pool(ca.DER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's CSR names itself; the CA decides the identity.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "core/evil"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, der, err := ca.SignCSR(csr, pki.RoleGateway, "gw-7", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("signed certificate is not for the CSR's key")
	}
	if id, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleGateway, "gw-7"); err != nil || id != "gw-7" {
		t.Fatalf("verify signed CSR: %q %v", id, err)
	}
	if _, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleCore, ""); err == nil {
		t.Fatal("gateway certificate accepted as core")
	}
	if _, err := pki.VerifyChain([][]byte{der}, pool, pki.RoleGateway, "gw-8"); err == nil {
		t.Fatal("gw-7 accepted as gw-8")
	}
	if cert.NotAfter.After(time.Now().Add(time.Hour+time.Minute)) || cert.NotAfter.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("validity ends %v, want in about an hour", cert.NotAfter)
	}

	// A CSR whose signature does not match is refused.
	tampered := bytes.Clone(csr)
	tampered[len(tampered)-5] ^= 0xff
	if _, _, err := ca.SignCSR(tampered, pki.RoleGateway, "gw-7", time.Hour); err == nil {
		t.Fatal("tampered CSR signed")
	}
	if _, _, err := ca.SignCSR([]byte("junk"), pki.RoleGateway, "gw-7", time.Hour); err == nil {
		t.Fatal("junk CSR signed")
	}
}

func TestParseCA(t *testing.T) {
	ca := testCA(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pemBlock("PRIVATE KEY", keyDER)
	parsed, err := pki.ParseCA(pemCert(ca.DER), keyPEM)
	if err != nil || !bytes.Equal(parsed.DER, ca.DER) {
		t.Fatalf("ParseCA round trip: %v", err)
	}
	for name, in := range map[string][2][]byte{
		"no PEM":       {[]byte("x"), keyPEM},
		"no key PEM":   {pemCert(ca.DER), []byte("x")},
		"bad cert":     {pemBlock("CERTIFICATE", []byte("x")), keyPEM},
		"bad key":      {pemCert(ca.DER), pemBlock("PRIVATE KEY", []byte("x"))},
		"swapped PEMs": {keyPEM, pemCert(ca.DER)},
	} {
		if _, err := pki.ParseCA(in[0], in[1]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJoinTokens(t *testing.T) {
	secret := strings.Repeat("A", 43)
	exp, err := pki.JoinTokenExpiry("wgj1.1700000000." + secret)
	if err != nil || !exp.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("expiry = %v, %v", exp, err)
	}
	if exp, err := pki.JoinTokenExpiry("wgj1.0." + strings.Repeat("x", 20)); err != nil || exp.Unix() != 0 {
		t.Fatalf("minimal token: %v %v", exp, err)
	}
	for _, bad := range []string{
		"",
		"wgj1",
		"wgj1.1700000000",
		"wgj2.1700000000." + secret,
		"WGJ1.1700000000." + secret,
		"wgj1.soon." + secret,
		"wgj1.." + secret,
		"wgj1.1700000000.short",
		"wgj1.1700000000." + strings.Repeat("x", 19),
		"wgj1.1700000000." + secret + ".extra",
		"wgj1.99999999999999999999." + secret,
	} {
		if _, err := pki.JoinTokenExpiry(bad); err == nil {
			t.Errorf("JoinTokenExpiry(%q) accepted", bad)
		}
	}

	k1 := pki.JoinKey("wgj1.1700000000." + secret)
	if len(k1) != 32 || !bytes.Equal(k1, pki.JoinKey("wgj1.1700000000."+secret)) {
		t.Fatal("JoinKey is not a deterministic 32-byte key")
	}
	if bytes.Equal(k1, pki.JoinKey("wgj1.1700000001."+secret)) {
		t.Fatal("JoinKey ignores the expiry")
	}
}

func TestAdoptMAC(t *testing.T) {
	key := pki.JoinKey("wgj1.1700000000." + strings.Repeat("s", 43))
	coreNonce, gwNonce := []byte("core-nonce-0123456789"), []byte("gateway-nonce-987654")
	base := pki.AdoptMAC(key, "gateway", "gw-1", coreNonce, gwNonce)
	if len(base) != 32 || !bytes.Equal(base, pki.AdoptMAC(key, "gateway", "gw-1", coreNonce, gwNonce)) {
		t.Fatal("AdoptMAC is not deterministic")
	}
	differs := map[string][]byte{
		"role":          pki.AdoptMAC(key, "core", "gw-1", coreNonce, gwNonce),
		"gateway id":    pki.AdoptMAC(key, "gateway", "gw-2", coreNonce, gwNonce),
		"core nonce":    pki.AdoptMAC(key, "gateway", "gw-1", []byte("core-nonce-0123456788"), gwNonce),
		"gateway nonce": pki.AdoptMAC(key, "gateway", "gw-1", coreNonce, []byte("gateway-nonce-987655")),
		"key":           pki.AdoptMAC(pki.JoinKey("wgj1.1700000000."+strings.Repeat("t", 43)), "gateway", "gw-1", coreNonce, gwNonce),
		"part order":    pki.AdoptMAC(key, "gateway", "gw-1", gwNonce, coreNonce),
		"missing part":  pki.AdoptMAC(key, "gateway", "gw-1", coreNonce),
	}
	for what, mac := range differs {
		if bytes.Equal(mac, base) {
			t.Errorf("changing the %s does not change the MAC", what)
		}
	}
	// Parts are length-prefixed: moving bytes across a boundary, or across
	// the role/id separator, changes the MAC.
	if bytes.Equal(pki.AdoptMAC(key, "gateway", "gw-1", []byte("ab"), []byte("c")), pki.AdoptMAC(key, "gateway", "gw-1", []byte("a"), []byte("bc"))) {
		t.Error("parts are not delimited")
	}
	if bytes.Equal(pki.AdoptMAC(key, "gateway", "gw-1", []byte("x")), pki.AdoptMAC(key, "gateway", "gw-1", []byte{}, []byte("x"))) {
		t.Error("an empty part is not bound")
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemCert(der []byte) []byte { return pemBlock("CERTIFICATE", der) }

func pemKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}
