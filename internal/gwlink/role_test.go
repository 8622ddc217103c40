package gwlink_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/gateway"
	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/gwlink"
	"github.com/wardvpn/ward/internal/store"
)

// TestGatewayRoleRecorded runs two core replicas (two link managers on one
// database) and a real gateway without a floating IP: both links record it
// active from its Hello, with the gateway's own since. keepalived's notify
// then makes it standby and active again; every change reaches both links
// and the gateway's summary role. Once the gateway stops, its role is
// unknown while each link keeps the last role it heard.
func TestGatewayRoleRecorded(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log, vpnSvc, statsSvc, admin, ca, loc := newLinkFixture(t, ctx, db, "10.11.0.0/24")
		control, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		created, err := vpnSvc.CreateGateway(ctx, admin, loc.ID, vpn.ComponentInput{Name: ptr("gw-a"), ControlAddress: ptr(control.Addr().String())})
		if err != nil {
			t.Fatal(err)
		}
		dataDir := t.TempDir()
		g, err := gateway.New(gateway.Config{DataDir: dataDir, Interface: "wgtest", StatsInterval: time.Hour, JoinToken: created.Token,
			NewEngine: func(mtu int) (wgengine.Engine, error) {
				return wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), MTU: mtu}), nil
			}}, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		gwDone := make(chan error, 1)
		gwCtx, stopGateway := context.WithCancel(ctx)
		defer stopGateway()
		go func() { gwDone <- g.Serve(gwCtx, control, nil) }()

		var managers []chan struct{}
		for _, id := range []string{"core-1", "core-2"} {
			m, err := gwlink.New(vpnSvc, statsSvc, ca, id, "test", log, gwlink.Options{Reconcile: 100 * time.Millisecond, RevisionPoll: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); m.Run(ctx) }()
			managers = append(managers, done)
		}
		defer func() {
			cancel()
			for _, d := range managers {
				<-d
			}
		}()

		status := func() *vpn.GatewayStatus {
			c, err := vpnSvc.GetGateway(ctx, admin, loc.ID, created.ID)
			if err != nil {
				t.Fatal(err)
			}
			return c.Status
		}
		// wantRole waits until both links and the summary show role since
		// the gateway's own RoleSince.
		wantRole := func(what string, role string) {
			t.Helper()
			var st *vpn.GatewayStatus
			since := g.Status().RoleSince
			ok := func() bool {
				st = status()
				if st.Role != role || st.RoleSince != since || len(st.Links) != 2 {
					return false
				}
				for _, l := range st.Links {
					if !l.Connected || l.Role != role || l.RoleSince != since {
						return false
					}
				}
				return true
			}
			deadline := time.Now().Add(10 * time.Second)
			for !ok() {
				if time.Now().After(deadline) {
					t.Fatalf("%s: core shows role %q since %d, links %+v; want %q since %d on both links", what, st.Role, st.RoleSince, st.Links, role, since)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}

		if st := g.Status(); st.Role != gateway.RoleActive {
			t.Fatalf("gateway without floating IP: role %s", st.Role)
		}
		wantRole("connected, no floating IP", vpn.RoleActive)

		if role, err := gateway.Notify(ctx, dataDir, gateway.NotifyBackup); err != nil || role != gateway.RoleStandby {
			t.Fatalf("notify backup = %s, %v", role, err)
		}
		changed := time.Now()
		wantRole("after notify backup", vpn.RoleStandby)
		t.Logf("standby reached core on both links %s after notify", time.Since(changed).Round(time.Millisecond))

		if role, err := gateway.Notify(ctx, dataDir, gateway.NotifyMaster); err != nil || role != gateway.RoleActive {
			t.Fatalf("notify master = %s, %v", role, err)
		}
		wantRole("after notify master", vpn.RoleActive)
		activeSince := g.Status().RoleSince

		stopGateway()
		if err := <-gwDone; err != nil {
			t.Fatal(err)
		}
		waitFor(t, "core sees the gateway gone", 10*time.Second, func() bool { return !status().Connected })
		st := status()
		if st.Role != vpn.RoleUnknown || st.RoleSince != 0 {
			t.Fatalf("disconnected gateway: role %q since %d, want unknown", st.Role, st.RoleSince)
		}
		for _, l := range st.Links {
			if l.Role != vpn.RoleActive || l.RoleSince != activeSince {
				t.Fatalf("disconnected link %+v: want the last reported role, active since %d", l, activeSince)
			}
		}
	})
}
