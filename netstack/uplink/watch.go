package uplink

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Debounce is how long Watch gathers a burst of kernel messages into one
// notification.
const Debounce = 200 * time.Millisecond

// resubscribeAfter is the pause before subscribing again after a failed
// subscription.
const resubscribeAfter = time.Second

// Watch sends on the returned channel whenever an address, a default route or
// a link changes in the network namespace of the calling process, until ctx
// ends; then it closes the channel. Notifications are coalesced: the channel
// has capacity 1 and Watch never blocks on it.
func Watch(ctx context.Context, log *slog.Logger) <-chan struct{} {
	return watch(ctx, nil, log)
}

// WatchNS is Watch for the network namespace ns (the caller keeps ns open
// while watching).
func WatchNS(ctx context.Context, ns netns.NsHandle, log *slog.Logger) <-chan struct{} {
	return watch(ctx, &ns, log)
}

func watch(ctx context.Context, ns *netns.NsHandle, log *slog.Logger) <-chan struct{} {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "uplink")
	out := make(chan struct{}, 1)
	notify := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	// The first subscription is open before Watch returns: no change made
	// after the call is missed.
	sub, err := subscribe(ns)
	go func() {
		defer close(out)
		for {
			if err == nil {
				err = sub.run(ctx, log, notify)
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("netlink subscription failed; subscribing again", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(resubscribeAfter):
			}
			if sub, err = subscribe(ns); err == nil {
				// Changes may have happened while no subscription was open.
				notify()
			}
		}
	}()
	return out
}

// subscription is one set of netlink subscriptions.
type subscription struct {
	done   chan struct{}
	failed chan error
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	links  chan netlink.LinkUpdate
}

func subscribe(ns *netns.NsHandle) (*subscription, error) {
	s := &subscription{
		done:   make(chan struct{}),
		failed: make(chan error, 1),
		addrs:  make(chan netlink.AddrUpdate, 64),
		routes: make(chan netlink.RouteUpdate, 64),
		links:  make(chan netlink.LinkUpdate, 64),
	}
	var failOnce sync.Once
	onErr := func(err error) {
		select {
		case <-s.done: // closing the sockets on the way out reports an error too
			return
		default:
		}
		failOnce.Do(func() { s.failed <- err })
	}
	if err := netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		close(s.done)
		return nil, err
	}
	if err := netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		s.stop(true, false, false)
		return nil, err
	}
	if err := netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		s.stop(true, true, false)
		return nil, err
	}
	return s, nil
}

// stop closes the subscriptions and drains the open ones' channels: the
// library's readers block sending to them until they close.
func (s *subscription) stop(addrs, routes, links bool) {
	close(s.done)
	if addrs {
		go func() {
			for range s.addrs {
			}
		}()
	}
	if routes {
		go func() {
			for range s.routes {
			}
		}()
	}
	if links {
		go func() {
			for range s.links {
			}
		}()
	}
}

// run debounces the subscription's messages into notify until ctx ends or
// the subscription fails.
func (s *subscription) run(ctx context.Context, log *slog.Logger, notify func()) error {
	defer s.stop(true, true, true)
	var timer <-chan time.Time
	changed := func(what string) {
		log.Debug("kernel reports a change", "kind", what)
		if timer == nil {
			timer = time.After(Debounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.failed:
			return err
		case _, ok := <-s.addrs:
			if !ok {
				return errClosed
			}
			changed("address")
		case u, ok := <-s.routes:
			if !ok {
				return errClosed
			}
			if isDefault(u.Route) {
				changed("route")
			}
		case _, ok := <-s.links:
			if !ok {
				return errClosed
			}
			changed("link")
		case <-timer:
			timer = nil
			notify()
		}
	}
}

var errClosed = errors.New("the kernel's netlink socket closed")

// isDefault reports whether r is a default route (the library leaves Dst nil
// or sets it to the zero prefix, depending on the message).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && (r.Dst.IP.Equal(net.IPv4zero) || r.Dst.IP.Equal(net.IPv6zero))
}
