package gateway

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

func TestNotifySocket(t *testing.T) {
	g, _ := haGateway(t, netip192())
	dir := g.cfg.DataDir
	ln, err := listenNotify(dir)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); g.serveNotify(ln) }()
	defer func() { ln.Close(); <-done }()

	fi, err := os.Lstat(filepath.Join(dir, notifySocketName))
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	ctx := context.Background()
	if role, err := Notify(ctx, dir, NotifyMaster); err != nil || role != RoleActive {
		t.Fatalf("master: %s %v", role, err)
	}
	if info := g.roles.get(); info.Role != RoleActive || info.Reason != "keepalived notify: master" {
		t.Fatalf("after master: %+v", info)
	}
	for _, state := range []string{NotifyBackup, NotifyFault, NotifyStop} {
		if role, err := Notify(ctx, dir, state); err != nil || role != RoleStandby {
			t.Fatalf("%s: %s %v", state, role, err)
		}
	}
	if _, err := Notify(ctx, dir, "promote"); err == nil || !strings.Contains(err.Error(), "unknown state") {
		t.Fatalf("unknown state: %v", err)
	}
	// The server checks too, whatever a client sends.
	c, err := net.Dial("unix", filepath.Join(dir, notifySocketName))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("promote\n"))
	answer, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(answer, "error unknown notify state") {
		t.Fatalf("server answer to a bad state: %q", answer)
	}

	// A second gateway on the same data dir is refused.
	if _, err := listenNotify(dir); err == nil || !strings.Contains(err.Error(), "another gateway") {
		t.Fatalf("second listener: %v", err)
	}
	// The client refuses a socket others may use.
	p := filepath.Join(dir, notifySocketName)
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Notify(ctx, dir, NotifyMaster); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("world-writable socket: %v", err)
	}
	if os.Getuid() == 0 {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Notify(ctx, dir, NotifyMaster); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("socket of another user: %v", err)
		}
	}
}

// netip192 is a floating IP that is on no interface here (TEST-NET-1).
func netip192() netip.Addr { return netip.MustParseAddr("192.0.2.254") }

func TestNotifySocketPaths(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	if _, err := NotifySocketPath(long); err == nil || !strings.Contains(err.Error(), "use a shorter --data-dir") {
		t.Fatalf("long path: %v", err)
	}
	if _, err := listenNotify(long); err == nil {
		t.Fatal("listened on a path that is too long")
	}
	if _, err := Notify(context.Background(), long, NotifyMaster); err == nil || !strings.Contains(err.Error(), "107") {
		t.Fatalf("client with a long path: %v", err)
	}
	dir := t.TempDir()
	if _, err := Notify(context.Background(), dir, NotifyMaster); err == nil || !strings.Contains(err.Error(), "no gateway runs") {
		t.Fatalf("no gateway: %v", err)
	}
	// A regular file where the socket belongs: refused by both sides.
	p := filepath.Join(dir, notifySocketName)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Notify(context.Background(), dir, NotifyMaster); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Fatalf("regular file: %v", err)
	}
	if _, err := listenNotify(dir); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen over a regular file: %v", err)
	}
	// A socket left by a crashed gateway is replaced.
	os.Remove(p)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := listenNotify(dir)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
}

func TestHealthcheck(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/slow":
			time.Sleep(300 * time.Millisecond)
		case !ready:
			http.Error(w, `{"error":{"code":"not_ready","message":"interface is down"}}`, http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := Healthcheck(ctx, srv.URL+"/readyz", time.Second); err != nil {
		t.Fatalf("ready: %v", err)
	}
	ready = false
	if err := Healthcheck(ctx, srv.URL+"/readyz", time.Second); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "interface is down") {
		t.Fatalf("not ready: %v", err)
	}
	if err := Healthcheck(ctx, srv.URL+"/slow", 100*time.Millisecond); err == nil {
		t.Fatal("slow answer accepted")
	}
	for addr, want := range map[string]string{":50067": "http://127.0.0.1:50067/readyz", "10.0.0.2:9": "http://10.0.0.2:9/readyz",
		"[::]:1": "http://[::1]:1/readyz", "0.0.0.0:2": "http://127.0.0.1:2/readyz"} {
		if got, err := HealthURL(addr); err != nil || got != want {
			t.Errorf("HealthURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := HealthURL("nonsense"); err == nil {
		t.Error("HealthURL accepted an address without port")
	}
}

// TestStandbyReadyz: a configured standby answers 200 on /readyz and says
// what it is on /status and /metrics.
func TestStandbyReadyz(t *testing.T) {
	g, _ := haGateway(t, netip192())
	if _, err := g.applySnapshot(&gw.Snapshot{Revision: 1, Interface: testInterface(t), Peers: []*gw.Peer{peerMsg(genKey(t), "10.10.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.healthHandler())
	defer srv.Close()
	if err := Healthcheck(context.Background(), srv.URL+"/readyz", time.Second); err != nil {
		t.Fatalf("standby readyz: %v", err)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := new(strings.Builder)
	_, _ = bufio.NewReader(resp.Body).WriteTo(body)
	resp.Body.Close()
	for _, want := range []string{"ward_gateway_active 0", "ward_gateway_role_changes_total 0", "ward_gateway_ready 1"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	st := g.Status()
	if st.Role != RoleStandby || !strings.Contains(st.RoleReason, "192.0.2.254 on no interface") || st.RoleSince == 0 || st.FloatingIPs[0] != "192.0.2.254" {
		t.Fatalf("status role %s %q since %d ips %v", st.Role, st.RoleReason, st.RoleSince, st.FloatingIPs)
	}
}
