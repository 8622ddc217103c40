package e2e

// Helpers of TestCoreHA (core_ha_test.go): a UDP echo prober that runs
// through the tunnels for the whole test and is accounted per time window,
// a client that spreads API requests over the core replicas with failover
// on connection errors (as a load balancer would), and Prometheus text
// parsing.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serveUDPEcho answers every datagram on addr (inside n) with itself, until
// the test ends.
func serveUDPEcho(t *testing.T, n *netns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := n.do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatalf("UDP echo on %s in %s: %v", addr, n.name, err)
	}
	bigBuffers(pc)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:k], from)
		}
	}()
}

// bigBuffers gives the test's own UDP sockets room for a few seconds of
// probes, so that a stall of the (shared, loaded) test process does not drop
// answers in its socket buffers: a lost probe must be the system's doing.
func bigBuffers(pc net.PacketConn) {
	if u, ok := pc.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(4 << 20)
		_ = u.SetWriteBuffer(4 << 20)
	}
}

// dropCounters reads a namespace's packet drop counters: per interface
// rx/tx dropped, and the UDP and IP counters of /proc/net/snmp, as
// "NAME counter" -> value.
func dropCounters(n *netns) map[string]uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.exec(ctx, nil, "sh", "-c", `for d in /sys/class/net/*; do echo "$(basename $d) rx_dropped $(cat $d/statistics/rx_dropped)"; `+
		`echo "$(basename $d) tx_dropped $(cat $d/statistics/tx_dropped)"; done; cat /proc/net/snmp`)
	m := map[string]uint64{}
	if err != nil {
		return m
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 3 && !strings.HasSuffix(f[0], ":") {
			if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				m[f[0]+" "+f[1]] = v
			}
			continue
		}
		// /proc/net/snmp: a header line and a value line per protocol.
		if len(f) > 1 && strings.HasSuffix(f[0], ":") && i+1 < len(lines) {
			vals := strings.Fields(lines[i+1])
			if len(vals) != len(f) || vals[0] != f[0] {
				continue
			}
			if _, err := strconv.ParseUint(vals[1], 10, 64); err != nil {
				continue
			}
			for j := 1; j < len(f); j++ {
				if v, err := strconv.ParseUint(vals[j], 10, 64); err == nil {
					m[strings.TrimSuffix(f[0], ":")+" "+f[j]] = v
				}
			}
		}
	}
	return m
}

// dropDelta lists the drop-like counters that grew between two readings.
func dropDelta(before, after map[string]uint64) []string {
	var out []string
	for k, v := range after {
		b := before[k]
		if v <= b {
			continue
		}
		if strings.Contains(k, "dropped") || strings.Contains(k, "Errors") || strings.Contains(k, "Discards") || strings.HasSuffix(k, "NoPorts") {
			out = append(out, fmt.Sprintf("%s +%d", k, v-b))
		}
	}
	slices.Sort(out)
	return out
}

