package budget

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// TestMain stops the redis-server and the cluster the tests share.
func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }

// budgets numbers the budgets the tests make in the shared servers.
var budgets atomic.Int64

// onEveryStore runs test on every kind of store: in memory, a usage file,
// one redis-server and a 3-master Redis Cluster (the last two skipped, as
// redistest skips, without redis-server). open gives a fresh budget,
// holding seed, whose clock is the test's own: the rules are the Gate's,
// in Go, and must decide alike on every store. Subtests pass their own t.
// The test runs in parallel with the others that use onEveryStore: each
// has budgets of its own, and no clock but its own.
func onEveryStore(t *testing.T, test func(t *testing.T, open func(t *testing.T, seed State) Store)) {
	t.Helper()
	t.Parallel()
	ctx := context.Background()
	seeded := func(t *testing.T, s Store, seed State) Store {
		t.Helper()
		if err := s.Update(ctx, time.Time{}, func(st *State, _ time.Time) ([]LedgerEntry, error) { *st = seed; return nil, nil }); err != nil {
			t.Fatalf("seed %s: %v", s, err)
		}
		return s
	}
	redis := func(t *testing.T, url string) Store {
		t.Helper()
		r, err := OpenRedis(ctx, url, fmt.Sprint("gate-test-", budgets.Add(1)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		r.hostClock = true
		return r
	}
	for _, kind := range []struct {
		name string
		open func(t *testing.T) Store
	}{
		{"memory", func(*testing.T) Store { return new(MemStore) }},
		{"file", func(t *testing.T) Store {
			f, err := OpenFile(filepath.Join(t.TempDir(), "usage.md"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{"redis", func(t *testing.T) Store { return redis(t, redistest.Shared(t).URL("")) }},
		{"cluster", func(t *testing.T) Store { return redis(t, redistest.SharedCluster(t).URL()) }},
	} {
		t.Run(kind.name, func(t *testing.T) {
			test(t, func(t *testing.T, seed State) Store { return seeded(t, kind.open(t), seed) })
		})
	}
}

// stateOf is what s holds.
func stateOf(t *testing.T, s Store) State {
	t.Helper()
	st, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	return st
}
