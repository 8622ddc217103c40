package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQueueBatchesAndAnswersEveryRequest(t *testing.T) {
	tests := []struct {
		name     string
		callers  int
		groups   int
		max      int
		distinct bool
	}{
		{"one caller", 1, 1, 0, false},
		{"many callers one group", 200, 1, 0, false},
		{"many callers, small batches", 200, 1, 5, false},
		{"many callers, four groups", 200, 4, 0, false},
		{"distinct keys split batches", 200, 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			running := map[string]bool{}
			var batches, maxSeen atomic.Int64
			var overlap, dupInBatch atomic.Bool
			q := &Queue[int, string]{
				Max: tt.max,
				Run: func(ctx context.Context, group string, batch []int) []string {
					mu.Lock()
					if running[group] {
						overlap.Store(true)
					}
					running[group] = true
					mu.Unlock()
					if _, ok := ctx.Deadline(); !ok {
						t.Error("run without a deadline")
					}
					seen := map[int]bool{}
					for _, r := range batch {
						if tt.distinct && seen[r%7] {
							dupInBatch.Store(true)
						}
						seen[r%7] = true
					}
					batches.Add(1)
					for n := int64(len(batch)); ; {
						m := maxSeen.Load()
						if n <= m || maxSeen.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(time.Millisecond) // a commit takes time: others queue meanwhile
					out := make([]string, len(batch))
					for i, r := range batch {
						out[i] = fmt.Sprintf("%s:%d", group, r)
					}
					mu.Lock()
					running[group] = false
					mu.Unlock()
					return out
				},
			}
			if tt.distinct {
				q.Distinct = func(r int) string { return fmt.Sprint(r % 7) }
			}
			var wg sync.WaitGroup
			errs := make(chan error, tt.callers)
			for i := 0; i < tt.callers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					group := fmt.Sprint("g", i%tt.groups)
					if got, want := q.Do(context.Background(), group, i), fmt.Sprintf("%s:%d", group, i); got != want {
						errs <- fmt.Errorf("request %d got %q, want %q", i, got, want)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if overlap.Load() {
				t.Error("two batches of one group ran at once")
			}
			if dupInBatch.Load() {
				t.Error("a batch held two requests with the same distinct key")
			}
			if tt.max > 0 && maxSeen.Load() > int64(tt.max) {
				t.Errorf("batch of %d requests, max %d", maxSeen.Load(), tt.max)
			}
			if tt.callers >= 100 && !tt.distinct && batches.Load() >= int64(tt.callers) {
				t.Errorf("%d callers ran in %d batches: nothing was batched", tt.callers, batches.Load())
			}
			if len(q.pending) != 0 || len(q.flushing) != 0 {
				t.Errorf("queue not empty after all requests: %d pending groups, %d flushing", len(q.pending), len(q.flushing))
			}
		})
	}
}

func TestQueueLeaderContextCancelledStillServesBatch(t *testing.T) {
	release := make(chan struct{})
	q := &Queue[int, error]{Run: func(ctx context.Context, _ string, batch []int) []error {
		<-release
		out := make([]error, len(batch))
		for i := range out {
			out[i] = ctx.Err()
		}
		return out
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Do(ctx, "g", 1) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the batch ran on the leader's cancelled context: %v", err)
	}
}

func TestSplit(t *testing.T) {
	errBad := errors.New("request 3 is bad")
	run := func(calls *[][]int) func([]int) ([]string, error) {
		return func(b []int) ([]string, error) {
			*calls = append(*calls, b)
			out := make([]string, len(b))
			for i, r := range b {
				if r == 3 {
					return nil, errBad
				}
				out[i] = fmt.Sprint(r)
			}
			return out, nil
		}
	}
	failed := func(err error) string { return "failed: " + err.Error() }
	tests := []struct {
		name      string
		batch     []int
		want      []string
		wantCalls int
		wantSplit bool
	}{
		{"whole batch commits", []int{1, 2}, []string{"1", "2"}, 1, false},
		{"lone failure", []int{3}, []string{"failed: request 3 is bad"}, 1, false},
		{"one at fault, the others commit alone", []int{1, 3, 4}, []string{"1", "failed: request 3 is bad", "4"}, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls [][]int
			split := false
			got := Split(tt.batch, run(&calls), failed, func(error) { split = true })
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || len(calls) != tt.wantCalls || split != tt.wantSplit {
				t.Fatalf("got %q in %d calls (split %v), want %q in %d (split %v)", got, len(calls), split, tt.want, tt.wantCalls, tt.wantSplit)
			}
		})
	}
}
