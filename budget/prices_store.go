package budget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// A stored price table (`gptbatch prices load`) is kept as Prices.Format
// writes it, in usage.prices.json or at {gptbatch:NAME}:prices.

// StoredPrices implements Store, without the lock: it is replaced whole.
func (f *FileStore) StoredPrices(ctx context.Context) (*Prices, error) {
	b, err := readRegular(f.prices)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stored price table %s: %w", f.prices, err)
	}
	p, err := ParsePrices(b, SourceStored)
	if err != nil {
		return nil, fmt.Errorf("stored price table %s is corrupt; store it again with gptbatch prices load, or remove it with gptbatch prices clear: %w", f.prices, err)
	}
	return p, nil
}

// StorePrices implements Store, under the lock.
func (f *FileStore) StorePrices(ctx context.Context, p *Prices) error {
	return f.locked(ctx, func(time.Duration) error {
		if p == nil {
			if err := os.Remove(f.prices); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("stored price table: %w", err)
			}
			return nil
		}
		return writeAtomic(f.prices, p.Format(), f.path)
	})
}

// StoredPrices implements Store: a budget in memory has none.
func (m *MemStore) StoredPrices(ctx context.Context) (*Prices, error) { return nil, ctx.Err() }

// StorePrices implements Store: memory keeps nothing for other runs.
func (m *MemStore) StorePrices(ctx context.Context, p *Prices) error {
	return errors.New("a usage file of /dev/null keeps nothing for other runs: name a usage file, or a --store")
}

// StoredPrices implements Store.
func (r *RedisStore) StoredPrices(ctx context.Context) (*Prices, error) {
	b, err := r.c.Get(ctx, r.tag+":prices").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, r.fail(err)
	}
	p, err := ParsePrices(b, SourceStored)
	if err != nil {
		return nil, r.fail(fmt.Errorf("the stored price table %s is corrupt; store it again with gptbatch prices load, or remove it with gptbatch prices clear: %w", r.tag+":prices", err))
	}
	return p, nil
}

// StorePrices implements Store, in one command.
func (r *RedisStore) StorePrices(ctx context.Context, p *Prices) error {
	var err error
	if p == nil {
		err = r.c.Del(ctx, r.tag+":prices").Err()
	} else {
		err = r.c.Set(ctx, r.tag+":prices", p.Format(), 0).Err()
	}
	return r.fail(err)
}
