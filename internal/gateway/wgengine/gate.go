package wgengine

import (
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// standbyGate wraps the TUN device given to wireguard-go so that a standby
// device stays down. wireguard-go calls Device.Up by itself on every EventUp
// of its TUN: once at creation (netstack) and on every link notification of
// a running interface (Linux TUN: MTU or flag changes). A standby gateway
// that came up that way would answer and initiate handshakes again. While
// standby is set, EventUp is dropped; EventDown and MTU updates always pass.
//
// An EventUp read just before standby is set can still reach the device
// after SetActive(false) (wireguard-go then brings it up by itself): after
// forwarding an EventUp the gate calls upForwarded, with which the engine
// re-asserts a standby that was set meanwhile.
type standbyGate struct {
	tun.Device
	standby     atomic.Bool
	events      chan tun.Event
	upForwarded func()
}

// newStandbyGate starts the forwarder; it ends when the TUN device closes
// its event channel (on Close), and then closes its own.
func newStandbyGate(t tun.Device, standby bool, upForwarded func()) *standbyGate {
	g := &standbyGate{Device: t, events: make(chan tun.Event), upForwarded: upForwarded}
	g.standby.Store(standby)
	go g.forward()
	return g
}

func (g *standbyGate) Events() <-chan tun.Event { return g.events }

func (g *standbyGate) forward() {
	defer close(g.events)
	for ev := range g.Device.Events() {
		if g.standby.Load() {
			ev &^= tun.EventUp
		}
		if ev != 0 {
			g.events <- ev
			if ev&tun.EventUp != 0 && g.upForwarded != nil {
				g.upForwarded()
			}
		}
	}
}
