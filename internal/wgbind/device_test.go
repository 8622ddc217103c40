package wgbind

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

const gwListenPort = 51820

// TestDeviceEndpointStaysOnVIP runs two real wireguard-go devices, one per
// namespace, with the client's endpoint set to the gateway's VIP. After
// traffic through the tunnel the client's peer endpoint must still be the VIP:
// if the gateway answered from its primary address, WireGuard roaming would
// have moved the client there and a VRRP failover could never reach it.
func TestDeviceEndpointStaysOnVIP(t *testing.T) {
	cases := []struct {
		name   string
		bind   func() conn.Bind
		strict bool // false: the stock Bind is only observed
	}{
		{"wgbind", New, true},
		{"stdnetbind", conn.NewStdNetBind, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			vip := netip.AddrPortFrom(n.v4.vip, gwListenPort)
			r := randomBytes(t, 1)
			gwTunIP := netip.AddrFrom4([4]byte{192, 168, r[0], 1})
			clTunIP := netip.AddrFrom4([4]byte{192, 168, r[0], 2})
			gwKey, clKey := newKey(t), newKey(t)

			gw := startDevice(t, n.gwNS, n.gwName, n.id+"tg", &nsBind{Bind: tc.bind(), ns: n.gwNS},
				fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nallowed_ip=%s/32\n",
					hexKey(gwKey), gwListenPort, hexKey(clKey.PublicKey()), clTunIP),
				gwTunIP)
			cl := startDevice(t, n.clNS, n.clName, n.id+"tc", &nsBind{Bind: conn.NewStdNetBind(), ns: n.clNS},
				fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/24\n",
					hexKey(clKey), hexKey(gwKey.PublicKey()), vip, gwTunIP),
				clTunIP)

			echo := listenUDPIn(t, n.gwNS, "udp4", netip.AddrPortFrom(gwTunIP, 7000))
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := echo.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
				}
			}()
			client := listenUDPIn(t, n.clNS, "udp4", netip.AddrPortFrom(clTunIP, 0))
			rtts := tunnelPings(t, client, netip.AddrPortFrom(gwTunIP, 7000), 5)
			t.Logf("%d UDP echoes through the tunnel, first (with handshake) %v, last %v", len(rtts), rtts[0], rtts[len(rtts)-1])

			clEndpoint := peerEndpoint(t, cl)
			gwEndpoint := peerEndpoint(t, gw)
			t.Logf("gateway bind %s: client's peer endpoint %s, gateway's peer endpoint %s", tc.name, clEndpoint, gwEndpoint)
			if !strings.HasPrefix(gwEndpoint, n.v4.client.String()+":") {
				t.Errorf("gateway sees the client at %s, want %s:<port>", gwEndpoint, n.v4.client)
			}
			switch {
			case clEndpoint == vip.String():
				if !tc.strict {
					t.Logf("the stock Bind kept the client on the VIP on this kernel")
				}
			case tc.strict:
				t.Errorf("client's endpoint roamed to %s, want %s", clEndpoint, vip)
			default:
				t.Logf("the stock Bind made the client roam from %s to %s (bug reproduced)", vip, clEndpoint)
			}
		})
	}
}

func newKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func hexKey(k interface{ Bytes() []byte }) string { return hex.EncodeToString(k.Bytes()) }

// startDevice creates a TUN inside ns, a wireguard-go device on it, applies
// uapi, brings it up and addresses the TUN. Cleanup closes the device (and
// with it the TUN and the Bind) before the namespaces go away.
func startDevice(t *testing.T, ns netns.NsHandle, nsName, tunName string, bind conn.Bind, uapi string, addr netip.Addr) *device.Device {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN support, cannot run wireguard-go devices: %v", err)
	}
	var logMu sync.Mutex
	var logs strings.Builder
	logf := func(format string, args ...any) {
		logMu.Lock()
		fmt.Fprintf(&logs, tunName+": "+format+"\n", args...)
		logMu.Unlock()
	}
	t.Cleanup(func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("wireguard-go log:\n%s", logs.String())
			logMu.Unlock()
		}
	})

	var dev *device.Device
	err := runIn(ns, func() error {
		td, err := tun.CreateTUN(tunName, 1420)
		if err != nil {
			return err
		}
		// Created here so the first MTU lookup happens inside ns too.
		dev = device.NewDevice(td, bind, &device.Logger{Verbosef: logf, Errorf: logf})
		return nil
	})
	if err != nil {
		t.Fatalf("creating TUN %s in namespace %s: %v", tunName, nsName, err)
	}
	t.Cleanup(dev.Close)
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatalf("IpcSet: %v", err)
	}
	if err := dev.Up(); err != nil {
		t.Fatalf("device up: %v", err)
	}
	mustIP(t, "-n", nsName, "addr", "add", cidr(addr, 24), "dev", tunName)
	mustIP(t, "-n", nsName, "link", "set", tunName, "up")
	return dev
}

// tunnelPings sends count UDP echoes through the tunnel and returns their
// round-trip times. The first one waits for the handshake, so it is retried.
func tunnelPings(t *testing.T, c *net.UDPConn, to netip.AddrPort, count int) []time.Duration {
	t.Helper()
	var rtts []time.Duration
	buf := make([]byte, 1500)
	deadline := time.Now().Add(20 * time.Second)
	for seq := 0; len(rtts) < count; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d echoes came back through the tunnel", len(rtts), count)
		}
		msg := fmt.Sprintf("ping-%d", seq)
		start := time.Now()
		if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
			t.Fatalf("send through tunnel: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // lost (e.g. during the handshake): next seq
			}
			if string(buf[:n]) == msg {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	return rtts
}

// peerEndpoint reads the single peer's endpoint from the device's UAPI state.
func peerEndpoint(t *testing.T, dev *device.Device) string {
	t.Helper()
	state, err := dev.IpcGet()
	if err != nil {
		t.Fatalf("IpcGet: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(state))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "endpoint="); ok {
			return v
		}
	}
	t.Fatalf("no endpoint in device state:\n%s", state)
	return ""
}
