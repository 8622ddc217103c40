package e2e

// Gateways report their active/standby role to core: a gateway without a
// floating IP is active; one with --floating-ip follows the address on its
// interfaces, and core's API and overview follow it within seconds.
//
//	core ns ──veth── gw ns  (gateway 1, no floating IP)
//	        └─veth── g2 ns  (gateway 2, --floating-ip on its loopback)

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

const floatingIP = "10.250.9.100"

// coreRole is the role part of a gateway as core's API shows it.
type coreRole struct {
	Status struct {
		Connected bool   `json:"connected"`
		Role      string `json:"role"`
		RoleSince int64  `json:"role_since"`
		Links     []struct {
			CoreID    string `json:"core_id"`
			Connected bool   `json:"connected"`
			Role      string `json:"role"`
			RoleSince int64  `json:"role_since"`
		} `json:"links"`
	} `json:"status"`
}

// gatewayRole is the role part of a gateway's own /status.
type gatewayRole struct {
	Role      string `json:"role"`
	RoleSince int64  `json:"role_since"`
}

func readGatewayRole(hc *http.Client) (gatewayRole, error) {
	var r gatewayRole
	code, err := getJSON(hc, "http://"+gwHealthAddr+"/status", &r)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/status = %d", code)
	}
	return r, err
}

// waitCoreRole waits until core shows the gateway connected in role, since
// the time the gateway itself reports, on its summary and every live link.
// It returns how long that took.
func (e *gwEnv) waitCoreRole(t *testing.T, gatewayID string, gw *http.Client, role string, timeout time.Duration) time.Duration {
	t.Helper()
	api := e.api(t)
	start := time.Now()
	err := waitFor(timeout, 20*time.Millisecond, func() error {
		own, err := readGatewayRole(gw)
		if err != nil {
			return err
		}
		if own.Role != role {
			return fmt.Errorf("the gateway itself says %+v", own)
		}
		var c coreRole
		api.must("GET", "/api/v1/locations/"+e.locID+"/gateways/"+gatewayID, nil, http.StatusOK, &c)
		st := c.Status
		if !st.Connected || st.Role != role || st.RoleSince != own.RoleSince || len(st.Links) == 0 {
			return fmt.Errorf("core shows %+v; the gateway says %+v", st, own)
		}
		for _, l := range st.Links {
			if l.Connected && (l.Role != role || l.RoleSince != own.RoleSince) {
				return fmt.Errorf("core's link %+v; the gateway says %+v", l, own)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("core does not show the gateway %s: %v", role, err)
	}
	return time.Since(start)
}

// overviewRole is the role the overview's live fragment shows for a
// gateway, as words.
func (e *gwEnv) overviewRole(t *testing.T, name string) string {
	t.Helper()
	api := e.api(t)
	req, err := http.NewRequest(http.MethodGet, api.base+"/overview/live", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("HX-Request", "true")
	resp, err := api.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /overview/live = %d: %s", resp.StatusCode, body)
	}
	re := regexp.MustCompile(`(?s)<tr data-gateway="` + regexp.QuoteMeta(name) + `">.*?<span class="role" data-role="([a-z]+)">([a-z]+)</span>`)
	m := re.FindSubmatch(body)
	if m == nil || string(m[1]) != string(m[2]) {
		t.Fatalf("overview has no role for gateway %s:\n%s", name, body)
	}
	return string(m[2])
}

// TestGatewayRoleInCore: the environment's gateway (no floating IP) is
// active in core's API and overview. A second gateway started with
// --floating-ip is standby while the address is on none of its interfaces,
// turns active in core when the address is added, and standby again when
// it is removed; each time core's role_since is the gateway's own.
func TestGatewayRoleInCore(t *testing.T) {
	t.Parallel()
	e := newGatewayEnv(t, false)
	took := e.waitCoreRole(t, e.gwID, e.gwHTTP(), "active", 10*time.Second)
	t.Logf("gateway without floating IP: active in core %v after adoption", took.Round(time.Millisecond))
	if got := e.overviewRole(t, "gw1"); got != "active" {
		t.Fatalf("overview shows gw1 %q, want active", got)
	}

	ns := newNetns(t, "ward-"+e.id+"-g2")
	veth(t, e.coreNS, "wl"+e.id, "10.250.4.1/24", ns, "wgl"+e.id, "10.250.4.2/24")
	var g apiGateway
	e.api(t).must("POST", "/api/v1/locations/"+e.locID+"/gateways", map[string]any{"name": "gw-ha", "control_address": gw2ControlAddr},
		http.StatusCreated, &g)
	proc := startInNetns(t, e.t, ns, "ward gateway 2", []string{"WARD_JOIN_TOKEN=" + g.JoinToken}, wardBin, "gateway",
		"--data-dir", filepath.Join(e.dir, "gateway2"), "--control-addr", gw2ControlAddr, "--interface", "wh"+e.id,
		"--health-addr", gwHealthAddr, "--stats-interval", statsInterval, "--floating-ip", floatingIP)
	hc := ns.httpClient(2 * time.Second)
	check := func(role string) {
		t.Helper()
		if proc.exited() {
			t.Fatalf("gateway 2 exited: %v\n%s", proc.waitErr, tailLines(proc.out.String(), 40))
		}
		took := e.waitCoreRole(t, g.ID, hc, role, 30*time.Second)
		t.Logf("gateway with floating IP: %s in core after %v", role, took.Round(time.Millisecond))
		if got := e.overviewRole(t, "gw-ha"); got != role {
			t.Fatalf("overview shows gw-ha %q, want %s", got, role)
		}
	}
	check("standby") // adopted without the address

	ns.ip(t, "addr", "add", floatingIP+"/32", "dev", "lo")
	check("active")
	ns.ip(t, "addr", "del", floatingIP+"/32", "dev", "lo")
	check("standby")
	if got := e.overviewRole(t, "gw1"); got != "active" {
		t.Fatalf("overview shows gw1 %q after gw-ha's changes, want active", got)
	}
}
