package openaitest

import "context"

// changes wakes the goroutines waiting for the server's counts to change.
// Its zero value is ready; its methods are called with Server.mu held.
type changes struct {
	c chan struct{} // closed and replaced at each change; nil until waited on
}

// wait is a channel closed at the next change.
func (ch *changes) wait() <-chan struct{} {
	if ch.c == nil {
		ch.c = make(chan struct{})
	}
	return ch.c
}

// changed wakes every waiter.
func (ch *changes) changed() {
	if ch.c != nil {
		close(ch.c)
		ch.c = nil
	}
}

// WaitArrivals waits until at least n requests have arrived in all, or
// ctx ends, and returns ctx's error if it did.
func (s *Server) WaitArrivals(ctx context.Context, n int) error {
	return s.waitUntil(ctx, func() bool { return s.stats.Requests >= n })
}

// WaitInFlight waits until exactly n requests are in flight (arrived and
// not yet answered), or ctx ends, and returns ctx's error if it did.
func (s *Server) WaitInFlight(ctx context.Context, n int) error {
	return s.waitUntil(ctx, func() bool { return s.inFlight == n })
}

// waitUntil waits until cond, called with s.mu held, is true.
func (s *Server) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return nil
		}
		c := s.changes.wait()
		s.mu.Unlock()
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Wait waits until cond is true, or ctx ends, and returns ctx's error if
// it did. cond is called, without the server's locks, each time a call
// has been answered (and once at first): it may read BatchStats,
// BatchPolls and the like.
func (s *Server) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		c := s.changes.wait()
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