// udpProber sends a numbered datagram to an echo server every interval from
// inside a namespace and records when each answer came back. It runs until
// stopped; windowStats accounts any stretch of its life.
type udpProber struct {
	name     string
	target   *net.UDPAddr
	interval time.Duration
	pc       net.PacketConn
	magic    uint64

	mu   sync.Mutex
	sent []time.Time
	rtt  []time.Duration // -1 while unanswered

	stopc chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

func startUDPProber(t *testing.T, name string, n *netns, target string, interval time.Duration) *udpProber {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", target)
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProber{name: name, target: ua, interval: interval, stopc: make(chan struct{}), magic: uint64(time.Now().UnixNano())}
	if err := n.do(func() (err error) { p.pc, err = net.ListenPacket("udp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatalf("prober %s: UDP socket in %s: %v", name, n.name, err)
	}
	bigBuffers(p.pc)
	p.done.Add(2)
	go p.receive()
	go p.send()
	t.Cleanup(p.stop)
	return p
}

func (p *udpProber) send() {
	defer p.done.Done()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	var msg [16]byte
	binary.BigEndian.PutUint64(msg[:8], p.magic)
	for {
		p.mu.Lock()
		seq := len(p.sent)
		p.sent = append(p.sent, time.Now())
		p.rtt = append(p.rtt, -1)
		p.mu.Unlock()
		binary.BigEndian.PutUint64(msg[8:], uint64(seq))
		_, _ = p.pc.WriteTo(msg[:], p.target) // an error is a probe without answer
		select {
		case <-p.stopc:
			return
		case <-tick.C:
		}
	}
}

func (p *udpProber) receive() {
	defer p.done.Done()
	buf := make([]byte, 64)
	for {
		k, _, err := p.pc.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			return
		}
		if k != 16 || binary.BigEndian.Uint64(buf[:8]) != p.magic {
			continue
		}
		seq := int(binary.BigEndian.Uint64(buf[8:16]))
		p.mu.Lock()
		if seq < len(p.sent) && p.rtt[seq] < 0 {
			p.rtt[seq] = now.Sub(p.sent[seq])
		}
		p.mu.Unlock()
	}
}

func (p *udpProber) stop() {
	p.once.Do(func() {
		close(p.stopc)
		p.pc.Close()
		p.done.Wait()
	})
}

// answeredSince tells whether a probe sent after since was answered.
func (p *udpProber) answeredSince(since time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.sent) - 1; i >= 0 && p.sent[i].After(since); i-- {
		if p.rtt[i] >= 0 {
			return true
		}
	}
	return false
}

// probeStats accounts the probes sent in a window.
type probeStats struct {
	name       string
	sent, lost int
	late       int // answered, but after lateAfter
	pending    int // neither answered nor old enough to call lost yet
	maxRTT     time.Duration
	maxGap     time.Duration // longest pause between two sends: the test process's own stalls
	lostAt     []time.Time   // the first few
}

func (s probeStats) String() string {
	return fmt.Sprintf("%s %d sent, %d lost, %d answered late, slowest answer %v (longest gap between sends %v)",
		s.name, s.sent, s.lost, s.late, ms(s.maxRTT), ms(s.maxGap))
}

// windowStats counts the probes sent in [from, to]: lost = no answer within
// lostAfter, late = answered after lateAfter.
func (p *udpProber) windowStats(from, to time.Time, lateAfter, lostAfter time.Duration) probeStats {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := probeStats{name: p.name}
	for i, at := range p.sent {
		if at.Before(from) || at.After(to) {
			continue
		}
		st.sent++
		if i > 0 && !p.sent[i-1].Before(from) {
			st.maxGap = max(st.maxGap, at.Sub(p.sent[i-1]))
		}
		r := p.rtt[i]
		switch {
		case r < 0 && now.Sub(at) < lostAfter:
			st.pending++
		case r < 0 || r > lostAfter:
			st.lost++
			if len(st.lostAt) < 10 {
				st.lostAt = append(st.lostAt, at)
			}
		default:
			if r > lateAfter {
				st.late++
			}
			st.maxRTT = max(st.maxRTT, r)
		}
	}
	return st
}

// promSample sums the samples of metric name whose labels contain every
// `key="value"` of labels; found is false when there is none.
func promSample(body []byte, name string, labels ...string) (sum float64, found bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)`)
	for _, m := range re.FindAllSubmatch(body, -1) {
		ok := true
		for _, l := range labels {
			if !bytes.Contains(m[1], []byte(l)) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// promByLabel maps the value of one label to the sample of metric name.
func promByLabel(body []byte, name, label string) map[string]float64 {
	out := map[string]float64{}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)`)
	lre := regexp.MustCompile(regexp.QuoteMeta(label) + `="([^"]*)"`)
	for _, m := range re.FindAllSubmatch(body, -1) {
		lm := lre.FindSubmatch(m[1])
		if lm == nil {
			continue
		}
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			continue
		}
		out[string(lm[1])] += v
	}
	return out
}

// haResult is one API request spread over the replicas.
type haResult struct {
	status   int // 0: no replica answered
	body     []byte
	replica  int // the replica that answered
	attempts int
	errs     []string // connection errors, one per replica that failed
	elapsed  time.Duration
}

