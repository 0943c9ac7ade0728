package budget

import (
	"context"
	"os"
	"sync"
	"time"
)

// MemStore is a Store in memory, of one run alone; the zero value is ready
// to use and safe for concurrent use.
type MemStore struct {
	mu      sync.Mutex
	state   State
	entries []LedgerEntry
}

// Update implements Store.
func (m *MemStore) Update(ctx context.Context, now time.Time, fn func(*State, time.Time) ([]LedgerEntry, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	s.extra = append([][2]string(nil), s.extra...)
	es, err := fn(&s, now)
	if err != nil {
		return err
	}
	m.state = s
	m.entries = append(m.entries, es...)
	return nil
}

// Load implements Store.
func (m *MemStore) Load(ctx context.Context) (State, error) { return m.State(), ctx.Err() }

// State is the current state.
func (m *MemStore) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Entries are the ledger entries appended so far.
func (m *MemStore) Entries() []LedgerEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]LedgerEntry(nil), m.entries...)
}

// Report implements Store.
func (m *MemStore) Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error) {
	return buildReport(opt, loc, m.scan(ctx))
}

// BatchEntries implements Store.
func (m *MemStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	return countBatches(ids, m.scan(ctx))
}

// scan reads the ledger kept so far.
func (m *MemStore) scan(ctx context.Context) ledgerRead {
	return func(fn func(LedgerEntry) error) (int, error) {
		for _, e := range m.Entries() {
			if err := fn(e); err != nil {
				return 0, err
			}
		}
		return 0, ctx.Err()
	}
}

// String is /dev/null, the name of a budget kept nowhere.
func (m *MemStore) String() string { return os.DevNull }

// Close implements Store; there is nothing to let go.
func (m *MemStore) Close() error { return nil }
