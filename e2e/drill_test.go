package e2e

// `ward drill` end to end: the failover drill in network namespaces, one run
// per scenario, with a short cap on the baseline's outages. The issue's
// targets (ward client ≤ 1 s, wg-quick ≤ 2 s for an unplanned failover,
// ≤ 1 s for a planned switchover) are asserted loosely, because this
// machine's timings swing 2.5x: ≤ 2.5 s, ≤ 4 s and ≤ 2.5 s; and ward must
// beat the baseline everywhere.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/drill"
)

func TestDrill(t *testing.T) {
	// Not parallel: the drill measures time, so it runs while the parallel
	// tests wait.
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the drill needs root (network namespaces, TUN devices, keepalived); run the e2e tests as root, e.g. in the CI container")
	}
	for _, p := range [][2]string{{"keepalived", "keepalived"}, {"wg-quick", "wireguard-tools"}, {"wg", "wireguard-tools"},
		{"wireguard-go", "wireguard-go"}, {"ping", "iputils-ping"}, {"ip", "iproute2"}} {
		if _, err := exec.LookPath(p[0]); err != nil {
			t.Skipf("SKIP: %s not found: install the Debian package %s (scripts/install-deps.sh does)", p[0], p[1])
		}
	}
	if why := drill.Unavailable(); why != "" {
		t.Skipf("SKIP: %s", why)
	}

	jsonPath := filepath.Join(t.TempDir(), "drill.json")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wardBin, "drill", "--runs", "1", "--baseline-cap", "20s", "--json", jsonPath)
	cmd.Env = cleanEnv()
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// On the deadline: SIGTERM, so the drill removes its namespaces.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	t.Logf("ward drill took %v; table:\n%s", took.Round(time.Second), out.String())
	if err != nil {
		t.Fatalf("ward drill: %v\nprogress:\n%s", err, errOut.String())
	}

	var doc struct {
		Rows   []drill.Row       `json:"rows"`
		Notes  []string          `json:"notes"`
		Errors map[string]string `json:"errors"`
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("drill JSON: %v\n%s", err, raw)
	}
	if len(doc.Errors) > 0 {
		t.Fatalf("drill errors: %v", doc.Errors)
	}
	if len(doc.Rows) != len(drill.AllScenarios)*len(drill.AllClients) {
		t.Fatalf("drill has %d rows, want one per scenario and client:\n%s", len(doc.Rows), out.String())
	}
	for _, r := range doc.Rows {
		limit := 2500 * time.Millisecond // the targets are 1 s; this machine is noisy
		if r.Scenario != "switchover" && r.Client == "wg-quick" {
			limit = 4 * time.Second // target 2 s
		}
		if len(r.Ward.Outages) != 1 || r.Baseline == nil || len(r.Baseline.Outages) != 1 {
			t.Errorf("%s/%s: want one ward and one baseline figure: %+v", r.Scenario, r.Client, r)
			continue
		}
		w, b := r.Ward.Median, r.Baseline.Median
		if w.Capped || w.D > limit {
			t.Errorf("%s with the %s client: ward's outage %v, want ≤ %v (target %v)", r.Scenario, r.Client, w.D, limit, r.Target)
		}
		if !b.Capped && w.D >= b.D {
			t.Errorf("%s with the %s client: ward's outage %v does not beat the baseline's %v", r.Scenario, r.Client, w.D, b.D)
		}
	}
	for _, n := range doc.Notes {
		t.Logf("drill note: %s", n)
	}
	if t.Failed() {
		t.Logf("progress:\n%s", errOut.String())
	}
}
