package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// fakeControlStream is core's end of a Control stream, in memory: what the
// gateway sends arrives on sent, Recv blocks until the stream ends.
type fakeControlStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *gw.GatewayMessage
}

func newFakeControlStream(ctx context.Context) *fakeControlStream {
	return &fakeControlStream{ctx: ctx, sent: make(chan *gw.GatewayMessage, 64)}
}

func (f *fakeControlStream) Context() context.Context { return f.ctx }

func (f *fakeControlStream) Send(m *gw.GatewayMessage) error {
	select {
	case f.sent <- m:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

func (f *fakeControlStream) Recv() (*gw.CoreMessage, error) {
	<-f.ctx.Done()
	return nil, f.ctx.Err()
}

func (f *fakeControlStream) next(t *testing.T) *gw.GatewayMessage {
	t.Helper()
	select {
	case m := <-f.sent:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway sent nothing within 5s")
		return nil
	}
}

// nextRole skips messages other than role reports (none are expected, but
// the stream may carry anything) and returns the next role report.
func (f *fakeControlStream) nextRole(t *testing.T) *gw.RoleStatus {
	t.Helper()
	for {
		if r := f.next(t).GetRole(); r != nil {
			return r
		}
	}
}

func (f *fakeControlStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-f.sent:
		t.Fatalf("unexpected message %v", m)
	case <-time.After(d):
	}
}

// TestRoleReportedToCore: Hello carries the role and since when it holds
// it; every change reaches every open stream as one RoleStatus, and a
// notify that changes nothing sends nothing.
func TestRoleReportedToCore(t *testing.T) {
	g, _ := haGateway(t, netip192())
	start := g.roles.get()
	if start.Role != RoleStandby {
		t.Fatalf("start: %+v, want standby (192.0.2.254 is on no interface)", start)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := []*fakeControlStream{newFakeControlStream(ctx), newFakeControlStream(ctx)}
	done := make(chan error, len(streams))
	for i, s := range streams {
		go func() { done <- g.serveControl([]string{"core-1", "core-2"}[i], s) }()
	}
	for _, s := range streams {
		h := s.next(t).GetHello()
		if h == nil {
			t.Fatal("first message is not a Hello")
		}
		if h.GetRole() != gw.Role_ROLE_STANDBY || h.GetRoleSince() != start.Since.UnixMilli() {
			t.Fatalf("hello role %v since %d, want standby since %d", h.GetRole(), h.GetRoleSince(), start.Since.UnixMilli())
		}
	}
	waitLinks := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			links, _ := g.linkSnapshot()
			if len(links) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d links, want %d", len(links), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitLinks(2)
	for _, s := range streams {
		s.quiet(t, 50*time.Millisecond) // nothing changed since Hello
	}

	for _, step := range []struct {
		state string
		want  gw.Role
	}{{NotifyMaster, gw.Role_ROLE_ACTIVE}, {NotifyFault, gw.Role_ROLE_STANDBY}, {NotifyMaster, gw.Role_ROLE_ACTIVE}} {
		info, changed, err := g.roles.notify(step.state)
		if err != nil || !changed {
			t.Fatalf("notify %s: changed %v, %v", step.state, changed, err)
		}
		g.roleUpdated(info, changed)
		for i, s := range streams {
			r := s.nextRole(t)
			if r.GetRole() != step.want || r.GetSince() != info.Since.UnixMilli() {
				t.Fatalf("stream %d after %s: %v since %d, want %v since %d", i, step.state, r.GetRole(), r.GetSince(), step.want,
					info.Since.UnixMilli())
			}
		}
	}
	// master again: no change, no report.
	info, changed, err := g.roles.notify(NotifyMaster)
	if err != nil || changed {
		t.Fatalf("repeated master: changed %v, %v", changed, err)
	}
	g.roleUpdated(info, changed)
	for _, s := range streams {
		s.quiet(t, 50*time.Millisecond)
	}

	cancel()
	for range streams {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("stream ended with %v", err)
		}
	}
}

// TestRoleChangeBeforeLinkRegistered: a change between reading the role for
// Hello and registering the link is still reported on that link.
func TestRoleChangeBeforeLinkRegistered(t *testing.T) {
	g, _ := haGateway(t, netip192())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newFakeControlStream(ctx)
	// Hold the send of Hello: the link is not registered yet while the
	// role changes.
	block := make(chan struct{})
	held := &heldStream{fakeControlStream: s, release: block, waiting: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- g.serveControl("core-1", held) }()
	<-held.waiting
	info, changed, err := g.roles.notify(NotifyMaster)
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	g.roleUpdated(info, changed) // no link to tell yet
	close(block)
	if h := s.next(t).GetHello(); h.GetRole() != gw.Role_ROLE_STANDBY {
		t.Fatalf("hello role %v, want the standby read before the change", h.GetRole())
	}
	if r := s.nextRole(t); r.GetRole() != gw.Role_ROLE_ACTIVE || r.GetSince() != info.Since.UnixMilli() {
		t.Fatalf("role report %v since %d, want active since %d", r.GetRole(), r.GetSince(), info.Since.UnixMilli())
	}
	cancel()
	<-done
}

// heldStream holds its first Send until release is closed.
type heldStream struct {
	*fakeControlStream
	release <-chan struct{}
	waiting chan struct{}
	first   bool
}

func (h *heldStream) Send(m *gw.GatewayMessage) error {
	if !h.first {
		h.first = true
		close(h.waiting)
		<-h.release
	}
	return h.fakeControlStream.Send(m)
}

// TestRoleProto: a gateway without floating IP says active.
func TestRoleProto(t *testing.T) {
	g, _ := haGateway(t)
	if r := roleProto(g.roles.get().Role); r != gw.Role_ROLE_ACTIVE {
		t.Fatalf("no floating IP: %v, want active", r)
	}
	if r := roleProto(""); r != gw.Role_ROLE_UNSPECIFIED {
		t.Fatalf("empty role: %v", r)
	}
}
