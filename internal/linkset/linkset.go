// Package linkset keeps one worker per registered component that core
// dials (gateways, proxies): it re-reads the registry periodically, starts
// a worker for each new component, hands changes to existing ones and stops
// the workers of components that left the registry.
package linkset

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
)

// Worker keeps one component connected until its context ends.
type Worker interface {
	// Update hands the worker the component's current registry entry.
	Update(vpn.GatewayTarget)
	Run(ctx context.Context)
}

// Set is the reconciler.
type Set struct {
	// List reads the registry.
	List func(ctx context.Context) ([]vpn.GatewayTarget, error)
	// Spawn builds the worker of a new component.
	Spawn func(vpn.GatewayTarget) Worker
	// Removed, if set, is called when a component left the registry.
	Removed func(id string)
	Every   time.Duration
	Log     *slog.Logger

	mu      sync.Mutex
	workers map[string]entry
}

type entry struct {
	w      Worker
	cancel context.CancelFunc
}

// Run reconciles until ctx ends, then stops every worker and waits.
func (s *Set) Run(ctx context.Context) {
	var wg sync.WaitGroup
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		s.reconcile(ctx, &wg)
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for _, e := range s.workers {
				e.cancel()
			}
			s.mu.Unlock()
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

func (s *Set) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	targets, err := s.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.Log.Warn("cannot read the registry", "err", err)
		}
		return
	}
	seen := map[string]bool{}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers == nil {
		s.workers = map[string]entry{}
	}
	for _, t := range targets {
		seen[t.ID] = true
		if e, ok := s.workers[t.ID]; ok {
			e.w.Update(t)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := s.Spawn(t)
		w.Update(t)
		s.workers[t.ID] = entry{w: w, cancel: cancel}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Run(wctx)
		}()
	}
	for id, e := range s.workers {
		if !seen[id] {
			// Gone from the registry (revocation delivered, tombstone
			// expired, or its location deleted): stop.
			e.cancel()
			delete(s.workers, id)
			if s.Removed != nil {
				s.Removed(id)
			}
		}
	}
}
