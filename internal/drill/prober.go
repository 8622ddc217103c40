package drill

// The prober: iputils ping from a client namespace to the gateway's tunnel
// address every 50 ms, through the tunnel:
//
//	ping -D -O -n -i 0.05 -W 1 10.77.0.1
//
// -D prefixes every line with the wall-clock time it was printed (reply
// received), which is all the drill uses: the outage of a fault is the time
// from the last reply before the fault (or before the silence that follows
// it) to the first reply of the recovery (see measure). Lines other than
// replies ("no answer yet", ICMP errors) are ignored; a reply line that
// does not parse is an error.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	probeInterval = 50 * time.Millisecond
	// bigGap: a longer silence (3 probes unanswered) starts an outage.
	bigGap = 3 * probeInterval
	// maxGap: a recovery with a longer silence in it is not yet stable.
	maxGap = 500 * time.Millisecond
	// stableFor: how long replies must keep coming to call the path back.
	stableFor = 1500 * time.Millisecond
)

var (
	replyRe     = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from [^ ]+: icmp_seq=\d+`)
	replyLikeRe = regexp.MustCompile(`bytes from .*icmp_seq=`)
)

// Prober runs one ping and records when replies arrived.
type Prober struct {
	Label string
	cmd   *exec.Cmd
	done  chan struct{}
	log   *os.File

	mu      sync.Mutex
	replies []time.Time
	bad     string // first reply line that did not parse
	waitErr error
}

// startProber starts ping in ns towards target; its raw output also goes to
// logPath.
func startProber(ns *NS, label, target, logPath string) (*Prober, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p := &Prober{Label: label, done: make(chan struct{}), log: f}
	interval := strconv.FormatFloat(probeInterval.Seconds(), 'f', -1, 64)
	p.cmd = exec.Command("ip", "netns", "exec", ns.Name, "ping", "-D", "-O", "-n", "-i", interval, "-W", "1", target)
	p.cmd.Env = cleanEnv("LC_ALL=C")
	p.cmd.SysProcAttr = childAttrs()
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	p.cmd.Stderr = f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start ping in %s: %w", ns.Name, err)
	}
	go p.read(out)
	return p, nil
}

func (p *Prober) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(p.log, line)
		at, ok, err := parseReply(line)
		p.mu.Lock()
		switch {
		case err != nil && p.bad == "":
			p.bad = line
		case ok:
			p.replies = append(p.replies, at)
		}
		p.mu.Unlock()
	}
	err := p.cmd.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
	p.log.Close()
	close(p.done)
}

// parseReply reads the -D time of a reply line; ok is false for other lines.
func parseReply(line string) (at time.Time, ok bool, err error) {
	m := replyRe.FindStringSubmatch(line)
	if m == nil {
		if len(line) > 0 && line[0] == '[' && replyLikeRe.MatchString(line) {
			return time.Time{}, false, fmt.Errorf("ping reply line not understood: %q", line)
		}
		return time.Time{}, false, nil
	}
	sec, err1 := strconv.ParseInt(m[1], 10, 64)
	frac := m[2]
	for len(frac) < 9 {
		frac += "0"
	}
	nsec, err2 := strconv.ParseInt(frac[:9], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, false, fmt.Errorf("ping time stamp in %q: %v %v", line, err1, err2)
	}
	return time.Unix(sec, nsec), true, nil
}

// Stop ends ping.
func (p *Prober) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT) // our own ping, by PID
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// snapshot returns the replies so far, and an error if ping ended or
// printed something it cannot read.
func (p *Prober) snapshot() ([]time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := append([]time.Time(nil), p.replies...)
	if p.bad != "" {
		return rs, fmt.Errorf("%s: ping reply line not understood: %q", p.Label, p.bad)
	}
	select {
	case <-p.done:
		return rs, fmt.Errorf("%s: ping ended: %v", p.Label, p.waitErr)
	default:
	}
	return rs, nil
}

// healthy tells whether replies flow now: the newest is recent and none of
// the last `over` had a gap above maxGap.
func healthy(rs []time.Time, now time.Time, over time.Duration) error {
	if len(rs) == 0 {
		return fmt.Errorf("no reply yet")
	}
	if age := now.Sub(rs[len(rs)-1]); age > 4*probeInterval {
		return fmt.Errorf("last reply %v ago", age.Round(time.Millisecond))
	}
	if now.Sub(rs[0]) < over {
		return fmt.Errorf("replies only for %v", now.Sub(rs[0]).Round(time.Millisecond))
	}
	for i := len(rs) - 1; i > 0 && now.Sub(rs[i]) < over; i-- {
		if g := rs[i].Sub(rs[i-1]); g > maxGap {
			return fmt.Errorf("a %v gap %v ago", g.Round(time.Millisecond), now.Sub(rs[i]).Round(time.Millisecond))
		}
	}
	return nil
}

// waitHealthy waits until replies flow steadily for `over`.
func (p *Prober) waitHealthy(ctx context.Context, over, timeout time.Duration) error {
	return waitFor(ctx, timeout, 50*time.Millisecond, p.Label+" probes answered", func() error {
		rs, err := p.snapshot()
		if err != nil {
			return err
		}
		return healthy(rs, time.Now(), over)
	})
}

// Outage is one measured client-visible outage.
type Outage struct {
	D      time.Duration `json:"duration_ns"`
	Capped bool          `json:"capped,omitempty"` // no recovery within the cap: D is the cap
}

// measure computes the outage around fault from the replies, given the
// time now. The outage starts at the last reply before the first silence
// longer than bigGap from the last reply before the fault on (a reply to a
// probe in flight at the fault counts), and ends at the first reply after
// which replies keep coming, no gap above maxGap, for stableFor. Without
// such a silence the outage is the longest gap (at most a lost probe or
// two). done is false while the recovery may still come (or still has to
// prove stable) before the cap.
func measure(rs []time.Time, fault, now time.Time, capD time.Duration) (o Outage, done bool, err error) {
	last := -1
	for i, r := range rs {
		if r.After(fault) {
			break
		}
		last = i
	}
	if last < 0 {
		return o, true, fmt.Errorf("no probe reply before the fault")
	}
	s := -1
	for i := last; i < len(rs); i++ {
		next := now
		if i+1 < len(rs) {
			next = rs[i+1]
		}
		if next.Sub(rs[i]) > bigGap {
			s = i
			break
		}
	}
	if s < 0 {
		if now.Sub(fault) < stableFor {
			return o, false, nil
		}
		var longest time.Duration
		for i := last; i+1 < len(rs); i++ {
			longest = max(longest, rs[i+1].Sub(rs[i]))
		}
		return Outage{D: longest}, true, nil
	}
	before := rs[s]
	for i := s + 1; i < len(rs); i++ {
		start := rs[i]
		if start.Sub(before) >= capD {
			break
		}
		j := i
		for j+1 < len(rs) && rs[j+1].Sub(rs[j]) <= maxGap {
			j++
		}
		if rs[j].Sub(start) >= stableFor {
			return Outage{D: start.Sub(before)}, true, nil
		}
		if j+1 < len(rs) {
			i = j // the run broke off: look after it
			continue
		}
		// The run reaches the newest reply: it may still become stable.
		if now.Sub(rs[j]) <= maxGap {
			return o, false, nil
		}
	}
	if now.Sub(before) >= capD+stableFor {
		return Outage{D: capD, Capped: true}, true, nil
	}
	return o, false, nil
}
