package drill

// ward's control plane for the drill: core (SQLite in the drill's
// directory) and a proxy in the core namespace, one location without MFA
// served by two registered gateways (one join token each, the same listen
// port; core pushes the same key and peers to both), a device for the
// wg-quick client and an enrolled `ward client`.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	adminPassword = "Drill-Admin-Password-7"
	userPassword  = "Drill-User-Password-9"
)

func (d *Drill) coreURL() string  { return fmt.Sprintf("http://%s:%d", coreIP, coreAPIPort) }
func (d *Drill) proxyURL() string { return fmt.Sprintf("http://%s:%d", coreIP, proxyPort) }

// startCore starts ward core (again, on the same data after a kill) and
// waits for /readyz.
func (d *Drill) startCore(ctx context.Context) error {
	p, err := startProc(d.topo.Core, "ward core", filepath.Join(d.dir, "core.log"), []string{"WARD_ADMIN_PASSWORD=" + adminPassword},
		d.self, "core", "--data-dir", filepath.Join(d.dir, "core"), "--http-addr", fmt.Sprintf("0.0.0.0:%d", coreAPIPort),
		"--public-url", d.coreURL())
	if err != nil {
		return err
	}
	d.core = p
	return waitHTTP200(ctx, d.topo.Core, p, d.coreURL()+"/readyz", 60*time.Second)
}

// setupControlPlane brings up core, the location, the gateways' adoption,
// the wg-quick device and (with the ward client) the proxy and the
// enrollment. The ward gateways keep running afterwards; the location's
// key and peers are read from a gateway's saved config for the baseline.
func (d *Drill) setupControlPlane(ctx context.Context) error {
	if err := d.startCore(ctx); err != nil {
		return err
	}
	d.api = newAPIClient(d.topo.Core, d.coreURL())
	if err := d.api.login("admin", adminPassword); err != nil {
		return err
	}
	if err := d.api.do("POST", "/api/v1/locations", map[string]any{"name": "drill-" + d.id, "addresses": []string{gwTunnelIP + "/24"},
		"endpoint": vip, "listen_port": listenPort, "mfa_mode": "disabled"}, http.StatusCreated, &d.loc); err != nil {
		return err
	}
	for i := range 2 {
		var g apiGateway
		if err := d.api.do("POST", "/api/v1/locations/"+d.loc.ID+"/gateways", map[string]any{"name": fmt.Sprintf("gw%d", i+1),
			"control_address": fmt.Sprintf("%s:%d", nodeIP(i), controlPort)}, http.StatusCreated, &g); err != nil {
			return err
		}
		d.gwID[i] = g.ID
		d.gwDataDir[i] = filepath.Join(d.dir, fmt.Sprintf("gw%d", i+1))
		if err := d.startWardGateway(i, g.JoinToken); err != nil {
			return err
		}
	}

	// The wg-quick client's device: keys made here, config from the API.
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return err
	}
	d.wqKey = priv.PublicKey().String()
	var dev struct {
		ID string `json:"id"`
	}
	if err := d.api.do("POST", "/api/v1/devices", map[string]any{"name": "drill-wg-quick", "public_key": d.wqKey}, http.StatusCreated, &dev); err != nil {
		return err
	}
	d.devID = map[string]string{clientWGQuick: dev.ID}
	var conf string
	if err := d.api.do("GET", "/api/v1/devices/"+dev.ID+"/config?location="+d.loc.ID, nil, http.StatusOK, &conf); err != nil {
		return err
	}
	if !strings.Contains(conf, "REPLACE_WITH_DEVICE_PRIVATE_KEY") || !strings.Contains(conf, vip) {
		return fmt.Errorf("device config from the API has no private-key placeholder or no VIP endpoint:\n%s", conf)
	}
	d.wqConfig = strings.Replace(conf, "REPLACE_WITH_DEVICE_PRIVATE_KEY", priv.String(), 1)

	if d.wants(clientWard) {
		if err := d.enrollWardClient(ctx); err != nil {
			return err
		}
	}
	return d.waitGatewaysInSync(ctx, 60*time.Second)
}

