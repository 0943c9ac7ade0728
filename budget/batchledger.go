package budget

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// BatchLedger is a store whose ledger says what it holds of a Batch API
// batch: FileStore, MemStore and RedisStore.
type BatchLedger interface {
	// BatchEntries counts, for each batch id in ids, the ledger entries of
	// its lines. Since is when the earliest of them was submitted: a store
	// may skip what is older (a batch id is never used twice, so an entry
	// is never counted by its time).
	BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error)
}

// BatchEntries asks the gate's store what its ledger holds of the batches
// ids names: what collecting them settled before a kill or a broken
// download stopped it, so that collecting them again settles only the
// rest. A store that cannot say answers nil: nothing is known settled.
func (g *Gate) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	bl, ok := g.store.(BatchLedger)
	if !ok || len(ids) == 0 {
		return nil, nil
	}
	return bl.BatchEntries(ctx, since, ids)
}

// counter counts the entries of batches ids names.
type counter struct {
	ids map[string]bool
	n   map[string]int
}

func newCounter(ids map[string]bool) *counter {
	return &counter{ids: ids, n: map[string]int{}}
}

func (c *counter) add(e LedgerEntry) error {
	if e.BatchID != "" && c.ids[e.BatchID] {
		c.n[e.BatchID]++
	}
	return nil
}

// BatchEntries implements BatchLedger.
func (m *MemStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	c := newCounter(ids)
	for _, e := range m.Entries() {
		c.add(e) //nolint:errcheck // add never fails
	}
	return c.n, ctx.Err()
}

// BatchEntries implements BatchLedger. It reads the ledger without the
// lock: a line being appended is a torn last line, which is skipped, and
// only lines that name a batch are decoded.
func (f *FileStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	if f.mem != nil {
		return f.mem.BatchEntries(ctx, since, ids)
	}
	c := newCounter(ids)
	lf, err := os.Open(f.ledger)
	if errors.Is(err, os.ErrNotExist) {
		return c.n, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer lf.Close()
	br := bufio.NewReaderSize(lf, 256<<10)
	for {
		line, rerr := br.ReadSlice('\n')
		if rerr == bufio.ErrBufferFull {
			// A line longer than the buffer names no batch of ours.
			for rerr == bufio.ErrBufferFull {
				_, rerr = br.ReadSlice('\n')
			}
			continue
		}
		if rerr != nil && rerr != io.EOF {
			return nil, fmt.Errorf("ledger %s: %w", f.ledger, rerr)
		}
		if bytes.Contains(line, []byte(`"batch_id":`)) {
			var e LedgerEntry
			// A line that does not parse is a torn last one, or one that
			// Report names; it counts nothing here.
			if json.Unmarshal(line, &e) == nil {
				c.add(e) //nolint:errcheck // add never fails
			}
		}
		if rerr == io.EOF {
			return c.n, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// BatchEntries implements BatchLedger: every host's entries.
func (r *RedisStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	c := newCounter(ids)
	var from time.Time
	if !since.IsZero() {
		from = since.Add(-ledgerSkew)
	}
	if err := r.Ledger(ctx, from, c.add); err != nil {
		return nil, err
	}
	return c.n, nil
}
