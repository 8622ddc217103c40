package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The acceptance flow of ward core, once per database engine: first start
// with a generated admin password, provisioning a device whose config
// Debian's wg-quick accepts, restart, password reset from the CLI while core
// runs, graceful shutdown.

func TestCoreSQLite(t *testing.T) {
	t.Parallel()
	coreLifecycle(t, "sqlite", "")
}

func TestCorePostgres(t *testing.T) {
	t.Parallel()
	coreLifecycle(t, "postgres", pg.newDatabase(t))
}

func TestAdminPasswordFromEnvironment(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			database := ""
			if engine == "postgres" {
				database = pg.newDatabase(t)
			}
			const password = "From-the-environment-7"
			dataDir := filepath.Join(t.TempDir(), "data")
			p := startCore(t, coreOpts{dataDir: dataDir, database: database, env: []string{"WARD_ADMIN_PASSWORD=" + password}})
			if out := p.stdout.String(); strings.Contains(out, "first start") || strings.Contains(out, password) {
				t.Fatalf("stdout shows a password banner although WARD_ADMIN_PASSWORD was set:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(dataDir, "initial-admin-password")); !os.IsNotExist(err) {
				t.Fatalf("initial-admin-password exists although WARD_ADMIN_PASSWORD was set (stat: %v)", err)
			}
			if strings.Contains(p.stderr.String(), password) {
				t.Fatal("the log contains the admin password")
			}
			mustLogin(t, p.base, "admin", password)
			if status := loginStatus(t, p.base, "admin", password+"x"); status != http.StatusUnauthorized {
				t.Fatalf("login with a wrong password = %d, want 401", status)
			}
			p.stop(t)
		})
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{args: []string{"version"}, wantCode: 0, wantStdout: "ward "},
		{args: []string{"no-such-command"}, wantCode: 2, wantStderr: `unknown command "no-such-command"`},
		{args: nil, wantCode: 2, wantStderr: "Usage:"},
		{args: []string{"core", "--log-format", "xml"}, wantCode: 2, wantStderr: "--log-format"},
		{args: []string{"admin", "reset-password"}, wantCode: 2, wantStderr: "name exactly one user"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runWard(t, "", nil, tt.args...)
		if code != tt.wantCode {
			t.Errorf("ward %q exited %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, stdout, stderr)
		}
		if !strings.Contains(stdout, tt.wantStdout) || !strings.Contains(stderr, tt.wantStderr) {
			t.Errorf("ward %q: stdout %q (want %q), stderr %q (want %q)", tt.args, stdout, tt.wantStdout, stderr, tt.wantStderr)
		}
	}
}

var bannerRe = regexp.MustCompile(`Log in as user "admin" with password:\n\n\s+(\S+)\n`)

func coreLifecycle(t *testing.T, engine, database string) {
	dataDir := filepath.Join(t.TempDir(), "data")
	opts := coreOpts{dataDir: dataDir, database: database}
	pwFile := filepath.Join(dataDir, "initial-admin-password")

	// First start.
	p := startCore(t, opts)
	m := bannerRe.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no admin password banner on stdout:\n%s", p.stdout.String())
	}
	password := m[1]
	if len(password) < 16 {
		t.Fatalf("generated password %q is short", password)
	}
	st, err := os.Stat(pwFile)
	if err != nil {
		t.Fatalf("password file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", pwFile, st.Mode().Perm())
	}
	if content, _ := os.ReadFile(pwFile); strings.TrimRight(string(content), "\n") != password {
		t.Fatalf("password file holds %q, banner shows %q", content, password)
	}
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("data dir is open to others: %v, %v", st.Mode(), err)
	}
	if strings.Contains(p.stderr.String(), password) {
		t.Fatal("the log contains the generated admin password")
	}

	admin := newClient(t, p.base)
	var ready struct{ Status, Database string }
	admin.must("GET", "/readyz", nil, http.StatusOK, &ready)
	if ready.Status != "ready" || ready.Database != engine {
		t.Fatalf("/readyz = %+v, want ready on %s", ready, engine)
	}
	if status := admin.login("admin", password); status != http.StatusOK {
		t.Fatalf("login with the banner password = %d", status)
	}

	t.Run("device config accepted by wg-quick", func(t *testing.T) {
		c := *admin
		c.t = t
		provisionDevice(t, &c)
	})
	if t.Failed() {
		return
	}

	t.Run("metrics", func(t *testing.T) {
		c := newClient(t, p.base)
		status, hdr, body := c.request("GET", "/metrics", nil)
		if status != http.StatusOK {
			t.Fatalf("/metrics = %d", status)
		}
		if !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("/metrics Content-Type = %q", hdr.Get("Content-Type"))
		}
		for _, name := range []string{"ward_http_requests_total", "go_goroutines"} {
			if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).Match(body) {
				t.Errorf("/metrics has no sample of %s", name)
			}
		}
	})

	p.stop(t)

	// Second start on the same data: no new password, the old one works,
	// the data is still there.
	p = startCore(t, opts)
	if out := p.stdout.String(); strings.Contains(out, "first start") || strings.Contains(out, "password") {
		t.Fatalf("second start printed a password banner:\n%s", out)
	}
	if content, _ := os.ReadFile(pwFile); strings.TrimRight(string(content), "\n") != password {
		t.Fatalf("second start changed the password file to %q", content)
	}
	admin = mustLogin(t, p.base, "admin", password)
	var locs struct {
		Total int `json:"total"`
	}
	admin.must("GET", "/api/v1/locations", nil, http.StatusOK, &locs)
	if locs.Total != 1 {
		t.Fatalf("after restart: %d locations, want 1", locs.Total)
	}

	// Password reset from the CLI while core runs, flags after the user
	// name as in the README.
	const newPassword = "Reset-from-the-CLI-42"
	args := []string{"admin", "reset-password", "admin", "--password-stdin", "--data-dir", dataDir}
	if database != "" {
		args = append(args, "--database", database)
	}
	code, stdout, stderr := runWard(t, newPassword+"\n", nil, args...)
	if code != 0 {
		t.Fatalf("ward admin reset-password exited %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "password of admin changed") || strings.Contains(stdout+stderr, newPassword) {
		t.Fatalf("reset-password output: stdout %q stderr %q", stdout, stderr)
	}
	if status := loginStatus(t, p.base, "admin", password); status != http.StatusUnauthorized {
		t.Fatalf("login with the old password after the reset = %d, want 401", status)
	}
	mustLogin(t, p.base, "admin", newPassword)

	// Graceful shutdown.
	p.stop(t)
}

