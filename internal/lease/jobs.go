package lease

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// jobRunner runs the jobs of one epoch; stop ends them and waits.
type jobRunner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// fenced is signalled when a job was refused for a stale epoch.
	fenced chan struct{}
}

func (l *Lease) startJobs(parent context.Context, epoch int64, jobs []Job) *jobRunner {
	ctx, cancel := context.WithCancel(parent)
	ctx = store.WithFence(ctx, l.Fence(epoch))
	r := &jobRunner{cancel: cancel, fenced: make(chan struct{}, 1)}
	for _, j := range jobs {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.runJob(ctx, epoch, j, r.fenced)
		}()
	}
	return r
}

func (r *jobRunner) stop() {
	r.cancel()
	r.wg.Wait()
}

func (l *Lease) runJob(ctx context.Context, epoch int64, j Job, fenced chan<- struct{}) {
	every := j.Every
	if every <= 0 {
		every = time.Minute
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	log := l.o.Log.With("job", j.Name, "epoch", epoch)
	for {
		start := time.Now()
		err := j.Run(ctx)
		l.metrics.duration.WithLabelValues(j.Name).Observe(time.Since(start).Seconds())
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.metrics.runs.WithLabelValues(j.Name, "ok").Inc()
			l.metrics.lastSuccess.WithLabelValues(j.Name).SetToCurrentTime()
		case errors.Is(err, store.ErrFenced):
			l.metrics.runs.WithLabelValues(j.Name, "fenced").Inc()
			log.Warn("singleton job refused: this replica's lease epoch is stale", "err", err)
			select {
			case fenced <- struct{}{}:
			default:
			}
		default:
			l.metrics.runs.WithLabelValues(j.Name, "error").Inc()
			log.Warn("singleton job failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
