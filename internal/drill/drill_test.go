package drill

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseReply(t *testing.T) {
	at, ok, err := parseReply("[1795614579.922709] 64 bytes from 10.77.0.1: icmp_seq=80 ttl=64 time=0.412 ms")
	if err != nil || !ok || at != time.Unix(1795614579, 922709000) {
		t.Fatalf("reply: %v %v %v", at, ok, err)
	}
	if _, ok, err := parseReply("[1795614579.922709] 64 bytes from 10.77.0.1: icmp_seq=81 ttl=64 time=0.4 ms (DUP!)"); !ok || err != nil {
		t.Fatalf("duplicate reply: %v %v", ok, err)
	}
	for _, line := range []string{
		"PING 10.77.0.1 (10.77.0.1) 56(84) bytes of data.",
		"[1795614580.146154] no answer yet for icmp_seq=83",
		"[1795614580.146154] From 10.77.0.2 icmp_seq=84 Destination Host Unreachable",
		"",
	} {
		if _, ok, err := parseReply(line); ok || err != nil {
			t.Errorf("%q: ok=%v err=%v, want ignored", line, ok, err)
		}
	}
	if _, _, err := parseReply("[17956x] 64 bytes from 10.77.0.1: icmp_seq=80 ttl=64"); err == nil {
		t.Error("a reply line with a bad time stamp was accepted")
	}
}

// replies makes reply times every 50 ms over [from, to) seconds after t0.
func replies(t0 time.Time, spans ...[2]float64) []time.Time {
	var rs []time.Time
	for _, s := range spans {
		for x := s[0]; x < s[1]; x += 0.05 {
			rs = append(rs, t0.Add(time.Duration(x*float64(time.Second))))
		}
	}
	return rs
}

func sorted(rs []time.Time) []time.Time {
	slices.SortFunc(rs, func(a, b time.Time) int { return a.Compare(b) })
	return rs
}

