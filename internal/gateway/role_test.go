package gateway

import (
	"strings"
	"testing"
	"time"
)

// roleEvent is one input to roleState: an address observation (netlink
// event or periodic re-list) or a keepalived notify.
type roleEvent struct {
	addr   *bool  // observed presence of the floating IP
	notify string // keepalived state
}

func present() roleEvent { v := true; return roleEvent{addr: &v} }
func absent() roleEvent  { v := false; return roleEvent{addr: &v} }
func notify(s string) roleEvent {
	return roleEvent{notify: s}
}

func TestRoleDecisions(t *testing.T) {
	tests := []struct {
		name     string
		watching bool
		events   []roleEvent
		want     []Role // role after each event
		reason   string // substring of the final reason
		changes  uint64
	}{
		{name: "no floating IP: always active", watching: false, events: nil, want: nil, reason: "always active"},
		{name: "floating IP present at start", watching: true, events: []roleEvent{present()}, want: []Role{RoleActive}, reason: "floating IP present", changes: 1},
		{name: "floating IP absent at start", watching: true, events: []roleEvent{absent()}, want: []Role{RoleStandby}, reason: "floating IP absent"},
		{name: "netlink add then remove", watching: true,
			events: []roleEvent{absent(), present(), absent()}, want: []Role{RoleStandby, RoleActive, RoleStandby}, reason: "absent", changes: 2},
		{name: "re-list with no change keeps the role", watching: true,
			events: []roleEvent{present(), present(), present()}, want: []Role{RoleActive, RoleActive, RoleActive}, changes: 1},
		{name: "notify master before the address arrives", watching: true,
			events: []roleEvent{absent(), notify(NotifyMaster), absent(), present()},
			// The re-list finding the address still absent does not undo
			// the notify; the address arriving agrees with it.
			want: []Role{RoleStandby, RoleActive, RoleActive, RoleActive}, reason: "floating IP present", changes: 1},
		{name: "notify backup overrides a present address until it changes", watching: true,
			events: []roleEvent{present(), notify(NotifyBackup), present(), absent(), present()},
			want:   []Role{RoleActive, RoleStandby, RoleStandby, RoleStandby, RoleActive}, reason: "present", changes: 3},
		{name: "fault and stop mean standby", watching: true,
			events: []roleEvent{present(), notify(NotifyFault), notify(NotifyMaster), notify(NotifyStop)},
			want:   []Role{RoleActive, RoleStandby, RoleActive, RoleStandby}, reason: "notify: stop", changes: 4},
		{name: "address removed after notify backup: agreement", watching: true,
			events: []roleEvent{present(), notify(NotifyBackup), absent()}, want: []Role{RoleActive, RoleStandby, RoleStandby}, reason: "absent", changes: 2},
		{name: "address change ends a master override", watching: true,
			events: []roleEvent{present(), notify(NotifyMaster), absent()}, want: []Role{RoleActive, RoleActive, RoleStandby}, reason: "absent", changes: 2},
		{name: "no floating IP: notify still drives the role", watching: false,
			events: []roleEvent{notify(NotifyBackup), notify(NotifyMaster)}, want: []Role{RoleStandby, RoleActive}, reason: "notify: master", changes: 2},
		{name: "repeated notify is no change", watching: true,
			events: []roleEvent{absent(), notify(NotifyMaster), notify(NotifyMaster)}, want: []Role{RoleStandby, RoleActive, RoleActive}, changes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Unix(1700000000, 0)
			r := newRoleState(tt.watching, t0)
			wantStart := RoleActive
			if tt.watching {
				wantStart = RoleStandby // silent until the address is known
			}
			if r.role != wantStart {
				t.Fatalf("initial role %s, want %s", r.role, wantStart)
			}
			for i, ev := range tt.events {
				now := t0.Add(time.Duration(i+1) * time.Second)
				before := r.role
				var changed bool
				if ev.addr != nil {
					changed = r.observe(*ev.addr, "test", now)
				} else {
					var err error
					if changed, err = r.notify(ev.notify, now); err != nil {
						t.Fatal(err)
					}
				}
				if r.role != tt.want[i] {
					t.Fatalf("after event %d: role %s, want %s (reason %q)", i, r.role, tt.want[i], r.reason)
				}
				if changed != (before != r.role) {
					t.Fatalf("after event %d: changed=%v but %s -> %s", i, changed, before, r.role)
				}
				if changed && !r.since.Equal(now) {
					t.Fatalf("after event %d: since %v, want %v", i, r.since, now)
				}
			}
			if !strings.Contains(r.reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", r.reason, tt.reason)
			}
			if r.changes != tt.changes {
				t.Errorf("changes = %d, want %d", r.changes, tt.changes)
			}
		})
	}
}

func TestRoleNotifyRejectsUnknownState(t *testing.T) {
	r := newRoleState(true, time.Now())
	if _, err := r.notify("MASTER!", time.Now()); err == nil {
		t.Fatal("unknown state accepted")
	}
	if r.overridden || r.notified {
		t.Fatal("a rejected notify changed the state")
	}
}

func TestHAMode(t *testing.T) {
	if newRoleState(false, time.Now()).haMode() {
		t.Error("a lone gateway is in active-passive mode")
	}
	if !newRoleState(true, time.Now()).haMode() {
		t.Error("a gateway with a floating IP is not in active-passive mode")
	}
	r := newRoleState(false, time.Now())
	if _, err := r.notify(NotifyMaster, time.Now()); err != nil || !r.haMode() {
		t.Error("keepalived notify does not switch on active-passive mode")
	}
}
