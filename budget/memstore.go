package budget

import (
	"context"
	"sync"
)

// MemStore is a Store in memory, for dry runs and tests. The zero value is
// ready to use; it is safe for concurrent use.
type MemStore struct {
	mu      sync.Mutex
	state   State
	entries []LedgerEntry
}

// Update implements Store.
func (m *MemStore) Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	s.extra = append([][2]string(nil), s.extra...)
	es, err := fn(&s)
	if err != nil {
		return err
	}
	m.state = s
	m.entries = append(m.entries, es...)
	return nil
}

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