// waitGatewaysInSync waits until core sees both gateways adopted, connected
// and at the location's current revision.
func (d *Drill) waitGatewaysInSync(ctx context.Context, timeout time.Duration) error {
	return waitFor(ctx, timeout, 100*time.Millisecond, "gateways adopted and in sync", func() error {
		var loc apiLocation
		if err := d.api.do("GET", "/api/v1/locations/"+d.loc.ID, nil, http.StatusOK, &loc); err != nil {
			return err
		}
		for i := range 2 {
			if p := d.gw[i]; p != nil && p.Exited() {
				return p.failure(fmt.Errorf("gateway %d ended: %v", i+1, p.exitErr()))
			}
			var g apiGateway
			if err := d.api.do("GET", "/api/v1/locations/"+d.loc.ID+"/gateways/"+d.gwID[i], nil, http.StatusOK, &g); err != nil {
				return err
			}
			if !g.Status.Adopted || !g.Status.Connected || g.Status.AppliedRevision != loc.Revision {
				return fmt.Errorf("gateway %d: adopted=%v connected=%v revision %d of %d (last error %q)", i+1,
					g.Status.Adopted, g.Status.Connected, g.Status.AppliedRevision, loc.Revision, g.Status.LastError)
			}
		}
		return nil
	})
}

// waitRolesInCore waits until core shows the roles the gateways report:
// the one on node owner (which holds the VIP) active, the other standby.
func (d *Drill) waitRolesInCore(ctx context.Context, owner int, timeout time.Duration) error {
	return waitFor(ctx, timeout, 100*time.Millisecond, "core shows the gateways' roles", func() error {
		for i := range 2 {
			want := "standby"
			if i == owner {
				want = "active"
			}
			var g apiGateway
			if err := d.api.do("GET", "/api/v1/locations/"+d.loc.ID+"/gateways/"+d.gwID[i], nil, http.StatusOK, &g); err != nil {
				return err
			}
			if g.Status.Role != want {
				return fmt.Errorf("core shows gateway %d as %q, want %s (node %d holds the VIP)", i+1, g.Status.Role, want, owner+1)
			}
		}
		return nil
	})
}

// enrollWardClient starts the proxy, enrolls a new user's device with
// `ward client enroll` in the ward client's namespace.
func (d *Drill) enrollWardClient(ctx context.Context) error {
	var px apiProxy
	ctl := fmt.Sprintf("%s:%d", coreIP, proxyPort+1)
	if err := d.api.do("POST", "/api/v1/proxies", map[string]any{"name": "edge", "control_address": ctl}, http.StatusCreated, &px); err != nil {
		return err
	}
	p, err := startProc(d.topo.Core, "ward proxy", filepath.Join(d.dir, "proxy.log"), []string{"WARD_JOIN_TOKEN=" + px.JoinToken},
		d.self, "proxy", "--data-dir", filepath.Join(d.dir, "proxy"), "--http-addr", fmt.Sprintf("%s:%d", coreIP, proxyPort),
		"--control-addr", ctl, "--health-addr", fmt.Sprintf("127.0.0.1:%d", proxyPort+2), "--request-timeout", "20s")
	if err != nil {
		return err
	}
	d.proxy = p
	if err := waitFor(ctx, 60*time.Second, 100*time.Millisecond, "proxy linked to core", func() error {
		if p.Exited() {
			return p.failure(fmt.Errorf("proxy ended: %v", p.exitErr()))
		}
		var got apiProxy
		if err := d.api.do("GET", "/api/v1/proxies/"+px.ID, nil, http.StatusOK, &got); err != nil {
			return err
		}
		if !got.linked() {
			return fmt.Errorf("proxy not linked yet")
		}
		return nil
	}); err != nil {
		return err
	}

	var u struct {
		ID string `json:"id"`
	}
	if err := d.api.do("POST", "/api/v1/users", map[string]any{"username": "drill", "email": "drill@example.com", "first_name": "Drill",
		"active": false}, http.StatusCreated, &u); err != nil {
		return err
	}
	var en struct {
		Token string `json:"token"`
	}
	if err := d.api.do("POST", "/api/v1/users/"+u.ID+"/enrollment", map[string]any{"send_email": false}, http.StatusCreated, &en); err != nil {
		return err
	}
	d.cfgHome = filepath.Join(d.dir, "xdg")
	if err := os.MkdirAll(filepath.Join(d.dir, "home"), 0o700); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", "netns", "exec", d.topo.Client[clientWard].Name, d.self, "client", "enroll",
		"--url", d.proxyURL(), "--token", en.Token, "--password-stdin", "--name", "drill")
	cmd.Env = cleanEnv(d.wardClientEnv()...)
	cmd.Stdin = strings.NewReader(userPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ward client enroll: %w\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(d.cfgHome, "ward", "client.json"))
	if err != nil {
		return fmt.Errorf("ward client config after enrollment: %w", err)
	}
	var cfg struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.PublicKey == "" {
		return fmt.Errorf("ward client config has no public key (%v)", err)
	}
	d.wardKey = cfg.PublicKey
	var devs struct {
		Items []struct {
			ID        string `json:"id"`
			PublicKey string `json:"public_key"`
		} `json:"items"`
	}
	if err := d.api.do("GET", "/api/v1/devices?limit=100", nil, http.StatusOK, &devs); err != nil {
		return err
	}
	for _, dv := range devs.Items {
		if dv.PublicKey == d.wardKey {
			d.devID[clientWard] = dv.ID
		}
	}
	if d.devID[clientWard] == "" {
		return fmt.Errorf("core lists no device with the ward client's key %s", d.wardKey)
	}
	return nil
}

