package budget

import (
	"context"
	"strings"
	"time"
)

// Store is the shared budget: the State, and the ledger of every call.
// Each store is safe for concurrent use.
type Store interface {
	// Update is one atomic read-modify-write across every process: when
	// fn, given the state and the store's time (now, or a Redis server's
	// clock), returns nil, it saves what fn left and appends fn's entries,
	// all or nothing. Waiting ends with ctx.
	Update(ctx context.Context, now time.Time, fn func(s *State, now time.Time) ([]LedgerEntry, error)) error
	// Load reads the state, changing nothing.
	Load(ctx context.Context) (State, error)
	// Report is what the ledger says was spent, every process's calls.
	Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error)
	// BatchEntries counts each batch's ledger entries; a store may skip
	// entries from before since, when the earliest was submitted.
	BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error)
	// StoredPrices is the price table stored with the budget, or nil; one
	// that does not parse is an error naming it.
	StoredPrices(ctx context.Context) (*Prices, error)
	// StorePrices replaces the stored table by p, all or nothing; nil
	// removes it.
	StorePrices(ctx context.Context, p *Prices) error
	// String names the store in messages, without a password.
	String() string
	// Close lets the store go.
	Close() error
}

// Options say how Open opens a store.
type Options struct {
	// Name is the budget in a Redis store; "" is "default".
	Name string
	// ReadOnly opens a usage file for reading alone: no lock, nothing
	// created, and Update fails.
	ReadOnly bool
	// OnLockWait, when set, is told once per wait, from the waiting
	// goroutine, that the lock has been held elsewhere for a second.
	OnLockWait func(msg string)
}

// Open opens the budget spec names: a redis:// or rediss:// URL, /dev/null
// by any name (a MemStore), or a usage file.
func Open(ctx context.Context, spec string, o Options) (Store, error) {
	switch {
	case strings.Contains(spec, "://"):
		return OpenRedis(ctx, spec, o.Name)
	case isDevNull(spec):
		return new(MemStore), nil
	}
	return OpenFile(spec, o)
}
