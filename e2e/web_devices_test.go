package e2e

// Acceptance test of the web UI (issue #7): create a location and a device
// in headless chromium and download the device's config.

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestWebDevicesConfigDownload: an admin logs in through the form, creates
// a location through the location form (after a validation error shown at
// its field), adds a device with a generated key, downloads the config the
// answer offers once (with the private key) as a browser download, and then
// the device page's config (with the placeholder). Both are checked
// against the location and the device core reports, and by wg-quick strip.
func TestWebDevicesConfigDownload(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	const password = "Web-devices-Admin-7"
	core := startCore(t, coreOpts{dataDir: filepath.Join(t.TempDir(), "data"), env: []string{"WARD_ADMIN_PASSWORD=" + password}})
	api := mustLogin(t, core.base, "admin", password)

	b := newBrowser(t, core.base)
	if st := b.login("admin", password); st != http.StatusOK || b.path() != "/" {
		t.Fatalf("login = %d at %s, want the overview", st, b.path())
	}

	// The location form: a server-side validation error first, shown at
	// its field with the other values kept.
	if st := b.open("/locations/new"); st != http.StatusOK {
		t.Fatalf("GET /locations/new = %d", st)
	}
	b.screenshots("location-new")
	b.fill("#name", "office")
	b.fill("#addresses", "10.60.0.0/33")
	b.fill("#endpoint", "vpn.example.net")
	b.fill("#listen_port", "51999")
	b.fill("#dns", "10.60.0.1")
	if st := b.submit(`form[action="/locations"] button[type=submit]`); st != http.StatusBadRequest {
		t.Fatalf("location with a bad network answered %d, want 400", st)
	}
	if msg := b.text("#addresses-error"); !strings.Contains(msg, "is not a CIDR") {
		t.Fatalf("field error at the networks = %q", msg)
	}
	if inv := b.attr("#addresses", "aria-invalid"); inv != "true" {
		t.Errorf("networks input aria-invalid = %q", inv)
	}
	if v := evalJS[string](b, `document.querySelector("#endpoint").value`); v != "vpn.example.net" {
		t.Errorf("endpoint after the error = %q, want it kept", v)
	}
	for _, e := range b.consoleErrors() {
		if !strings.Contains(e, "status of 400") { // the refused form's answer itself
			t.Errorf("page error on the refused location form: %s", e)
		}
	}
	b.fill("#addresses", "10.60.0.0/24, fd00:60::/64")
	if st := b.submit(`form[action="/locations"] button[type=submit]`); st != http.StatusOK {
		t.Fatalf("create location answered %d", st)
	}
	if p := b.path(); !strings.HasPrefix(p, "/locations/") {
		t.Fatalf("after creating the location the browser is at %s", p)
	}
	b.waitText("main h1", "Location office")
	b.waitText("main", "No gateways registered")

	// A gateway: its join token is shown once with the command to run, and
	// its state cell is refreshed in place by the page's poll.
	locPath := b.path()
	b.fill("#gw-name", "gw-a")
	b.fill("#gw-control_address", "127.0.0.1:1")
	if st := b.submit(`form[action$="/gateways"] button[type=submit]`); st != http.StatusOK {
		t.Fatalf("register gateway answered %d", st)
	}
	token := evalJS[string](b, `document.querySelector("#join-token").value`)
	if !strings.HasPrefix(token, "wgj1.") || !strings.Contains(b.text("#join-command"), "WARD_JOIN_TOKEN='"+token+"' ward gateway") {
		t.Fatalf("join token %q, command %q", token, b.text("#join-command"))
	}
	b.open(locPath)
	if html := evalJS[string](b, `document.documentElement.outerHTML`); strings.Contains(html, token) {
		t.Fatal("the location page shows the join token again")
	}
	stateSel := `tr[data-gateway="gw-a"] .state-cell`
	if got := b.attr(stateSel+" .state", "data-state"); got != "not adopted" {
		t.Fatalf("gw-a state %q, want not adopted", got)
	}
	evalJS[bool](b, `(window.wardMarker = document.querySelector(`+jsString(stateSel)+`)) !== null`)
	if err := waitFor(15*time.Second, 100*time.Millisecond, func() error {
		if !evalJS[bool](b, `window.wardMarker !== undefined && document.querySelector(`+jsString(stateSel)+`) !== window.wardMarker`) {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the gateway's state cell was not refreshed in place: %v", err)
	}
	if got := b.attr(stateSel+" .state", "data-state"); got != "not adopted" {
		t.Fatalf("gw-a state after the poll %q, want not adopted", got)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors on the location pages:\n%s", strings.Join(errs, "\n"))
	}
	b.screenshots("location")

	var locs struct {
		Items []struct {
			ID, Name, Endpoint string
			PublicKey          string `json:"public_key"`
			ListenPort         int    `json:"listen_port"`
		} `json:"items"`
	}
	api.must("GET", "/api/v1/locations", nil, http.StatusOK, &locs)
	if len(locs.Items) != 1 || locs.Items[0].Name != "office" || locs.Items[0].ListenPort != 51999 || locs.Items[0].Endpoint != "vpn.example.net" {
		t.Fatalf("locations after the form: %+v", locs.Items)
	}
	loc := locs.Items[0]

	// The device: a generated key pair.
	if st := b.open("/devices/new"); st != http.StatusOK {
		t.Fatalf("GET /devices/new = %d", st)
	}
	b.fill("#name", "laptop")
	if !evalJS[bool](b, `document.querySelector("#key-generate").checked`) {
		t.Fatal("generating a key pair is not the default")
	}
	if st := b.submit(`form[action="/devices"] button[type=submit]`); st != http.StatusOK {
		t.Fatalf("add device answered %d", st)
	}
	b.waitText("main h1", "Device laptop added")
	b.waitText("main", "Shown once")
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors on the device pages:\n%s", strings.Join(errs, "\n"))
	}

	var devs struct {
		Items []struct {
			ID, Name  string
			PublicKey string `json:"public_key"`
			Addresses []struct {
				LocationID string `json:"location_id"`
				Address    string
			}
		} `json:"items"`
	}
	api.must("GET", "/api/v1/devices", nil, http.StatusOK, &devs)
	if len(devs.Items) != 1 || devs.Items[0].Name != "laptop" {
		t.Fatalf("devices after the form: %+v", devs.Items)
	}
	dev := devs.Items[0]
	var hostAddrs []string
	for _, a := range dev.Addresses {
		if a.LocationID == loc.ID {
			ip := netip.MustParseAddr(a.Address)
			hostAddrs = append(hostAddrs, netip.PrefixFrom(ip, ip.BitLen()).String())
		}
	}
	if len(hostAddrs) != 2 {
		t.Fatalf("device addresses in office: %+v", dev.Addresses)
	}

	// The config with the private key: a browser download of the answer's
	// link, the only time ward shows the key.
	cfg := download(t, b, `a[download="office.conf"]`, "office.conf")
	privateKey := configValue(cfg, "PrivateKey")
	key, err := wgtypes.ParseKey(privateKey)
	if err != nil {
		t.Fatalf("PrivateKey %q of the download: %v\n%s", privateKey, err, cfg)
	}
	if key.PublicKey().String() != dev.PublicKey {
		t.Fatalf("the downloaded private key belongs to %s, the device has %s", key.PublicKey(), dev.PublicKey)
	}
	checkDeviceConfig(t, cfg, []string{
		"[Interface]",
		"Address = " + strings.Join(hostAddrs, ", "),
		"DNS = 10.60.0.1",
		"[Peer]",
		"PublicKey = " + loc.PublicKey,
		"AllowedIPs = 10.60.0.0/24, fd00:60::/64",
		"Endpoint = vpn.example.net:51999",
	})
	wgQuickStrip(t, cfg)

	// Never again: the device page has no private key, and its download
	// has the placeholder in its place.
	if st := b.open("/devices/" + dev.ID); st != http.StatusOK {
		t.Fatalf("GET /devices/%s = %d", dev.ID, st)
	}
	b.waitText("main h1", "Device laptop")
	if strings.Contains(evalJS[string](b, `document.documentElement.outerHTML`), privateKey) {
		t.Fatal("the device page shows the private key")
	}
	b.screenshots("device")
	again := download(t, b, `a[data-config-link="office"]`, "office.conf")
	if again != strings.Replace(cfg, privateKey, "REPLACE_WITH_DEVICE_PRIVATE_KEY", 1) {
		t.Fatalf("the device page's config:\n%s\nwant the first download with the placeholder:\n%s", again, cfg)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("page errors on the device page:\n%s", strings.Join(errs, "\n"))
	}
}

// download clicks the link sel with downloads going to a new directory and
// returns the content of the file it saved as name.
func download(t *testing.T, b *browser, sel, name string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := b.timeout()
	_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir})
	cancel()
	if err != nil {
		t.Fatalf("browser: allow downloads: %v", err)
	}
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	file := filepath.Join(dir, name)
	var data []byte
	err = waitFor(browserTimeout, 50*time.Millisecond, func() error {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		var err error
		if data, err = os.ReadFile(file); err != nil || len(data) == 0 {
			return fmt.Errorf("%s: %v (directory: %v)", name, err, names)
		}
		if len(names) != 1 {
			return fmt.Errorf("download in progress: %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("browser: the download of %s never completed: %v", sel, err)
	}
	return string(data)
}

// configValue is the value of the first "Key = value" line.
func configValue(cfg, key string) string {
	for _, l := range strings.Split(cfg, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func checkDeviceConfig(t *testing.T, cfg string, lines []string) {
	t.Helper()
	for _, line := range lines {
		if !hasLine(cfg, line) {
			t.Errorf("config has no line %q:\n%s", line, cfg)
		}
	}
	if i, j := strings.Index(cfg, "[Interface]"), strings.Index(cfg, "[Peer]"); i < 0 || j < i {
		t.Errorf("config sections out of order:\n%s", cfg)
	}
}

// wgQuickStrip has Debian's wg-quick parse the config (as root, when
// wireguard-tools is installed).
func wgQuickStrip(t *testing.T, cfg string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("SKIP wg-quick strip: wg-quick re-executes itself through sudo when not root")
		return
	}
	wgQuick := lookTool(t, "wg-quick")
	if wgQuick == "" {
		return
	}
	path := filepath.Join(t.TempDir(), "office.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(wgQuick, "strip", path).CombinedOutput()
	if err != nil {
		t.Fatalf("wg-quick strip: %v\n%s", err, out)
	}
	for _, line := range []string{"[Interface]", "[Peer]", "Endpoint = vpn.example.net:51999"} {
		if !hasLine(string(out), line) {
			t.Errorf("wg-quick strip output has no line %q:\n%s", line, out)
		}
	}
}
