package client

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigPath(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, env, xdg, home, want string
	}{
		{"explicit file", filepath.Join(dir, "x", "c.json"), "", dir, filepath.Join(dir, "x", "c.json")},
		{"xdg", "", filepath.Join(dir, "xdg"), dir, filepath.Join(dir, "xdg", "ward", "client.json")},
		{"home", "", "", filepath.Join(dir, "home"), filepath.Join(dir, "home", ".config", "ward", "client.json")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(ConfigEnv, tc.env)
			t.Setenv("XDG_CONFIG_HOME", tc.xdg)
			t.Setenv("HOME", tc.home)
			got, err := ConfigPath()
			if err != nil || got != tc.want {
				t.Fatalf("ConfigPath() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func sampleConfig() *Config {
	return &Config{ProxyURL: "https://vpn.example.com", Username: "alice", DeviceID: "d1", DeviceName: "laptop",
		PrivateKey: "cHJpdmF0ZQ==", PublicKey: "cHVibGlj", SyncToken: "wardc_x", Completed: true,
		Locations: []Location{{ID: "L1", Name: "office", MFAMode: "internal", Endpoints: []string{"a:51820"}}}}
}

func TestConfigSaveLoadPermissions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		explicit bool // WARD_CLIENT_CONFIG names the file
		preDir   os.FileMode
		wantDir  os.FileMode
	}{
		{"default dir is created 0700", false, 0, 0o700},
		{"default dir is tightened to 0700", false, 0o755, 0o700},
		{"explicit dir is created 0700", true, 0, 0o700},
		{"explicit existing dir is left alone", true, 0o755, 0o755},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			t.Setenv("XDG_CONFIG_HOME", root)
			t.Setenv(ConfigEnv, "")
			dir := filepath.Join(root, "ward")
			if tc.explicit {
				dir = filepath.Join(root, "custom")
			}
			path := filepath.Join(dir, "client.json")
			if tc.explicit {
				t.Setenv(ConfigEnv, path)
			}
			if tc.preDir != 0 {
				if err := os.Mkdir(dir, tc.preDir); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tc.preDir); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ConfigPath()
			if err != nil || got != path {
				t.Fatalf("ConfigPath = %q, %v", got, err)
			}
			c := sampleConfig()
			if err := c.Save(path); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("file mode %v, want 0600", st.Mode().Perm())
			}
			dst, _ := os.Stat(dir)
			if dst.Mode().Perm() != tc.wantDir {
				t.Fatalf("dir mode %v, want %v", dst.Mode().Perm(), tc.wantDir)
			}
			// No temporary files stay behind.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("dir holds %d entries, want only client.json", len(ents))
			}
			back, err := LoadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if back.PrivateKey != c.PrivateKey || back.Version != configVersion || len(back.Locations) != 1 || back.Locations[0].Name != "office" {
				t.Fatalf("loaded %+v", back)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name     string
		path     string
		wantCode int
		wantMsg  string
	}{
		{"missing", filepath.Join(dir, "nope.json"), ExitNotEnrolled, "not enrolled"},
		{"damaged", write("bad.json", "{", 0o600), ExitError, "damaged"},
		{"newer version", write("new.json", `{"version": 99}`, 0o600), ExitError, "version 99"},
		{"incomplete", write("half.json", `{"version": 1, "proxy_url": "x"}`, 0o600), ExitNotEnrolled, "no complete enrollment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(tc.path)
			if ExitCode(err) != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("LoadConfig: %v (exit %d), want exit %d and %q", err, ExitCode(err), tc.wantCode, tc.wantMsg)
			}
		})
	}
	// A readable-by-others file is tightened when loaded.
	p := filepath.Join(dir, "loose.json")
	if err := sampleConfig().Save(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("loose file left at %v", st.Mode().Perm())
	}
}

