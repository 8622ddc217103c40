package harness

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Latency summarises one measured series.
type Latency struct {
	Name                     string
	N                        int
	P50, P90, P99, Max, Mean time.Duration
	Wall                     time.Duration
	PerSecond                float64
}

func (l Latency) String() string {
	return fmt.Sprintf("%-16s n=%-6d p50=%-9s p90=%-9s p99=%-9s max=%-9s mean=%-9s %7.0f req/s",
		l.Name, l.N, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), ms(l.Mean), l.PerSecond)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

// Measure calls do(i) for i in [0, n) from concurrency workers and records
// how long each call takes. The first error stops the run.
func Measure(ctx context.Context, name string, n, concurrency int, do func(ctx context.Context, i int) error) (Latency, error) {
	if n <= 0 {
		return Latency{Name: name}, nil
	}
	concurrency = max(1, min(concurrency, n))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	durations := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := do(ctx, i)
				durations[i] = time.Since(t0)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("%s request %d: %w", name, i, err) })
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return Latency{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return Latency{}, err
	}
	return Summarise(name, durations, wall), nil
}

// Summarise computes nearest-rank percentiles of durations.
func Summarise(name string, durations []time.Duration, wall time.Duration) Latency {
	s := slices.Clone(durations)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	l := Latency{Name: name, N: len(s), Wall: wall}
	if len(s) == 0 {
		return l
	}
	l.P50, l.P90, l.P99, l.Max = Percentile(s, 50), Percentile(s, 90), Percentile(s, 99), s[len(s)-1]
	l.Mean = sum / time.Duration(len(s))
	if wall > 0 {
		l.PerSecond = float64(len(s)) / wall.Seconds()
	}
	return l
}

// Percentile is the nearest-rank percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
