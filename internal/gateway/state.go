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
