package harness

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxErrorSamples is how many error messages a LoadResult keeps.
const maxErrorSamples = 5

// LoadResult is what a throughput run measured.
type LoadResult struct {
	// Latency summarises the calls that succeeded; its PerSecond is the
	// successful calls per second of wall time.
	Latency
	// Errors counts the calls that returned an error.
	Errors int
	// ErrorSamples are the first few error messages.
	ErrorSamples []string
}

// Total is the number of calls made, successful or not.
func (r LoadResult) Total() int { return r.N + r.Errors }

// Load calls do from concurrency workers (closed loop: each worker starts its
// next call when the previous one returned) until duration has passed
// (0: no time limit) or limit calls were started (0: no limit); at least one
// of them must be set. A call that returns an error is counted and its
// message kept (the first few), and the run goes on; only the end of ctx
// stops it early. Calls in flight at the deadline finish and count; the
// wall time runs until the last one returned. do gets the worker's index,
// in [0, concurrency), for state of its own without locks.
func Load(ctx context.Context, name string, concurrency int, duration time.Duration, limit int,
	do func(ctx context.Context, worker int) error) (LoadResult, error) {
	if duration <= 0 && limit <= 0 {
		return LoadResult{}, fmt.Errorf("%s: Load needs a duration or a limit", name)
	}
	concurrency = max(1, concurrency)
	if limit > 0 {
		concurrency = min(concurrency, limit)
	}
	var started atomic.Int64
	var mu sync.Mutex
	var errs int
	var samples []string
	perWorker := make([][]time.Duration, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(duration)
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			durs := make([]time.Duration, 0, 4096)
			defer func() { perWorker[w] = durs }()
			for ctx.Err() == nil {
				if limit > 0 && started.Add(1) > int64(limit) {
					return
				}
				t0 := time.Now()
				if duration > 0 && t0.After(deadline) {
					return
				}
				err := do(ctx, w)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					errs++
					if len(samples) < maxErrorSamples {
						samples = append(samples, err.Error())
					}
					mu.Unlock()
					continue
				}
				durs = append(durs, d)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if err := ctx.Err(); err != nil {
		return LoadResult{}, err
	}
	var all []time.Duration
	for _, d := range perWorker {
		all = append(all, d...)
	}
	return LoadResult{Latency: Summarise(name, all, wall), Errors: errs, ErrorSamples: samples}, nil
}
