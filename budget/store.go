package budget

import (
	"context"
	"strings"
	"time"
)

// Store is the shared budget: the State every gptbatch sharing it decides
// by, and the ledger of every call. Open picks one of MemStore, FileStore
// and RedisStore; each is safe for concurrent use.
type Store interface {
	// Update is one atomic read-modify-write across every process
	// sharing the store: it calls fn with the state and the store's time,
	// and when fn returns nil saves what fn left and appends the entries
	// fn returned, all or nothing. The store's time is now, or a Redis
	// server's clock, read with the state. Waiting ends with ctx.
	Update(ctx context.Context, now time.Time, fn func(s *State, now time.Time) ([]LedgerEntry, error)) error
	// Load reads the state, changing nothing.
	Load(ctx context.Context) (State, error)
	// Report is what the ledger says was spent, every process's calls.
	Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error)
	// BatchEntries counts, for each batch id in ids, the ledger entries
	// of its lines. A store may skip entries older than since, when the
	// earliest was submitted.
	BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error)
	// StoredPrices is the price table stored with the budget (`gptbatch
	// prices load`); nil when there is none. One that does not parse is an
	// error naming it.
	StoredPrices(ctx context.Context) (*Prices, error)
	// StorePrices stores p with the budget, replacing the table stored
	// before, all or nothing; a nil p removes it.
	StorePrices(ctx context.Context, p *Prices) error
	// String names the store in messages: the usage file, or the Redis
	// URL without its password.
	String() string
	// Close lets the store go.
	Close() error
}

// Options say how Open opens a store.
type Options struct {
	// Name is the budget in a Redis store; "" is "default".
	Name string
	// ReadOnly opens a usage file for reading alone, as `usage`, `limits`
	// and `batches` read it: no lock, nothing created, and Update fails.
	ReadOnly bool
	// OnLockWait, when set, is told once per wait, from the waiting
	// goroutine, that the usage file's lock has been held by someone else
	// for about a second.
	OnLockWait func(msg string)
}

// Open opens the shared budget spec names: a redis:// or rediss:// URL
// (OpenRedis), /dev/null by any name (a MemStore: this run's alone), or a
// usage file (OpenFile).
func Open(ctx context.Context, spec string, o Options) (Store, error) {
	switch {
	case strings.Contains(spec, "://"):
		return OpenRedis(ctx, spec, o.Name)
	case isDevNull(spec):
		return new(MemStore), nil
	}
	return OpenFile(spec, o)
}
