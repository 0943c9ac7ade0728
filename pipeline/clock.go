package pipeline

import "time"

// Clock is the time a run goes by: admission waits, back-off, retry-after
// and the ledger's times all read it, so tests can run them on simulated
// time. Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
	// After sends the time on the returned channel once d has passed, as
	// time.After does.
	After(d time.Duration) <-chan time.Time
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
