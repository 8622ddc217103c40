package gwlink_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/gateway"
	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/gwlink"
	"github.com/wardvpn/ward/internal/pki"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

func ptr[T any](v T) *T { return &v }

// newLinkFixture is an instance with an admin, the CA and one location
// ("office", network cidr): what core's gateway links need.
func newLinkFixture(t *testing.T, ctx context.Context, db *store.DB, cidr string) (*slog.Logger, *vpn.Service, *stats.Service, core.Actor, *pki.CA, vpn.Location) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	vpnSvc := vpn.New(db, log)
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, vpnSvc, nil)
	if _, err := ident.EnsureAdmin(ctx, "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	var adminID string
	if err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE username = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	admin := core.Actor{UserID: adminID, Username: "admin", IsAdmin: true}
	ca, err := pki.EnsureCA(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := vpnSvc.CreateLocation(ctx, admin, vpn.LocationInput{Name: ptr("office"), Addresses: ptr([]string{cidr}),
		Endpoint: ptr("vpn.example.com")})
	if err != nil {
		t.Fatal(err)
	}
	return log, vpnSvc, stats.New(db), admin, ca, loc
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestEndpointsReachGatewayAndTakeover runs core's gateway link (gwlink with
// a real database) and a real gateway (netstack engine) over the mutual-TLS
// control stream. Another gateway of the location reports a handshake with
// a client; core sends that endpoint to this gateway, which is standby.
// keepalived's notify makes it master: it initiates the handshake to a
// client it never heard from, and the endpoint survives a restart on disk.
func TestEndpointsReachGatewayAndTakeover(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log, vpnSvc, statsSvc, admin, ca, loc := newLinkFixture(t, ctx, db, "10.10.0.0/24")
		dev, err := vpnSvc.CreateDevice(ctx, admin, vpn.NewDevice{Name: "laptop", GenerateKey: true})
		if err != nil {
			t.Fatal(err)
		}
		var devAddr string
		for _, a := range dev.Addresses {
			if a.LocationID == loc.ID {
				devAddr = a.Address
			}
		}

		control, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		created, err := vpnSvc.CreateGateway(ctx, admin, loc.ID, vpn.ComponentInput{Name: ptr("gw-a"), ControlAddress: ptr(control.Addr().String())})
		if err != nil {
			t.Fatal(err)
		}
		dataDir := t.TempDir()
		var eng atomic.Pointer[wgengine.Netstack]
		cfg := gateway.Config{DataDir: dataDir, Interface: "wgtest", StatsInterval: time.Hour, JoinToken: created.Token,
			NewEngine: func(mtu int) (wgengine.Engine, error) {
				e := wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), MTU: mtu})
				eng.Store(e)
				return e, nil
			}}
		g, err := gateway.New(cfg, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		gwDone := make(chan error, 1)
		gwCtx, stopGateway := context.WithCancel(ctx)
		defer stopGateway()
		go func() { gwDone <- g.Serve(gwCtx, control, nil) }()

		m, err := gwlink.New(vpnSvc, statsSvc, ca, "core-1", "test", log, gwlink.Options{Reconcile: 100 * time.Millisecond, RevisionPoll: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		mDone := make(chan struct{})
		go func() { defer close(mDone); m.Run(ctx) }()
		defer func() { cancel(); <-mDone }()

		waitFor(t, "gateway adopted with the device as peer", 20*time.Second, func() bool {
			st := g.Status()
			return st.AppliedRevision > 0 && len(st.Peers) == 1 && st.Peers[0].PublicKey == dev.PublicKey
		})
		if st := g.Status(); st.Role != gateway.RoleActive || st.KnownEndpoints != 0 {
			t.Fatalf("before any handshake: role %s, known endpoints %d", st.Role, st.KnownEndpoints)
		}
		gwWG := eng.Load().ListenAddr()

		// keepalived makes this node backup: silent, socket closed.
		if role, err := gateway.Notify(ctx, dataDir, gateway.NotifyBackup); err != nil || role != gateway.RoleStandby {
			t.Fatalf("notify backup = %s, %v", role, err)
		}
		waitFor(t, "standby closes its socket", 2*time.Second, func() bool { return !eng.Load().ListenAddr().IsValid() })

		// The client talks to the other gateway; it reports the handshake.
		cl := wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
		defer cl.Close()
		if err := cl.Configure(wgengine.Interface{PrivateKey: dev.PrivateKey, Addresses: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(devAddr), 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := cl.Apply([]wgengine.PeerConfig{{PublicKey: loc.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24")},
			Endpoint: gwWG.String()}}, nil); err != nil {
			t.Fatal(err)
		}
		clientEP := cl.ListenAddr().String()
		seen := time.Now().Add(-3 * time.Second).UnixMilli()
		ingested := time.Now()
		if ok, err := statsSvc.Ingest(ctx, stats.Report{GatewayID: "gw-b", LocationID: loc.ID, BootID: "boot-b", Seq: 1, At: time.Now().UnixMilli(),
			Samples: []stats.Sample{{PublicKey: dev.PublicKey, Generation: 1, RxBytes: 1, TxBytes: 1, LastHandshake: seen, Endpoint: clientEP}}}); err != nil || !ok {
			t.Fatalf("ingest = %v, %v", ok, err)
		}
		waitFor(t, "endpoint reaches the gateway", 5*time.Second, func() bool { return g.Status().KnownEndpoints == 1 })
		t.Logf("endpoint from another gateway's statistics reached this gateway %s after ingestion (poll 100 ms)", time.Since(ingested).Round(time.Millisecond))
		time.Sleep(200 * time.Millisecond)
		if p := onlyPeer(t, cl); !p.LastHandshake.IsZero() {
			t.Fatalf("a standby gateway shook hands with the client: %+v", p)
		}

		// Master: the gateway initiates, the client never sent a packet.
		if role, err := gateway.Notify(ctx, dataDir, gateway.NotifyMaster); err != nil || role != gateway.RoleActive {
			t.Fatalf("notify master = %s, %v", role, err)
		}
		took := waitFor(t, "handshake after takeover", 2*time.Second, func() bool { return !onlyPeer(t, cl).LastHandshake.IsZero() })
		t.Logf("notify master -> client handshake complete in %s", took.Round(100*time.Microsecond))
		st := g.Status()
		if st.Role != gateway.RoleActive || st.RoleReason != "keepalived notify: master" || st.LastTakeover == nil || st.LastTakeover.Initiated != 1 {
			t.Fatalf("status after takeover: role %s (%s), takeover %+v", st.Role, st.RoleReason, st.LastTakeover)
		}
		if st.Peers[0].Endpoint != clientEP {
			t.Fatalf("gateway's endpoint for the client = %q, want %q", st.Peers[0].Endpoint, clientEP)
		}

		// The endpoint is on disk: a restart while core is away keeps it.
		stopGateway()
		if err := <-gwDone; err != nil {
			t.Fatal(err)
		}
		g2, err := gateway.New(gateway.Config{DataDir: dataDir, Interface: "wgtest", StatsInterval: time.Hour,
			NewEngine: func(mtu int) (wgengine.Engine, error) {
				return wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), MTU: mtu}), nil
			}}, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		if st := g2.Status(); st.KnownEndpoints != 1 || st.AppliedRevision == 0 {
			t.Fatalf("restored gateway: known endpoints %d, revision %d", st.KnownEndpoints, st.AppliedRevision)
		}
		// Serve on a finished context only tears the restored engine down.
		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done, stop := context.WithCancel(ctx)
		stop()
		if err := g2.Serve(done, ln2, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func onlyPeer(t *testing.T, e wgengine.Engine) wgengine.PeerState {
	t.Helper()
	peers, err := e.Peers()
	if err != nil || len(peers) != 1 {
		t.Fatalf("peers = %+v, %v", peers, err)
	}
	return peers[0]
}
