package budget

import (
	"context"
)

// Store holds the shared State. Update is a locked read-modify-write: it
// loads the state, calls fn, and when fn returns nil saves what fn left and
// appends the ledger entries fn returned, all under one lock. A store that
// many hosts share (Redis, say) is another implementation of this
// interface. Implementations are safe for concurrent use.
type Store interface {
	Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error
}