func TestMeasure(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	fault := t0.Add(10 * time.Second)
	capD := 20 * time.Second
	tests := []struct {
		name   string
		rs     []time.Time
		now    float64
		want   Outage
		done   bool
		hasErr bool
	}{
		{name: "recovered", rs: replies(t0, [2]float64{0, 9.99}, [2]float64{10.5, 13}), now: 13,
			want: Outage{D: 550 * time.Millisecond}, done: true},
		{name: "recovery not yet stable", rs: replies(t0, [2]float64{0, 9.99}, [2]float64{10.5, 11}), now: 11, done: false},
		{name: "a blip after the fault, then the real recovery", now: 20,
			rs:   replies(t0, [2]float64{0, 9.99}, [2]float64{10.5, 10.8}, [2]float64{12, 20}),
			want: Outage{D: 2050 * time.Millisecond}, done: true},
		{name: "a reply in flight at the fault", rs: sorted(append(replies(t0, [2]float64{0, 9.99}, [2]float64{10.35, 13}), t0.Add(10006*time.Millisecond))),
			now: 13, want: Outage{D: 344 * time.Millisecond}, done: true},
		{name: "no probe lost", rs: replies(t0, [2]float64{0, 15}), now: 12, want: Outage{D: 50 * time.Millisecond}, done: true},
		{name: "one probe lost", rs: replies(t0, [2]float64{0, 10.03}, [2]float64{10.13, 15}), now: 12, want: Outage{D: 130 * time.Millisecond}, done: true},
		{name: "capped", rs: replies(t0, [2]float64{0, 9.99}), now: 40, want: Outage{D: capD, Capped: true}, done: true},
		{name: "silent, cap not reached", rs: replies(t0, [2]float64{0, 9.99}), now: 25, done: false},
		{name: "no reply before the fault", rs: replies(t0, [2]float64{11, 20}), now: 20, done: true, hasErr: true},
	}
	for _, tt := range tests {
		got, done, err := measure(tt.rs, fault, t0.Add(time.Duration(tt.now*float64(time.Second))), capD)
		if (err != nil) != tt.hasErr || done != tt.done {
			t.Errorf("%s: done=%v err=%v, want done=%v err=%v", tt.name, done, err, tt.done, tt.hasErr)
			continue
		}
		if done && !tt.hasErr && (got.Capped != tt.want.Capped || (got.D-tt.want.D).Abs() > 5*time.Millisecond) {
			t.Errorf("%s: outage %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestHealthy(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	if err := healthy(replies(t0, [2]float64{0, 5}), t0.Add(5*time.Second), stableFor); err != nil {
		t.Errorf("steady replies: %v", err)
	}
	if err := healthy(replies(t0, [2]float64{0, 3}, [2]float64{4, 5}), t0.Add(5*time.Second), stableFor); err == nil {
		t.Error("a 1 s gap 1 s ago passed as healthy")
	}
	if err := healthy(replies(t0, [2]float64{0, 4}), t0.Add(5*time.Second), stableFor); err == nil {
		t.Error("no reply for 1 s passed as healthy")
	}
}

func TestReportTable(t *testing.T) {
	r := newReport(Options{Runs: 3, Cap: 40 * time.Second, Scenarios: []string{scKill, scSwitchover, scCoreDown},
		Clients: []string{clientWard, clientWGQuick}, Baseline: true})
	for _, d := range []time.Duration{300, 500, 400} {
		r.add(sysWard, scKill, clientWard, Outage{D: d * time.Millisecond})
		r.add(sysWard, scKill, clientWGQuick, Outage{D: 4 * d * time.Millisecond})
		r.add(sysBaseline, scKill, clientWard, Outage{D: 2 * time.Second})
		r.add(sysBaseline, scKill, clientWGQuick, Outage{D: 15 * time.Second})
		r.add(sysBaseline, scSwitchover, clientWGQuick, Outage{D: 40 * time.Second, Capped: true})
		r.add(sysWard, scSwitchover, clientWGQuick, Outage{D: 100 * time.Millisecond})
	}
	r.fail(sysWard, scCoreDown, errString("core did not come back"))
	var b bytes.Buffer
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"kill        ward      0.40 s         0.30–0.50 s   2.00 s             2.00–2.00 s       0.200",
		"kill        wg-quick  1.60 s         1.20–2.00 s   15.0 s",
		"switchover  wg-quick  0.10 s         0.10–0.10 s   ≥ 40.0 s (capped)  ≥ 40.0 s          ≤ 0.003               1 s     ok",
		"core-down   ward      FAILED",
		"FAILED ward core-down: core did not come back",
		"Targets: 3 met, 0 missed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// The baseline's core-down is its kill.
	if rows := r.Rows(); rows[4].Baseline.Median.D != 2*time.Second {
		t.Errorf("baseline core-down: %+v", rows[4].Baseline)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestKeepalivedConfig(t *testing.T) {
	c := kaConfig{RouterID: "drill-x-1", Interface: "ex1", Priority: 150, TrackScript: "/bin/ward gateway healthcheck --url http://127.0.0.1:1/readyz",
		Notify: "/bin/ward gateway notify --data-dir /d"}
	conf := c.render()
	for _, want := range []string{"vrrp_version 3", "advert_int 0.1", "state BACKUP", "nopreempt", "priority 150",
		"10.88.0.100/24 dev ex1", `script "/bin/ward gateway healthcheck --url http://127.0.0.1:1/readyz"`,
		`notify_master "/bin/ward gateway notify --data-dir /d master"`, `notify_fault "/bin/ward gateway notify --data-dir /d fault"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if conf := (kaConfig{RouterID: "b", Interface: "e", Priority: 100}).render(); strings.Contains(conf, "script") || strings.Contains(conf, "notify") {
		t.Errorf("baseline config has scripts:\n%s", conf)
	}
}
