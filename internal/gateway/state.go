package gateway

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// identity is what adoption leaves on disk: who the gateway is and whom it
// trusts.
type identity struct {
	GatewayID string `json:"gateway_id"`
	CertDER   []byte `json:"cert_der"`
	CADER     []byte `json:"ca_der"`
	KeyDER    []byte `json:"key_der"` // PKCS#8
	// TokenHash names the join token that produced this identity, so the
	// same token cannot adopt again.
	TokenHash string `json:"token_hash"`

	key  crypto.Signer
	pool *x509.CertPool
}

const (
	identityFile = "identity.json"
	configFile   = "config.json"
)

func loadIdentity(dir string) (*identity, error) {
	raw, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var id identity
	if err := json.Unmarshal(raw, &id); err != nil {
		return nil, fmt.Errorf("parse %s: %w", identityFile, err)
	}
	if err := id.init(); err != nil {
		return nil, err
	}
	return &id, nil
}

func (id *identity) init() error {
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

func (id *identity) save(dir string) error {
	raw, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, identityFile), raw)
}

// savedConfig is the last known good configuration, restored at boot while
// core is unreachable.
type savedConfig struct {
	Revision  uint64        `json:"revision"`
	Interface *gw.Interface `json:"interface"`
	Peers     []*gw.Peer    `json:"peers"`
}

func loadConfig(dir string) (*savedConfig, error) {
	raw, err := os.ReadFile(filepath.Join(dir, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c savedConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("parse %s: %w", configFile, err)
	}
	return &c, nil
}

func writeFileAtomic(path string, data []byte) error {
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
