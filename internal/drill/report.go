package drill

// The drill's results: per scenario and client, ward's median outage next
// to the baseline's and their ratio, in the style of the benchmark tables
// (bench/README.md, "Reading the output").

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// targets are the ceilings on ward's client-visible outage.
func target(sc, client string) time.Duration {
	if sc == scSwitchover || client == clientWard {
		return time.Second
	}
	return 2 * time.Second // unplanned failover with a stock WireGuard client
}

// Report collects the outages of a drill.
type Report struct {
	Runs      int
	Cap       time.Duration
	Scenarios []string
	Clients   []string
	Baseline  bool
	Took      time.Duration

	mu      sync.Mutex
	results map[string][]Outage // sys|scenario|client
	failed  map[string]string   // sys|scenario, or sys alone
	notes   []string
}

func newReport(o Options) *Report {
	return &Report{Runs: o.Runs, Cap: o.Cap, Scenarios: o.Scenarios, Clients: o.Clients, Baseline: o.Baseline,
		results: map[string][]Outage{}, failed: map[string]string{}}
}

func (r *Report) add(sys, sc, client string, o Outage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := sys + "|" + sc + "|" + client
	r.results[k] = append(r.results[k], o)
}

// fail records why a system's scenario (sc "" for the whole system) could
// not be measured.
func (r *Report) fail(sys, sc string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := sys
	if sc != "" {
		k += "|" + sc
	}
	if _, ok := r.failed[k]; !ok {
		r.failed[k] = err.Error()
	}
}

func (r *Report) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.notes, s) {
		r.notes = append(r.notes, s)
	}
}

// Stats summarises one system's outages for a scenario and client.
type Stats struct {
	Outages []Outage `json:"outages"`
	Median  Outage   `json:"median"`
	Min     Outage   `json:"min"`
	Max     Outage   `json:"max"`
	// Error says why there are no (or too few) figures.
	Error string `json:"error,omitempty"`
}

// Measured tells whether all runs were measured.
func (s Stats) Measured(runs int) bool { return s.Error == "" && len(s.Outages) >= runs }

// Row is one line of the table.
type Row struct {
	Scenario string        `json:"scenario"`
	Client   string        `json:"client"`
	Ward     Stats         `json:"ward"`
	Baseline *Stats        `json:"baseline,omitempty"`
	Target   time.Duration `json:"target"`
}

// Met tells whether ward's median meets the target.
func (row Row) Met(runs int) bool {
	return row.Ward.Measured(runs) && !row.Ward.Median.Capped && row.Ward.Median.D <= row.Target
}

// stats summarises a system's scenario; the baseline's core-down is its kill.
func (r *Report) stats(sys, sc, client string) Stats {
	if sys == sysBaseline && sc == scCoreDown {
		sc = scKill
	}
	var s Stats
	s.Outages = append(s.Outages, r.results[sys+"|"+sc+"|"+client]...)
	switch {
	case r.failed[sys+"|"+sc] != "":
		s.Error = r.failed[sys+"|"+sc]
	case r.failed[sys] != "":
		s.Error = r.failed[sys]
	case len(s.Outages) < r.Runs:
		s.Error = fmt.Sprintf("only %d of %d runs", len(s.Outages), r.Runs)
	}
	if len(s.Outages) == 0 {
		return s
	}
	sorted := slices.Clone(s.Outages)
	slices.SortStableFunc(sorted, func(a, b Outage) int {
		if a.Capped != b.Capped {
			if a.Capped {
				return 1
			}
			return -1
		}
		return int(a.D - b.D)
	})
	s.Min, s.Max, s.Median = sorted[0], sorted[len(sorted)-1], sorted[(len(sorted)-1)/2]
	return s
}

// Rows returns the table's rows, scenario by scenario.
func (r *Report) Rows() []Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rows []Row
	for _, sc := range r.Scenarios {
		for _, cl := range r.Clients {
			row := Row{Scenario: sc, Client: cl, Ward: r.stats(sysWard, sc, cl), Target: target(sc, cl)}
			if r.Baseline {
				b := r.stats(sysBaseline, sc, cl)
				row.Baseline = &b
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// Notes returns what the drill observed besides the figures.
func (r *Report) Notes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

// Errors returns why systems or scenarios could not be measured.
func (r *Report) Errors() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for k, v := range r.failed {
		out[strings.ReplaceAll(k, "|", " ")] = v
	}
	return out
}

func fmtDur(d time.Duration) string {
	s := d.Seconds()
	if s < 10 {
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

func (o Outage) String() string {
	if o.Capped {
		return "≥ " + fmtDur(o.D) + " (capped)"
	}
	return fmtDur(o.D)
}

func fmtRange(s Stats) string {
	if len(s.Outages) == 0 {
		return "-"
	}
	if s.Min.Capped {
		return "≥ " + fmtDur(s.Min.D)
	}
	lo, hi := strings.TrimSuffix(fmtDur(s.Min.D), " s"), fmtDur(s.Max.D)
	if s.Max.Capped {
		hi = "≥ " + hi
	}
	return lo + "–" + hi
}

// ratio is ward's median over the baseline's; a capped baseline makes it an
// upper bound.
func ratio(w, b Stats) string {
	if len(w.Outages) == 0 || len(b.Outages) == 0 || b.Median.D == 0 || w.Median.Capped {
		return "-"
	}
	v := w.Median.D.Seconds() / b.Median.D.Seconds()
	if b.Median.Capped {
		return fmt.Sprintf("≤ %.3f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// Print writes the table, the notes and the errors.
func (r *Report) Print(w io.Writer) {
	rows := r.Rows()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr := "scenario\tclient\tward (median)\tward min–max\t"
	if r.Baseline {
		hdr += "baseline (median)\tbaseline min–max\tratio(ward/baseline)\t"
	}
	fmt.Fprintln(tw, hdr+"target\tverdict")
	met, missed := 0, 0
	for _, row := range rows {
		val, verdict := "FAILED", "FAILED"
		if len(row.Ward.Outages) > 0 {
			val = row.Ward.Median.String()
		}
		switch {
		case !row.Ward.Measured(r.Runs):
		case row.Met(r.Runs):
			verdict = "ok"
			met++
		default:
			verdict = "MISSED"
			missed++
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t", row.Scenario, row.Client, val, fmtRange(row.Ward))
		if row.Baseline != nil {
			bval := "FAILED"
			if len(row.Baseline.Outages) > 0 {
				bval = row.Baseline.Median.String()
			}
			line += fmt.Sprintf("%s\t%s\t%s\t", bval, fmtRange(*row.Baseline), ratio(row.Ward, *row.Baseline))
		}
		fmt.Fprintf(tw, "%s%g s\t%s\n", line, row.Target.Seconds(), verdict)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRuns per figure: %d (median, min–max). Outage = last probe reply before the silence the fault caused to the first reply after which replies kept coming for %v (ping every %v through the tunnel to the gateway); measurements capped at %v. Targets: %d met, %d missed.\n",
		r.Runs, stableFor, probeInterval, r.Cap, met, missed)
	if r.Baseline {
		fmt.Fprintln(w, "The baseline has no core: its core-down row repeats its kill figures.")
	}
	for _, n := range r.Notes() {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	errs := r.Errors()
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "FAILED %s: %s\n", k, errs[k])
	}
	if r.Took > 0 {
		fmt.Fprintf(w, "The drill took %v.\n", r.Took.Round(time.Second))
	}
}