func (d *Drill) wardClientEnv() []string {
	return []string{"XDG_CONFIG_HOME=" + d.cfgHome, "HOME=" + filepath.Join(d.dir, "home")}
}

// gatewayHealth is node i's ward gateway health address, inside its namespace.
func gatewayHealth() string { return fmt.Sprintf("127.0.0.1:%d", healthPort) }

// startWardGateway starts `ward gateway` on node i: with a join token the
// first time, from its data directory afterwards. With the failover
// features it runs with --floating-ip: active only while the node holds
// the VIP.
func (d *Drill) startWardGateway(i int, token string) error {
	var env []string
	if token != "" {
		env = append(env, "WARD_JOIN_TOKEN="+token)
	}
	args := []string{"gateway", "--data-dir", d.gwDataDir[i], "--control-addr", fmt.Sprintf("%s:%d", nodeIP(i), controlPort),
		"--health-addr", gatewayHealth(), "--interface", d.wardIface(i), "--backend", "userspace",
		"--stats-interval", statsInterval.String()}
	if d.wardErr == nil {
		args = append(args, "--floating-ip", vip)
	}
	p, err := startProc(d.topo.Node[i], fmt.Sprintf("ward gateway %d", i+1), filepath.Join(d.dir, fmt.Sprintf("gw%d.log", i+1)), env, d.self, args...)
	if err != nil {
		return err
	}
	d.gw[i] = p
	return nil
}

func (d *Drill) wardIface(i int) string { return fmt.Sprintf("wg%s%c", d.id, 'a'+i) }

// gatewayStatus reads node i's ward gateway /status as raw JSON.
func (d *Drill) gatewayStatus(i int) (string, error) {
	resp, err := d.topo.Node[i].httpClient(2 * time.Second).Get("http://" + gatewayHealth() + "/status")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/status = %d", resp.StatusCode)
	}
	return string(raw), err
}

// savedLocation is what the baseline needs from a ward gateway's last known
// good config: the location's key, port and peers.
type savedLocation struct {
	Interface struct {
		PrivateKey string `json:"private_key"`
		ListenPort int    `json:"listen_port"`
	} `json:"interface"`
	Peers []struct {
		PublicKey    string   `json:"public_key"`
		AllowedIPs   []string `json:"allowed_ips"`
		PresharedKey string   `json:"preshared_key"`
		Keepalive    int      `json:"keepalive"`
	} `json:"peers"`
}

// readSavedLocation reads node 0's config.json and checks it has every
// client's peer.
func (d *Drill) readSavedLocation() (*savedLocation, error) {
	path := filepath.Join(d.gwDataDir[0], "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the baseline takes the location's key from the ward gateway's saved config: %w", err)
	}
	var s savedLocation
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if s.Interface.PrivateKey == "" {
		return nil, fmt.Errorf("%s has no interface.private_key", path)
	}
	for _, k := range []string{d.wqKey, d.wardKey} {
		if k == "" {
			continue
		}
		found := false
		for _, p := range s.Peers {
			found = found || p.PublicKey == k
		}
		if !found {
			return nil, fmt.Errorf("%s has no peer %s", path, k)
		}
	}
	return &s, nil
}
