package cli

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/budget"
)

// sharedStore is where the shared budget lives: usage.md beside its
// ledger, or Redis (--store) with its ledger in a stream.
type sharedStore interface {
	budget.Store
	budgetReader
	StorePrices(ctx context.Context, p *budget.Prices) error
}

// quietRedis keeps go-redis from logging: every failure it meets reaches
// gptbatch as an error, which says it once, naming the store.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// openStore opens the shared budget to run against or to change: the
// Redis --store names, else the usage file (warn hears of a wait for its
// lock). It says where the budget is (a Redis URL with its password
// redacted) and returns a close for it. A Redis that does not answer is an
// error naming it.
func (r *runCmd) openStore(ctx context.Context, warn func(string)) (st sharedStore, where string, close func(), err error) {
	if r.Store == "" {
		path, err := r.usagePath()
		if err != nil {
			return nil, "", nil, err
		}
		var opts []budget.FileOption
		if warn != nil {
			opts = append(opts, budget.OnLockWait(warn))
		}
		fs, err := budget.OpenFile(path, opts...)
		if err != nil {
			return nil, "", nil, err
		}
		return fs, fs.Path(), func() {}, nil
	}
	rs, err := r.openRedis(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	return rs, rs.String(), func() { rs.Close() }, nil
}

// openReader opens the shared budget for reading only, and says where it
// is: for a usage file it takes no lock and creates nothing, so that
// reports work on a read-only or a missing state directory.
func (r *runCmd) openReader(ctx context.Context) (rd budgetReader, where string, close func(), err error) {
	if r.Store == "" {
		path, err := r.usagePath()
		if err != nil {
			return nil, "", nil, err
		}
		return usageFile(path), path, func() {}, nil
	}
	rs, err := r.openRedis(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	return rs, rs.String(), func() { rs.Close() }, nil
}

func (r *runCmd) openRedis(ctx context.Context) (*budget.RedisStore, error) {
	redis.SetLogger(quietRedis{})
	rs, err := budget.OpenRedis(ctx, r.Store, r.StoreName)
	if err != nil {
		return nil, fmt.Errorf("the shared budget store is unreachable: %w", err)
	}
	return rs, nil
}