// provisionDevice follows the README's curl tour: group, user, location,
// device with a key from Debian's wg, config through wg-quick strip.
func provisionDevice(t *testing.T, admin *client) {
	// Without a session the API refuses; a cookie session needs the CSRF header.
	anon := newClient(t, admin.base)
	if status, _, _ := anon.request("GET", "/api/v1/users", nil); status != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /api/v1/users = %d, want 401", status)
	}
	noCSRF := &client{t: t, base: admin.base, hc: admin.hc}
	if status, _, _ := noCSRF.request("POST", "/api/v1/groups", map[string]string{"name": "nocsrf"}); status != http.StatusForbidden {
		t.Fatalf("POST without X-CSRF-Token = %d, want 403", status)
	}

	admin.must("POST", "/api/v1/groups", map[string]any{"name": "staff"}, http.StatusCreated, nil)
	var alice struct {
		ID     string   `json:"id"`
		Groups []string `json:"groups"`
	}
	admin.must("POST", "/api/v1/users", map[string]any{"username": "alice", "email": "alice@example.com",
		"password": "Correct-horse-9", "groups": []string{"staff"}}, http.StatusCreated, &alice)
	if alice.ID == "" || len(alice.Groups) != 1 || alice.Groups[0] != "staff" {
		t.Fatalf("created user: %+v", alice)
	}
	var loc struct {
		ID         string   `json:"id"`
		Addresses  []string `json:"addresses"`
		PublicKey  string   `json:"public_key"`
		ListenPort int      `json:"listen_port"`
	}
	admin.must("POST", "/api/v1/locations", map[string]any{"name": "office", "addresses": []string{"10.10.0.0/24", "fd00:10::/64"},
		"endpoint": "127.0.0.1", "dns": []string{"10.10.0.1"}, "allowed_groups": []string{"staff"}}, http.StatusCreated, &loc)
	if strings.Join(loc.Addresses, ",") != "10.10.0.1/24,fd00:10::1/64" {
		t.Fatalf("location addresses = %q", loc.Addresses)
	}
	if _, err := wgtypes.ParseKey(loc.PublicKey); err != nil {
		t.Fatalf("location public key %q: %v", loc.PublicKey, err)
	}

	privateKey, publicKey, haveWG := wgKeyPair(t)
	var dev struct {
		ID         string `json:"id"`
		PublicKey  string `json:"public_key"`
		PrivateKey string `json:"private_key"`
		UserID     string `json:"user_id"`
		Addresses  []struct {
			LocationID string `json:"location_id"`
			Address    string `json:"address"`
		} `json:"addresses"`
	}
	admin.must("POST", "/api/v1/devices", map[string]any{"name": "laptop", "public_key": publicKey, "user_id": alice.ID}, http.StatusCreated, &dev)
	if dev.PublicKey != publicKey || dev.UserID != alice.ID || dev.PrivateKey != "" {
		t.Fatalf("created device: %+v", dev)
	}
	var hostAddrs []string
	for _, a := range dev.Addresses {
		if a.LocationID != loc.ID {
			t.Fatalf("device has an address in unknown location %s", a.LocationID)
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			t.Fatalf("device address %q: %v", a.Address, err)
		}
		network := netip.MustParsePrefix("10.10.0.0/24")
		if ip.Is6() {
			network = netip.MustParsePrefix("fd00:10::/64")
		}
		if !network.Contains(ip) || ip == network.Addr() || ip == network.Addr().Next() {
			t.Fatalf("device address %s is not a free host of %s", ip, network)
		}
		hostAddrs = append(hostAddrs, netip.PrefixFrom(ip, ip.BitLen()).String())
	}
	if len(hostAddrs) != 2 {
		t.Fatalf("device has %d addresses in the dual-stack location, want 2: %+v", len(hostAddrs), dev.Addresses)
	}

	status, hdr, body := admin.request("GET", "/api/v1/devices/"+dev.ID+"/config?location="+loc.ID, nil)
	if status != http.StatusOK {
		t.Fatalf("GET config = %d: %s", status, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("config headers: Content-Type %q, Cache-Control %q", ct, hdr.Get("Cache-Control"))
	}
	cfg := string(body)
	for _, line := range []string{
		"PrivateKey = REPLACE_WITH_DEVICE_PRIVATE_KEY",
		"Address = " + strings.Join(hostAddrs, ", "),
		"DNS = 10.10.0.1",
		"MTU = 1420",
		"PublicKey = " + loc.PublicKey,
		"AllowedIPs = 10.10.0.0/24, fd00:10::/64",
		"Endpoint = 127.0.0.1:51820",
	} {
		if !hasLine(cfg, line) {
			t.Errorf("config has no line %q:\n%s", line, cfg)
		}
	}
	if t.Failed() {
		return
	}
	if !haveWG {
		t.Skip("SKIP wg-quick strip: wireguard-tools not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP wg-quick strip: wg-quick re-executes itself through sudo when not root")
	}
	wgQuick := lookTool(t, "wg-quick")
	if wgQuick == "" {
		return
	}

	// The interface name comes from the file name: at most 15 characters.
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	confPath := filepath.Join(t.TempDir(), "wgt"+hex.EncodeToString(suffix)+".conf")
	full := strings.Replace(cfg, "REPLACE_WITH_DEVICE_PRIVATE_KEY", privateKey, 1)
	if err := os.WriteFile(confPath, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(wgQuick, "strip", confPath).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("wg-quick strip %s: %v\n%s\nconfig:\n%s", confPath, err, stderr, full)
	}
	stripped := string(out)
	t.Logf("wg-quick strip %s:\n%s", filepath.Base(confPath), stripped)
	for _, key := range []string{"Address", "DNS", "MTU"} {
		if hasKey(stripped, key) {
			t.Errorf("wg-quick strip kept %s:\n%s", key, stripped)
		}
	}
	for _, line := range []string{
		"[Interface]", "[Peer]",
		"PrivateKey = " + privateKey,
		"PublicKey = " + loc.PublicKey,
		"AllowedIPs = 10.10.0.0/24, fd00:10::/64",
		"Endpoint = 127.0.0.1:51820",
	} {
		if !hasLine(stripped, line) {
			t.Errorf("stripped config has no line %q:\n%s", line, stripped)
		}
	}
}