func (r haResult) String() string {
	if r.status == 0 {
		return fmt.Sprintf("no answer from any replica after %v: %s", ms(r.elapsed), strings.Join(r.errs, "; "))
	}
	return fmt.Sprintf("%d from replica %d after %v (%d attempts): %s", r.status, r.replica+1, ms(r.elapsed), r.attempts,
		bytes.TrimSpace(r.body[:min(len(r.body), 300)]))
}

// haAPI sends API requests with a bearer token to the replicas' addresses
// (inside the core namespace), round-robin; a connection error or timeout
// on one replica moves the request to the next, like a load balancer.
type haAPI struct {
	ns    *netns
	token string
	addrs func() []string
	next  atomic.Uint64
	hc    *http.Client
}

func newHAAPI(ns *netns, token string, addrs func() []string, timeout time.Duration) *haAPI {
	return &haAPI{ns: ns, token: token, addrs: addrs, hc: ns.httpClient(timeout)}
}

// one sends a request to one replica; err is a transport error.
func (a *haAPI) one(addr, method, path string, body any) (status int, ctype string, b []byte, err error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, "", nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, "http://"+addr+path, rd)
	if err != nil {
		return 0, "", nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err = io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, nil
}

// do sends the request round-robin with failover; body (nil for none) is
// asked anew for every attempt, so a retried create can use a new name.
func (a *haAPI) do(method, path string, body func(attempt int) any) haResult {
	addrs := a.addrs()
	start := time.Now()
	first := int(a.next.Add(1) % uint64(len(addrs)))
	res := haResult{}
	for i := range addrs {
		r := (first + i) % len(addrs)
		var b any
		if body != nil {
			b = body(i)
		}
		res.attempts++
		status, _, raw, err := a.one(addrs[r], method, path, b)
		if err != nil {
			res.errs = append(res.errs, fmt.Sprintf("replica %d: %v", r+1, err))
			continue
		}
		res.status, res.body, res.replica = status, raw, r
		break
	}
	res.elapsed = time.Since(start)
	return res
}

// apiLoop sends one request after another (every interval) until stopped
// and keeps the tally.
type apiLoop struct {
	mu         sync.Mutex
	requests   int
	unanswered int
	failovers  int // requests that needed more than one replica
	perReplica map[int]int
	bad        int      // answered, but not 2xx
	samples    []string // of unanswered and bad requests
	slowest    time.Duration

	stopc chan struct{}
	done  chan struct{}
}

// startAPILoop runs req every interval; req returns the result and whether
// the answer is good (2xx and what the caller expected).
func startAPILoop(t *testing.T, interval time.Duration, req func(n int) (haResult, bool)) *apiLoop {
	l := &apiLoop{perReplica: map[int]int{}, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 0; ; n++ {
			at := time.Now()
			r, good := req(n)
			l.mu.Lock()
			l.requests++
			l.slowest = max(l.slowest, r.elapsed)
			switch {
			case r.status == 0:
				l.unanswered++
				if len(l.samples) < 10 {
					l.samples = append(l.samples, at.Format("15:04:05.000")+" "+r.String())
				}
			default:
				l.perReplica[r.replica]++
				if !good {
					l.bad++
					if len(l.samples) < 10 {
						l.samples = append(l.samples, at.Format("15:04:05.000")+" "+r.String())
					}
				}
			}
			if r.attempts > 1 {
				l.failovers++
			}
			l.mu.Unlock()
			select {
			case <-l.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(l.stop)
	return l
}

func (l *apiLoop) stop() {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	<-l.done
}

func (l *apiLoop) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d requests, %d answered (per replica %v), %d unanswered by every replica, %d answered but not as expected, "+
		"%d needed failover to another replica, slowest %v", l.requests, l.requests-l.unanswered, l.perReplica, l.unanswered, l.bad,
		l.failovers, ms(l.slowest))
}

// check fails t if any request went unanswered or got a bad answer.
func (l *apiLoop) check(t *testing.T, what string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.requests == 0 {
		t.Errorf("%s: the API loop sent no request", what)
	}
	if l.unanswered > 0 || l.bad > 0 {
		t.Errorf("%s: %d of %d API requests got no answer from any replica, %d got a bad answer; first ones:\n%s",
			what, l.unanswered, l.requests, l.bad, strings.Join(l.samples, "\n"))
	}
}
