package accounts

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

// queueProbe drives a fairQueue from goroutines: ask starts an acquire and returns
// once it holds a slot, waits, or was refused.
type queueProbe struct {
	t       *testing.T
	q       *fairQueue
	arrived chan string
}

type ticket struct {
	source string
	done   chan error
}

func newProbe(t *testing.T, slots, waiting int) *queueProbe {
	p := &queueProbe{t: t, q: newFairQueue(slots, waiting, time.Now), arrived: make(chan string, 100)}
	p.q.onArrive = func(s string) { p.arrived <- s }
	return p
}

// ask starts an acquire for source; hashing reports whether it got a slot at once.
func (p *queueProbe) ask(source string) (tk *ticket, hashing bool, err error) {
	tk = &ticket{source: source, done: make(chan error, 1)}
	go func() { tk.done <- p.q.acquire(source) }()
	select {
	case <-p.arrived: // waiting
		return tk, false, nil
	case err := <-tk.done:
		return tk, err == nil, err
	}
}

func (p *queueProbe) mustWait(source string) *ticket {
	p.t.Helper()
	tk, hashing, err := p.ask(source)
	if err != nil || hashing {
		p.t.Fatalf("%s: hashing=%v err=%v, want to wait", source, hashing, err)
	}
	return tk
}

func busy(err error) bool {
	var fe *fault.Error
	return errors.Is(err, fault.ErrTooMany) && errors.As(err, &fe) && fe.Code == "login_busy"
}

func TestFairQueueShareTurnAndDisplacement(t *testing.T) {
	p := newProbe(t, 1, 4) // 5 places
	// Alone, a source may use every place.
	if _, hashing, err := p.ask("peer"); !hashing || err != nil {
		t.Fatalf("first ask: hashing=%v err=%v", hashing, err)
	}
	var peer []*ticket
	for i := 0; i < 4; i++ {
		peer = append(peer, p.mustWait("peer"))
	}
	if _, _, err := p.ask("peer"); !busy(err) {
		t.Fatalf("6th place: %v, want login_busy", err)
	}
	// The admin's quiet address takes the place of the peer's newest waiter...
	admin := p.mustWait("admin")
	if err := <-peer[3].done; !busy(err) {
		t.Fatalf("the displaced waiter got %v, want login_busy", err)
	}
	// ...and, having asked least, has the next turn.
	p.q.release("peer")
	if err := <-admin.done; err != nil {
		t.Fatalf("admin: %v", err)
	}
	for i := 0; i < 3; i++ {
		select {
		case err := <-peer[i].done:
			t.Fatalf("peer waiter %d went before the admin finished: %v", i, err)
		default:
		}
	}
	// With two sources holding places, a share is 5/3 = 1 for a third and 2 each:
	// the peer, holding 3, is refused another.
	if _, _, err := p.ask("peer"); !busy(err) {
		t.Fatalf("peer over its share: %v, want login_busy", err)
	}
	// The peer's waiters are served in order once the admin is done.
	p.q.release("admin")
	for i := 0; i < 3; i++ {
		if err := <-peer[i].done; err != nil {
			t.Fatalf("peer waiter %d: %v", i, err)
		}
		p.q.release("peer")
	}
	p.q.mu.Lock()
	defer p.q.mu.Unlock()
	if p.q.free != 1 || len(p.q.held) != 0 || len(p.q.waiters) != 0 {
		t.Fatalf("after all: free %d held %v waiters %d", p.q.free, p.q.held, len(p.q.waiters))
	}
}

func TestFairQueueFloodFromManySources(t *testing.T) {
	p := newProbe(t, 1, 4)
	// Busy sources that asked many times each hold a place.
	for i := 0; i < 5; i++ {
		src := string(rune('a' + i))
		for j := 0; j < 10; j++ {
			p.q.mu.Lock()
			p.q.askLocked(src, time.Now())
			p.q.mu.Unlock()
		}
	}
	if _, hashing, _ := p.ask("a"); !hashing {
		t.Fatal("a did not hash")
	}
	var flood []*ticket
	for _, src := range []string{"b", "c", "d", "e"} {
		flood = append(flood, p.mustWait(src))
	}
	// Another source that holds nothing yet but asked more than any waiter cannot
	// displace one ...
	p.q.mu.Lock()
	for j := 0; j < 20; j++ {
		p.q.askLocked("f", time.Now())
	}
	p.q.mu.Unlock()
	if _, _, err := p.ask("f"); !busy(err) {
		t.Fatalf("f: %v, want login_busy", err)
	}
	// ... but a quiet one displaces the busiest and goes next.
	admin := p.mustWait("admin")
	p.q.mu.Lock()
	var left []string
	for _, w := range p.q.waiters {
		left = append(left, w.source)
	}
	p.q.mu.Unlock()
	if len(left) != 4 || !slices.Contains(left, "admin") {
		t.Fatalf("waiting after the admin came: %v", left)
	}
	for _, tk := range flood {
		if !slices.Contains(left, tk.source) {
			if err := <-tk.done; !busy(err) {
				t.Fatalf("displaced %s: %v", tk.source, err)
			}
		}
	}
	p.q.release("a")
	if err := <-admin.done; err != nil {
		t.Fatal(err)
	}
}
