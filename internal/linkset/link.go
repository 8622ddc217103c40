package linkset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
)

// ErrRevocationDelivered ends a session whose component was told that it
// was deleted in core; the link then forgets the component.
var ErrRevocationDelivered = errors.New("revocation delivered")

// Kind is what differs between the links to gateways and to proxies.
type Kind interface {
	// Adopt runs the join-token exchange and returns the issued serial.
	Adopt(ctx context.Context, t vpn.GatewayTarget) (serial string, err error)
	// Session holds the control stream until it fails. connected tells
	// whether the component answered (it resets the backoff).
	Session(ctx context.Context, t vpn.GatewayTarget) (connected bool, err error)
	// Forget removes the tombstone of a component told it is revoked.
	Forget(ctx context.Context, id string) error
	// Failed records why an attempt failed.
	Failed(ctx context.Context, id string, err error)
}

// Link keeps one component connected: adoption while it has a join token,
// then sessions with jittered backoff, and delivery of its revocation.
type Link struct {
	kind       Kind
	noun       string // "gateway" or "proxy", for messages
	log        *slog.Logger
	maxBackoff time.Duration
	wake       chan struct{}
	revoked    chan struct{}

	mu     sync.Mutex
	target vpn.GatewayTarget
}

// NewLink builds the link of one component.
func NewLink(kind Kind, noun string, log *slog.Logger, maxBackoff time.Duration) *Link {
	return &Link{kind: kind, noun: noun, log: log, maxBackoff: maxBackoff, wake: make(chan struct{}, 1), revoked: make(chan struct{})}
}

// Target is the component's current registry entry.
func (l *Link) Target() vpn.GatewayTarget {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.target
}

// Revoked is closed when the component is deleted in core, so a live
// session can tell it at once.
func (l *Link) Revoked() <-chan struct{} { return l.revoked }

// Update implements Worker.
func (l *Link) Update(t vpn.GatewayTarget) {
	l.mu.Lock()
	changed := l.target.ControlAddress != t.ControlAddress || l.target.CertSerial != t.CertSerial ||
		string(l.target.JoinKey) != string(t.JoinKey) || l.target.Revoked != t.Revoked
	if t.Revoked && !l.target.Revoked {
		close(l.revoked)
	}
	l.target = t
	l.mu.Unlock()
	if changed {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// Run implements Worker.
func (l *Link) Run(ctx context.Context) {
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for ctx.Err() == nil {
		t := l.Target()
		var err error
		switch {
		case t.Revoked && t.CertSerial == "":
			err = ErrRevocationDelivered // never adopted: nothing to tell
		case t.CertSerial == "":
			if len(t.JoinKey) == 0 || time.Now().UnixMilli() > t.JoinExpiresAt {
				err = fmt.Errorf("not adopted and no valid join token: issue one and start the %s with it", l.noun)
				break
			}
			var serial string
			if serial, err = l.kind.Adopt(ctx, t); err == nil {
				l.log.Info(l.noun+" adopted", "cert_serial", serial)
				l.mu.Lock()
				l.target.CertSerial, l.target.JoinKey = serial, nil
				l.mu.Unlock()
				backoff = minBackoff
				continue // connect with the new identity at once
			}
		default: // adopted, or revoked and still to be told
			var connected bool
			connected, err = l.kind.Session(ctx, t)
			if connected {
				backoff = minBackoff
			}
		}
		if errors.Is(err, ErrRevocationDelivered) {
			ferr := l.kind.Forget(ctx, t.ID)
			if ferr == nil {
				l.log.Info(l.noun + " told it is revoked; forgotten")
				return
			}
			err = fmt.Errorf("cannot remove the revoked %s: %w", l.noun, ferr)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.log.Warn(l.noun+" link attempt failed", "err", err)
			l.kind.Failed(ctx, t.ID, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-time.After(jitter(backoff)):
		}
		backoff = min(backoff*2, l.maxBackoff)
	}
}
