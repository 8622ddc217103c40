package gateway

import (
	"fmt"
	"sync"
	"time"
)

// Role is what a gateway does in an active-passive pair: the active one
// holds the floating IP and serves clients, a standby keeps its
// configuration current and stays silent.
type Role string

const (
	RoleActive  Role = "active"
	RoleStandby Role = "standby"
)

// Notify states, as keepalived names them (notify_master, notify_backup,
// notify_fault; "stop" is keepalived 2.x's notify_stop).
const (
	NotifyMaster = "master"
	NotifyBackup = "backup"
	NotifyFault  = "fault"
	NotifyStop   = "stop"
)

// roleState decides the role from two sources:
//   - the floating IP's presence on a local interface (netlink), the
//     ground truth when --floating-ip is set;
//   - keepalived's notify hook, which arrives at the same moment or a
//     little before the address moves, and which also covers setups where
//     the address is not visible here.
//
// A notify overrides the address until the address's presence changes
// again; a re-list that finds the same presence keeps the override. Without
// floating IPs the base role is active (a single gateway, or active-active
// behind a load balancer), which notify can still override.
type roleState struct {
	watching bool // floating IPs configured

	observed bool   // an address observation was made
	present  bool   // the floating IP was on an interface at the last observation
	where    string // description of the observation, for the reason

	overridden bool
	override   Role
	overrideBy string

	role    Role
	reason  string
	since   time.Time
	changes uint64
	// notified: a notify hook has been heard at least once, so keepalived
	// drives this gateway even without --floating-ip.
	notified bool
}

func newRoleState(watching bool, now time.Time) *roleState {
	r := &roleState{watching: watching, since: now}
	if watching {
		// Until the first observation, stay silent: sending from a node that
		// does not hold the floating IP is what strands clients.
		r.role, r.reason = RoleStandby, "floating IP not checked yet"
	} else {
		r.role, r.reason = RoleActive, "no floating IP configured: always active"
	}
	return r
}

// observe records the floating IP's presence. It reports whether the role
// changed.
func (r *roleState) observe(present bool, where string, now time.Time) bool {
	if !r.observed || present != r.present {
		r.overridden = false // a change of the address ends any notify override
	}
	r.observed, r.present, r.where = true, present, where
	return r.decide(now)
}

// notify records a keepalived notify state; it reports whether the role
// changed.
func (r *roleState) notify(state string, now time.Time) (bool, error) {
	switch state {
	case NotifyMaster:
		r.override = RoleActive
	case NotifyBackup, NotifyFault, NotifyStop:
		r.override = RoleStandby
	default:
		return false, fmt.Errorf("unknown notify state %q (want master, backup, fault or stop)", state)
	}
	r.overridden, r.overrideBy, r.notified = true, state, true
	return r.decide(now), nil
}

func (r *roleState) decide(now time.Time) bool {
	role, reason := r.role, r.reason
	switch {
	case r.overridden:
		role, reason = r.override, "keepalived notify: "+r.overrideBy
	case !r.watching:
		role, reason = RoleActive, "no floating IP configured: always active"
	case !r.observed:
		role, reason = RoleStandby, "floating IP not checked yet"
	case r.present:
		role, reason = RoleActive, "floating IP present: "+r.where
	default:
		role, reason = RoleStandby, "floating IP absent: "+r.where
	}
	r.reason = reason
	if role == r.role {
		return false
	}
	r.role, r.since = role, now
	r.changes++
	return true
}

// haMode tells whether this gateway takes part in active-passive failover,
// which is when taking over initiates handshakes. A lone or load-balanced
// gateway does not initiate: its replies would not leave from a shared
// address, and clients would roam to the node's own one.
func (r *roleState) haMode() bool { return r.watching || r.notified }

// roleInfo is a consistent copy of the role for status and decisions.
type roleInfo struct {
	Role    Role
	Reason  string
	Since   time.Time
	Changes uint64
	HA      bool
}

// roles guards roleState for the gateway's goroutines.
type roles struct {
	mu sync.Mutex
	st *roleState
}

func (r *roles) get() roleInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return roleInfo{Role: r.st.role, Reason: r.st.reason, Since: r.st.since, Changes: r.st.changes, HA: r.st.haMode()}
}

func (r *roles) active() bool { return r.get().Role == RoleActive }

func (r *roles) observe(present bool, where string) (roleInfo, bool) {
	r.mu.Lock()
	changed := r.st.observe(present, where, time.Now())
	r.mu.Unlock()
	return r.get(), changed
}

func (r *roles) notify(state string) (roleInfo, bool, error) {
	r.mu.Lock()
	changed, err := r.st.notify(state, time.Now())
	r.mu.Unlock()
	return r.get(), changed, err
}
