package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/budget"
)

// sharedStore is where the shared budget lives: usage.md beside its
// ledger, or Redis (--store) with its ledger in a stream.
type sharedStore interface {
	budget.Store
	Load(ctx context.Context) (budget.State, error)
	Report(ctx context.Context, opt budget.ReportOptions, loc *time.Location) (budget.Report, error)
}

// quietRedis keeps go-redis from logging: every failure it meets reaches
// gptbatch as an error, which says it once, naming the store.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// openShared opens the store of the shared budget: the Redis --store
// names, else the usage file. close releases it. A Redis that does not
// answer is an error naming it, password redacted.
func (r *runCmd) openShared(ctx context.Context) (st sharedStore, close func(), err error) {
	if r.Store == "" {
		fs, err := r.openStore()
		if err != nil {
			return nil, nil, err
		}
		return fs, func() {}, nil
	}
	redis.SetLogger(quietRedis{})
	rs, err := budget.OpenRedis(ctx, r.Store, r.StoreName)
	if err != nil {
		return nil, nil, fmt.Errorf("the shared budget store is unreachable: %w", err)
	}
	return rs, func() { rs.Close() }, nil
}

// usedState is what the shared budget holds now, for a dry run: Redis's
// state, or usage.md's if it has one that parses.
func (r *runCmd) usedState(ctx context.Context) (budget.State, error) {
	if r.Store == "" {
		return r.usedToday(), nil
	}
	st, closeStore, err := r.openShared(ctx)
	if err != nil {
		return budget.State{}, err
	}
	defer closeStore()
	return st.Load(ctx)
}

// clockOffsetEnv names a duration that moves this host's clock: it plays a
// host whose clock is off, in the tests of a budget shared across hosts.
// It is not part of the interface.
const clockOffsetEnv = "GPTBATCH_TEST_CLOCK_OFFSET"

// clockOffset is $GPTBATCH_TEST_CLOCK_OFFSET, 0 when unset.
func clockOffset() (time.Duration, error) {
	v := os.Getenv(clockOffsetEnv)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", clockOffsetEnv, err)
	}
	return d, nil
}

// offsetClock is the wall clock moved by d (see clockOffsetEnv).
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time                         { return time.Now().Add(c.d) }
func (c offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