func TestFindLocation(t *testing.T) {
	c := &Config{Locations: []Location{
		{ID: "id-1", Name: "Office"}, {ID: "id-2", Name: "lab"}, {ID: "id-3", Name: "Lab"}, {ID: "id-4", Name: "dc"}, {ID: "id-5", Name: "DC"}, {ID: "id-6", Name: "Dc"},
	}}
	for _, tc := range []struct {
		ref, wantID string
		wantCode    int
	}{
		{"id-2", "id-2", 0},
		{"Office", "id-1", 0},
		{"office", "id-1", 0}, // case-insensitive when unique
		{" lab ", "id-2", 0},  // exact name beats case-folded ones
		{"Lab", "id-3", 0},
		{"dC", "", ExitUsage}, // ambiguous
		{"nowhere", "", ExitNotEnrolled},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			l, err := c.FindLocation(tc.ref)
			if ExitCode(err) != tc.wantCode || l.ID != tc.wantID {
				t.Fatalf("FindLocation(%q) = %q, %v (exit %d); want %q, exit %d", tc.ref, l.ID, err, ExitCode(err), tc.wantID, tc.wantCode)
			}
		})
	}
	_, err := (&Config{}).FindLocation("x")
	if !strings.Contains(err.Error(), "known: none") {
		t.Fatalf("no locations: %v", err)
	}
}

func TestInterfaceName(t *testing.T) {
	for _, tc := range []struct{ name, id, want string }{
		{"office", "x", "ward-office"},
		{"Berlin Office #2", "x", "ward-berlin-off"},
		{"a-very-long-location-name", "x", "ward-a-very-lon"},
		{"ab---cdefghijk", "x", "ward-ab---cdefg"},
		{"abc-------", "x", "ward-abc"},
		{"!!!", "0A1B-2c3d", "ward-0a1b-2c3d"},
	} {
		got := InterfaceName(Location{Name: tc.name, ID: tc.id})
		if got != tc.want || len(got) > 15 || validInterface(got) != nil {
			t.Errorf("InterfaceName(%q) = %q, want %q (≤ 15, valid)", tc.name, got, tc.want)
		}
	}
	for _, bad := range []string{"", "sixteen-chars-xx", "a/b", "a b", "a:b"} {
		if ExitCode(validInterface(bad)) != ExitUsage {
			t.Errorf("validInterface(%q) accepted", bad)
		}
	}
}

