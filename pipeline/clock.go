package pipeline

import (
	"math/rand/v2"
	"time"
)

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

// randomJitter is a uniform random duration in [0, n); 0 when n <= 0.
func randomJitter(n time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	return rand.N(n) //nolint:gosec // jitter, not a secret
}
