package core

import "sync"

// Hub wakes up the followers of a location (gateway streams) when its
// revision changed. Wake-ups coalesce: a follower that is busy sees one
// pending signal and then reads the newest state from the database, so a
// slow follower never blocks a publisher and never misses the latest change.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[chan struct{}]struct{}{}} }

// Subscribe returns a channel that receives a signal after every change of
// the location, and a function that ends the subscription.
func (h *Hub) Subscribe(locationID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[locationID] == nil {
		h.subs[locationID] = map[chan struct{}]struct{}{}
	}
	h.subs[locationID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[locationID], ch)
		if len(h.subs[locationID]) == 0 {
			delete(h.subs, locationID)
		}
		h.mu.Unlock()
	}
}

// PublishAll signals every subscriber, e.g. after wake-ups may have been
// missed while the database connection carrying them was down.
func (h *Hub) PublishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Publish signals every subscriber of the location.
func (h *Hub) Publish(locationID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[locationID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
