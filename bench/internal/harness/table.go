package harness

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Unit says how a Row's value is printed.
type Unit string

const (
	Millis  Unit = "ms"
	MB      Unit = "MB"
	Seconds Unit = "s"
	PerSec  Unit = "req/s"
	KB      Unit = "KB"        // 2^10 bytes
	Ratio   Unit = "x"         // a ratio of two measurements
	Samples Unit = "samples/s" // statistics samples per second
	Auths   Unit = "auth/s"    // completed MFA logins per second
	Count   Unit = "count"     // a number of events, printed bare
)

// Row is one figure, with its target when the project has one. A target is
// a ceiling (value/target ≤ 1 meets it) unless AtLeast makes it a floor
// (value/target ≥ 1 meets it, e.g. a throughput).
type Row struct {
	Engine string
	Metric string
	Value  float64
	Unit   Unit
	Target float64 // 0: no target, the figure is reported only
	// AtLeast makes Target a floor.
	AtLeast bool
	// Skipped, when set, says why the figure could not be measured on this
	// machine (e.g. not root); the row prints SKIPPED and counts as neither
	// met nor missed.
	Skipped string
}

// Met tells whether the row has a target and meets it.
func (r Row) Met() bool { return r.Skipped == "" && r.Target > 0 && !r.beyond() }

// Missed tells whether the row has a target and misses it.
func (r Row) Missed() bool { return r.Skipped == "" && r.Target > 0 && r.beyond() }

// beyond tells whether the value is on the wrong side of the target.
func (r Row) beyond() bool {
	if r.AtLeast {
		return r.Value < r.Target
	}
	return r.Value > r.Target
}

// SkippedRows makes one SKIPPED row per metric, each with its target; rows
// without an engine get engine.
func SkippedRows(engine, reason string, metrics []Row) []Row {
	out := make([]Row, len(metrics))
	for i, m := range metrics {
		if m.Engine == "" {
			m.Engine = engine
		}
		m.Skipped = reason
		out[i] = m
	}
	return out
}

// DurationRow makes a latency row in milliseconds.
func DurationRow(engine, metric string, d time.Duration, target time.Duration) Row {
	return Row{Engine: engine, Metric: metric, Value: float64(d) / 1e6, Unit: Millis, Target: float64(target) / 1e6}
}

// BytesRow makes a size row in MB (2^20 bytes).
func BytesRow(engine, metric string, b, target int64) Row {
	return Row{Engine: engine, Metric: metric, Value: float64(b) / (1 << 20), Unit: MB, Target: float64(target) / (1 << 20)}
}

func formatValue(v float64, u Unit) string {
	switch u {
	case Millis:
		if v >= 100 {
			return fmt.Sprintf("%.0f ms", v)
		}
		return fmt.Sprintf("%.2f ms", v)
	case MB:
		return fmt.Sprintf("%.1f MB", v)
	case Seconds:
		return fmt.Sprintf("%.1f s", v)
	case PerSec:
		return fmt.Sprintf("%.0f req/s", v)
	case KB:
		return fmt.Sprintf("%.1f KB", v)
	case Ratio:
		return fmt.Sprintf("%.2f x", v)
	case Samples:
		return fmt.Sprintf("%.0f samples/s", v)
	case Auths:
		return fmt.Sprintf("%.0f auth/s", v)
	case Count:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g %s", v, u)
}

func formatTarget(r Row) string {
	if r.Target == 0 {
		return "-"
	}
	if r.AtLeast {
		return fmt.Sprintf("≥ %g %s", r.Target, r.Unit)
	}
	return fmt.Sprintf("%g %s", r.Target, r.Unit)
}

// PrintTable writes the rows with each figure beside its target and their
// ratio; a ratio above 1 misses a ceiling, a ratio below 1 misses a floor
// (a target printed with ≥).
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "engine\tmetric\tvalue\ttarget\tratio(value/target)\tverdict")
	for _, r := range rows {
		ratio, verdict := "-", "-"
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Engine, r.Metric, "SKIPPED", formatTarget(r), "-", "SKIPPED: "+r.Skipped)
			continue
		}
		if r.Target > 0 {
			ratio = fmt.Sprintf("%.2f", r.Value/r.Target)
			verdict = "ok"
			if r.Missed() {
				verdict = "MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Engine, r.Metric, formatValue(r.Value, r.Unit), formatTarget(r), ratio, verdict)
	}
	tw.Flush()
}
