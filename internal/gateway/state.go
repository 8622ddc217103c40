package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

const configFile = "config.json"

// savedConfig is the last known good configuration, restored at boot while
// core is unreachable.
type savedConfig struct {
	Revision  uint64        `json:"revision"`
	Interface *gw.Interface `json:"interface"`
	Peers     []*gw.Peer    `json:"peers"`
	// Endpoints are where peers were last seen, so a gateway restarted
	// while core is away can still take over quickly. Older gateways
	// ignore the field.
	Endpoints []savedEndpoint `json:"endpoints,omitempty"`
	// Signature is core's over Revision, Interface and Peers
	// (internal/gwsign); Touched lists the keys changed after it, which a
	// restore leaves out. CoreContact (Unix ms) is when a core was last
	// connected: without core, MFA peers with no known handshake expire
	// counting from it.
	Signature   []byte   `json:"signature,omitempty"`
	Touched     []string `json:"touched,omitempty"`
	CoreContact int64    `json:"core_contact,omitempty"`
}

type savedEndpoint struct {
	PublicKey     string `json:"public_key"`
	Endpoint      string `json:"endpoint"`
	LastHandshake int64  `json:"last_handshake"`
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
