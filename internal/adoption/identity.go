// Package adoption is how a component that core dials (a gateway or a proxy)
// becomes trusted: it starts with a one-time join token, core proves it
// holds the token and issues a certificate from its CA, and from then on the
// component accepts only mutual TLS from core identities of that CA. The
// same exchange and the same on-disk identity serve every component kind.
package adoption

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wardvpn/ward/internal/pki"
)

// IdentityFile is the adoption identity in the component's data dir.
const IdentityFile = "identity.json"

// Identity is what adoption leaves on disk: who the component is and whom
// it trusts.
type Identity struct {
	ID      string `json:"id"`
	CertDER []byte `json:"cert_der"`
	CADER   []byte `json:"ca_der"`
	KeyDER  []byte `json:"key_der"` // PKCS#8
	// TokenHash names the join token that produced this identity, so the
	// same token cannot adopt again.
	TokenHash string `json:"token_hash"`

	key  crypto.Signer
	pool *x509.CertPool
}

func loadIdentity(dir string) (*Identity, error) {
	raw, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(raw, &id); err != nil {
		return nil, fmt.Errorf("parse %s: %w", IdentityFile, err)
	}
	if err := id.init(); err != nil {
		return nil, err
	}
	return &id, nil
}

func (id *Identity) init() error {
	k, err := x509.ParsePKCS8PrivateKey(id.KeyDER)
	if err != nil {
		return fmt.Errorf("identity key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return errors.New("identity key cannot sign")
	}
	id.key = signer
	id.pool, err = pki.Pool(id.CADER)
	return err
}

func (id *Identity) save(dir string) error {
	raw, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, IdentityFile), raw)
}

// tokenHash identifies the join token an identity came from.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte("ward-join-used\x00" + token))
	return hex.EncodeToString(sum[:])
}

// WriteFileAtomic writes a 0600 file through a rename, so a crash never
// leaves half a file.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RemoveFile deletes a file of the data dir; a missing file is fine.
func RemoveFile(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
