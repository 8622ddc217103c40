package drill

// keepalived moves the VIP between the two gateway nodes: VRRPv3 with
// adverts every 100 ms, both nodes start as BACKUP with nopreempt (a node
// that comes back stays backup, so restoring a node between runs moves
// nothing), multicast over the router's bridge (mcast_snooping 0). Each
// instance has its own pid files (/run is shared by all namespaces).
//
// keepalived --dont-fork still runs VRRP in a child process; its PID is in
// the -r pid file. A node failure SIGKILLs both (the child first, or the
// parent's death would make it send a priority-0 goodbye); a planned
// switchover SIGTERMs the parent, whose child then sends priority 0.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kaConfig is one node's keepalived configuration.
type kaConfig struct {
	RouterID  string
	Interface string
	Priority  int
	// TrackScript, when set, is a command whose failure puts the node in
	// FAULT (the VIP leaves it).
	TrackScript string
	// Notify, when set, gets the new state (master, backup, fault) as its
	// last argument.
	Notify string
}

const vrid = 51

func (c kaConfig) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "global_defs {\n  router_id %s\n  vrrp_version 3\n  vrrp_garp_master_repeat 3\n", c.RouterID)
	if c.TrackScript != "" || c.Notify != "" {
		b.WriteString("  script_user root\n")
	}
	b.WriteString("}\n\n")
	if c.TrackScript != "" {
		fmt.Fprintf(&b, "vrrp_script gateway_ready {\n  script %q\n  interval 1\n  timeout 2\n  fall 2\n  rise 1\n}\n\n", c.TrackScript)
	}
	fmt.Fprintf(&b, "vrrp_instance drill {\n  state BACKUP\n  nopreempt\n  interface %s\n  virtual_router_id %d\n  priority %d\n  advert_int 0.1\n",
		c.Interface, vrid, c.Priority)
	fmt.Fprintf(&b, "  virtual_ipaddress {\n    %s dev %s\n  }\n", vipCIDR, c.Interface)
	if c.TrackScript != "" {
		b.WriteString("  track_script {\n    gateway_ready\n  }\n")
	}
	if c.Notify != "" {
		for _, st := range []string{"master", "backup", "fault"} {
			fmt.Fprintf(&b, "  notify_%s %q\n", st, c.Notify+" "+st)
		}
		// keepalived stopping (a planned switchover) demotes the node.
		fmt.Fprintf(&b, "  notify_stop %q\n", c.Notify+" backup")
	}
	b.WriteString("}\n")
	return b.String()
}

// Keepalived is one running keepalived.
type Keepalived struct {
	proc     *Proc
	conf     string
	vrrpPIDs string
}

// startKeepalived writes the config to dir/name.conf and starts keepalived
// in ns.
func startKeepalived(ns *NS, dir, name string, c kaConfig) (*Keepalived, error) {
	conf := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(conf, []byte(c.render()), 0o600); err != nil {
		return nil, err
	}
	k := &Keepalived{conf: conf, vrrpPIDs: filepath.Join(dir, name+"-vrrp.pid")}
	// A stale child pid file from a previous instance must not be trusted.
	_ = os.Remove(k.vrrpPIDs)
	p, err := startProc(ns, "keepalived "+name, filepath.Join(dir, name+".log"), nil, "keepalived",
		"--dont-fork", "--log-console", "--log-detail", "--vrrp", "-f", conf,
		"-p", filepath.Join(dir, name+".pid"), "-r", k.vrrpPIDs)
	if err != nil {
		return nil, err
	}
	k.proc = p
	return k, nil
}

// vrrpChild returns the PID of the VRRP child if it runs (0 otherwise).
func (k *Keepalived) vrrpChild() int {
	raw, err := os.ReadFile(k.vrrpPIDs)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 || !procAlive(pid, k.conf) {
		return 0
	}
	return pid
}

// waitChild waits until the VRRP child runs.
func (k *Keepalived) waitChild(ctx context.Context) error {
	err := waitFor(ctx, 10*time.Second, 20*time.Millisecond, k.proc.Label+" VRRP process", func() error {
		if k.proc.Exited() {
			return fmt.Errorf("keepalived ended: %v", k.proc.exitErr())
		}
		if k.vrrpChild() == 0 {
			return fmt.Errorf("no VRRP child in %s yet", k.vrrpPIDs)
		}
		return nil
	})
	if err != nil {
		return k.proc.failure(err)
	}
	return nil
}

// Kill SIGKILLs the VRRP child, then keepalived: no goodbye advert.
func (k *Keepalived) Kill() error {
	if pid := k.vrrpChild(); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL) // the VRRP child of our keepalived, checked by its command line
	}
	return k.proc.Kill()
}

// Term SIGTERMs keepalived (a graceful stop: priority-0 advert, the VIP
// moves at once) without waiting.
func (k *Keepalived) Term() error { return k.proc.Signal(syscall.SIGTERM) }

// Stop stops keepalived gracefully, SIGKILLing what remains after grace.
func (k *Keepalived) Stop(grace time.Duration) {
	child := k.vrrpChild()
	k.proc.Stop(grace)
	deadline := time.Now().Add(grace)
	for child != 0 && procAlive(child, k.conf) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if child != 0 && procAlive(child, k.conf) {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
}