func TestExitCodes(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"plain", errors.New("boom"), ExitError},
		{"usage", usagef("bad flag"), ExitUsage},
		{"wrapped client error", fmt.Errorf("x: %w", &Error{Code: ExitTunnel}), ExitTunnel},
		{"wrap keeps an API code", wrap(&APIError{Status: 400, Code: "invalid_code"}, ExitError, "", "mfa"), ExitAuth},
		{"wrap default", wrap(errors.New("x"), ExitTunnel, "", "tunnel"), ExitTunnel},
		{"dial refused", opErr, ExitUnavailable},
		{"deadline", context.DeadlineExceeded, ExitUnavailable},
		{"503", &APIError{Status: 503, Code: "core_unavailable"}, ExitUnavailable},
		{"502", &APIError{Status: 502}, ExitUnavailable},
		{"504", &APIError{Status: 504, Code: "core_timeout"}, ExitUnavailable},
		{"rate limited", &APIError{Status: 429, Code: "rate_limited"}, ExitUnavailable},
		{"too many attempts", &APIError{Status: 429, Code: "too_many_attempts"}, ExitAuth},
		{"wrong code", &APIError{Status: 400, Code: "invalid_code"}, ExitAuth},
		{"reused code", &APIError{Status: 400, Code: "code_used"}, ExitAuth},
		{"challenge expired", &APIError{Status: 401, Code: "challenge_expired"}, ExitAuth},
		{"client token", &APIError{Status: 401, Code: "invalid_client_token"}, ExitAuth},
		{"disabled", &APIError{Status: 403, Code: "account_disabled"}, ExitAuth},
		{"enrollment token expired", &APIError{Status: 404, Code: "token_expired"}, ExitAuth},
		{"unknown location", &APIError{Status: 404, Code: "not_found"}, ExitNotEnrolled},
		{"weak password", &APIError{Status: 400, Code: "weak_password"}, ExitUsage},
		{"conflict", &APIError{Status: 409, Code: "steps_remaining"}, ExitError},
		{"server error", &APIError{Status: 500, Code: "internal"}, ExitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(tc.err); got != tc.want {
				t.Fatalf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/public/client/sync":
			if r.Header.Get("Authorization") != "Bearer wardc_good" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(401)
				fmt.Fprint(w, `{"error":{"code":"invalid_client_token","message":"the client token is not valid; enroll the client again"}}`)
				return
			}
			fmt.Fprint(w, `{"device":{"id":"d1","name":"laptop"},"locations":[{"location_id":"L1","name":"office","mfa_mode":"internal","endpoints":["a:1","b:1"],"revision":3}]}`)
		case "/api/v1/public/vpn-mfa/finish":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"session":{"id":"s1","preshared_key":"psk"},"warning":{"code":"gateways_not_acknowledged","message":"slow"}}`)
		case "/api/v1/public/enrollment/down":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(503)
			fmt.Fprint(w, `{"error":{"code":"core_unavailable","message":"no core is connected to this proxy; try again shortly"}}`)
		default:
			w.WriteHeader(502)
			fmt.Fprint(w, "<html>bad gateway</html>")
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	api, err := NewAPI(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res, err := api.Sync(ctx, "wardc_good")
	if err != nil || len(res.Locations) != 1 || res.Locations[0].Endpoints[1] != "b:1" || res.Device.Name != "laptop" {
		t.Fatalf("sync: %+v %v", res, err)
	}
	_, err = api.Sync(ctx, "wardc_bad")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "invalid_client_token" || ExitCode(err) != ExitAuth || !strings.Contains(hintFor(ae, ""), "enroll") {
		t.Fatalf("bad token: %v", err)
	}
	fin, err := api.FinishMFA(ctx, "tok", "123456")
	if err != nil || fin.Session.PresharedKey != "psk" || fin.Warning == nil || fin.Warning.Code != "gateways_not_acknowledged" {
		t.Fatalf("202 finish: %+v %v", fin, err)
	}
	_, err = api.EnrollmentInfo(ctx, "down")
	if ExitCode(err) != ExitUnavailable || !strings.Contains(err.Error(), "core_unavailable") {
		t.Fatalf("503: %v", err)
	}
	_, err = api.Complete(ctx, "other")
	if ExitCode(err) != ExitUnavailable || !strings.Contains(err.Error(), "bad gateway") {
		t.Fatalf("non-JSON 502: %v", err)
	}

	// Nobody listens: exit 5 naming the proxy.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, _ := NewAPI("http://" + addr)
	_, err = dead.Sync(ctx, "wardc_good")
	if ExitCode(err) != ExitUnavailable || !strings.Contains(err.Error(), addr) {
		t.Fatalf("dead proxy: %v (exit %d)", err, ExitCode(err))
	}
	for _, bad := range []string{"", "vpn.example.com", "ftp://x", "http://"} {
		if _, err := NewAPI(bad); ExitCode(err) != ExitUsage {
			t.Errorf("NewAPI(%q): %v", bad, err)
		}
	}
}

func TestDiffLocations(t *testing.T) {
	old := []Location{
		{ID: "1", Name: "office", Endpoints: []string{"a:1"}, MFAMode: "internal"},
		{ID: "2", Name: "lab", DNS: []string{"10.0.0.53"}},
		{ID: "3", Name: "gone"},
	}
	cur := []Location{
		{ID: "1", Name: "office", Endpoints: []string{"a:1", "b:1"}, MFAMode: "disabled"},
		{ID: "2", Name: "lab", DNS: []string{"10.0.0.53"}},
		{ID: "4", Name: "new"},
	}
	d := DiffLocations(old, cur)
	if len(d.Added) != 1 || d.Added[0].Name != "new" || len(d.Removed) != 1 || d.Removed[0].Name != "gone" ||
		len(d.Changed) != 1 || strings.Join(d.Changed[0].Fields, ",") != "endpoints,mfa_mode" {
		t.Fatalf("diff = %+v", d)
	}
	if !DiffLocations(cur, cur).Empty() {
		t.Fatal("no change reported as a change")
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  string
		wantCode string
		wantFG   bool
	}{
		{[]string{"office", "--code", "123456"}, "office", "123456", false},
		{[]string{"--code=1", "office", "--foreground"}, "office", "1", true},
		{[]string{"--foreground", "--", "-odd-name"}, "-odd-name", "", true},
		{[]string{"a", "b"}, "a,b", "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		code := fs.String("code", "", "")
		fg := fs.Bool("foreground", false, "")
		pos, err := parseFlags(fs, tc.args)
		if err != nil || strings.Join(pos, ",") != tc.wantPos || *code != tc.wantCode || *fg != tc.wantFG {
			t.Errorf("parseFlags(%q) = %q, code %q, fg %v, %v", tc.args, pos, *code, *fg, err)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	if _, err := parseFlags(fs, []string{"--nope"}); ExitCode(err) != ExitUsage {
		t.Fatalf("unknown flag: %v", err)
	}
}

func TestMainUsageAndNotEnrolled(t *testing.T) {
	t.Setenv(ConfigEnv, filepath.Join(t.TempDir(), "client.json"))
	ctx := context.Background()
	for _, tc := range []struct {
		args     []string
		want     int
		inStderr string
	}{
		{nil, ExitUsage, "Usage:"},
		{[]string{"bogus"}, ExitUsage, "unknown command"},
		{[]string{"status"}, ExitNotEnrolled, "ward client enroll"},
		{[]string{"sync"}, ExitNotEnrolled, "not enrolled"},
		{[]string{"up", "office"}, ExitNotEnrolled, "not enrolled"},
		{[]string{"down", "office"}, ExitNotEnrolled, "not enrolled"},
		{[]string{"up"}, ExitUsage, "exactly one LOCATION"},
		{[]string{"up", "x", "--method", "sms"}, ExitUsage, "--method"},
		{[]string{"enroll"}, ExitUsage, "--url and --token"},
		{[]string{"enroll", "--url", "nota url", "--token", "t"}, ExitUsage, "--url"},
	} {
		var out, errOut bytes.Buffer
		got := Main(ctx, tc.args, strings.NewReader(""), &out, &errOut)
		if got != tc.want || !strings.Contains(errOut.String(), tc.inStderr) {
			t.Errorf("ward client %q = %d, stderr %q; want %d containing %q", tc.args, got, errOut.String(), tc.want, tc.inStderr)
		}
	}
	var out bytes.Buffer
	if got := Main(ctx, []string{"help"}, strings.NewReader(""), &out, &out); got != 0 || !strings.Contains(out.String(), "Exit codes") {
		t.Errorf("help = %d %q", got, out.String())
	}
}

func TestEnrollRefusesExistingEnrollment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.json")
	t.Setenv(ConfigEnv, path)
	if err := sampleConfig().Save(path); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"enroll", "--url", "http://127.0.0.1:1", "--token", "t"}, strings.NewReader(""), &out, &errOut)
	if code != ExitUsage || !strings.Contains(errOut.String(), "already enrolled as alice") || !strings.Contains(errOut.String(), "--force") {
		t.Fatalf("enroll over an enrollment = %d: %s", code, errOut.String())
	}
}

func TestRuntimeFiles(t *testing.T) {
	dir := t.TempDir()
	f := runtimeFiles(filepath.Join(dir, "client.json"), "../../etc/x")
	if filepath.Dir(f.pid) != dir || strings.Contains(filepath.Base(f.pid), "/") || !strings.HasPrefix(filepath.Base(f.pid), "tunnel-") {
		t.Fatalf("pid file %q escapes %q", f.pid, dir)
	}
	// Our own PID is alive but not a tunnel process; a dead PID is stale.
	if isTunnelProcess(os.Getpid()) {
		t.Fatal("the test binary taken for a tunnel process")
	}
	if err := os.WriteFile(f.pid, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if runningTunnel(f) != 0 {
		t.Fatal("a foreign PID counted as a running tunnel")
	}
	if _, err := os.Stat(f.pid); !os.IsNotExist(err) {
		t.Fatal("the stale pid file stayed")
	}
	if err := claimPIDFile(f.pid); err != nil {
		t.Fatal(err)
	}
	if pid, _ := readPID(f.pid); pid != os.Getpid() {
		t.Fatalf("claimed pid file holds %d", pid)
	}
	st := TunnelStatus{PID: 1, Location: "office", LastHandshake: time.Now().UnixMilli()}
	if err := writeStatus(f.status, st); err != nil {
		t.Fatal(err)
	}
	back, err := readStatus(f.status)
	if err != nil || back.Location != "office" {
		t.Fatalf("status: %+v %v", back, err)
	}
	if fi, _ := os.Stat(f.status); fi.Mode().Perm() != 0o600 {
		t.Fatalf("status file mode %v", fi.Mode().Perm())
	}
}
