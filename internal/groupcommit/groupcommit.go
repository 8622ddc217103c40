// Package groupcommit runs concurrent requests in shared batches: while one
// batch is being committed, the requests that arrive queue up and go
// together in the next one. A database write pays per transaction and per
// round trip, so N requests in one batch cost little more than one; a lone
// request runs at once, without any added delay.
//
// No goroutine of its own: the oldest waiting request leads, running the
// batch on its caller's goroutine, and then hands the lead to the oldest
// request still waiting. A caller therefore never runs more than the batch
// its own request is in.
package groupcommit

import (
	"context"
	"sync"
	"time"
)

// Queue batches requests of type Req per group key (e.g. one location: the
// requests of one group share a transaction; different groups run in
// parallel).
type Queue[Req, Res any] struct {
	// Run commits one batch and returns one result per request, in order.
	// It runs on its own context (see Timeout), not on the leader's: the
	// batch serves several callers.
	Run func(ctx context.Context, group string, batch []Req) []Res
	// Distinct, when set, keeps requests with equal keys out of one batch
	// (e.g. two logins of one device): the later one waits for the next.
	Distinct func(Req) string
	// Max bounds the requests of one batch (default 64).
	Max int
	// Timeout bounds one run (default 30 s).
	Timeout time.Duration

	mu       sync.Mutex
	pending  map[string][]*waiter[Req, Res]
	flushing map[string]bool
}

type waiter[Req, Res any] struct {
	req    Req
	result chan Res      // buffered: the leader never blocks on it
	lead   chan struct{} // buffered: this waiter runs the next batch
}

// Do queues req in group and returns its result once its batch ran. It
// does not return early when ctx ends: other callers may depend on this one
// leading their batch. Run's own deadline bounds the wait.
func (q *Queue[Req, Res]) Do(ctx context.Context, group string, req Req) Res {
	w := &waiter[Req, Res]{req: req, result: make(chan Res, 1), lead: make(chan struct{}, 1)}
	q.mu.Lock()
	if q.pending == nil {
		q.pending, q.flushing = map[string][]*waiter[Req, Res]{}, map[string]bool{}
	}
	q.pending[group] = append(q.pending[group], w)
	leader := !q.flushing[group]
	q.flushing[group] = true
	q.mu.Unlock()
	if !leader {
		select {
		case r := <-w.result:
			return r
		case <-w.lead:
		}
	}
	q.flush(ctx, group)
	return <-w.result // the leader is the oldest waiter, always in its batch
}

func (q *Queue[Req, Res]) flush(ctx context.Context, group string) {
	q.mu.Lock()
	batch, rest := q.take(q.pending[group])
	if len(rest) > 0 {
		q.pending[group] = rest
	} else {
		delete(q.pending, group)
	}
	q.mu.Unlock()

	timeout := q.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	reqs := make([]Req, len(batch))
	for i, w := range batch {
		reqs[i] = w.req
	}
	results := q.Run(rctx, group, reqs)
	cancel()
	for i, w := range batch {
		w.result <- results[i]
	}

	q.mu.Lock()
	if next := q.pending[group]; len(next) > 0 {
		next[0].lead <- struct{}{}
	} else {
		delete(q.flushing, group)
	}
	q.mu.Unlock()
}

// take splits the oldest waiters into a batch and the rest, keeping order.
func (q *Queue[Req, Res]) take(pending []*waiter[Req, Res]) (batch, rest []*waiter[Req, Res]) {
	limit := q.Max
	if limit <= 0 {
		limit = 64
	}
	seen := map[string]bool{}
	for _, w := range pending {
		if len(batch) < limit {
			if q.Distinct == nil {
				batch = append(batch, w)
				continue
			}
			if k := q.Distinct(w.req); !seen[k] {
				seen[k] = true
				batch = append(batch, w)
				continue
			}
		}
		rest = append(rest, w)
	}
	return batch, rest
}

// Split runs the batch with run. When that fails and the batch holds more
// than one request, the failure is reported to split and each request runs
// alone, so that only the request at fault fails; failed turns an error into
// its result.
func Split[Req, Res any](batch []Req, run func([]Req) ([]Res, error), failed func(error) Res, split func(error)) []Res {
	results, err := run(batch)
	if err == nil {
		return results
	}
	if len(batch) == 1 {
		return []Res{failed(err)}
	}
	split(err)
	out := make([]Res, len(batch))
	for i := range batch {
		res, err := run(batch[i : i+1])
		if err != nil {
			out[i] = failed(err)
			continue
		}
		out[i] = res[0]
	}
	return out
}