// wgKeyPair runs `wg genkey | wg pubkey`. Without wg it fails when the
// suite must be complete (root, or CI) and otherwise falls back to a Go key
// and reports false so the caller skips the wg-quick part.
func wgKeyPair(t *testing.T) (private, public string, ok bool) {
	t.Helper()
	wg := lookTool(t, "wg")
	if wg == "" {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.String(), k.PublicKey().String(), false
	}
	out, err := exec.Command(wg, "genkey").Output()
	if err != nil {
		t.Fatalf("wg genkey: %v", err)
	}
	private = strings.TrimSpace(string(out))
	cmd := exec.Command(wg, "pubkey")
	cmd.Stdin = strings.NewReader(private + "\n")
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	public = strings.TrimSpace(string(out))
	// Cross-check the independent implementation with wgctrl's.
	k, err := wgtypes.ParseKey(private)
	if err != nil || k.PublicKey().String() != public {
		t.Fatalf("wg pubkey gave %q for %q; wgtypes disagrees (%v)", public, private, err)
	}
	return private, public, true
}

// lookTool finds a wireguard-tools program. Missing, it is a failure as root
// or in CI (scripts/install-deps.sh installs it there) and "" otherwise.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Geteuid() == 0 || os.Getenv("CI") != "" {
		t.Fatalf("%s not found (%v): install wireguard-tools, e.g. with scripts/install-deps.sh or "+
			"apt-get install --no-install-recommends wireguard-tools", name, err)
	}
	t.Logf("%s not found: the wg-quick check will be skipped (install wireguard-tools to run it)", name)
	return ""
}

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// hasKey reports whether a wg config has a "Key = ..." line.
func hasKey(text, key string) bool {
	for _, l := range strings.Split(text, "\n") {
		k, _, found := strings.Cut(l, "=")
		if found && strings.EqualFold(strings.TrimSpace(k), key) {
			return true
		}
	}
	return false
}
