package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/redistest"
)

// bench is a measurement that is not a run of the binary.
type bench struct {
	name string
	run  func(w io.Writer) (missed int, err error)
}

func benches() []bench {
	var bs []bench
	for _, clients := range []int{1, 4} {
		for _, block := range []int{1, 16} {
			bs = append(bs, bench{
				name: fmt.Sprintf("redis-reserve: Gate.Reserve through one redis-server on 127.0.0.1, blocks of %d, %d client(s), 3 s", block, clients),
				run:  func(w io.Writer) (int, error) { return redisReserve(w, block, clients, 3*time.Second) },
			})
		}
	}
	return bs
}

// redisReserve reserves blocks of block estimates through a RedisStore,
// from clients gates (each its own connection pool, as hosts), one call
// after another in each, for d: reservations a second and the p50 and
// p99 latency of one Reserve call.
func redisReserve(w io.Writer, block, clients int, d time.Duration) (int, error) {
	rs, err := redistest.Run()
	if err != nil {
		return 0, fmt.Errorf("redis-server: %w", err)
	}
	defer rs.Kill()
	ctx := context.Background()
	// Limits far above what the run can reach: every call admits its block.
	l := budget.Limits{RPM: 1 << 40, TPM: 1 << 40, TPD: 1 << 50, DailyCost: 1 << 60}
	ests := make([]budget.Estimate, block)
	for i := range ests {
		ests[i] = budget.Estimate{Tokens: 300, Cost: 45_000_000}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		store, err := budget.OpenRedis(ctx, rs.URL(""), "bench")
		if err != nil {
			return 0, err
		}
		defer store.Close()
		g := budget.NewGate(store, l)
		wg.Go(func() {
			var mine []time.Duration
			for time.Since(start) < d {
				t := time.Now()
				n, _, _, err := g.Reserve(ctx, t, ests)
				if err == nil && n != block {
					err = fmt.Errorf("reserve admitted %d of %d", n, block)
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	slices.Sort(lat)
	rate := float64(len(lat)*block) / wall.Seconds()
	fmt.Fprintf(w, "  %d calls, %.0f reservations/s, one Reserve p50 %d us, p99 %d us\n",
		len(lat), rate, lat[len(lat)/2].Microseconds(), lat[len(lat)*99/100].Microseconds())
	missed := 0
	if block == 16 {
		verdict := "met"
		if rate < 5000 {
			verdict, missed = "MISSED", 1
		}
		fmt.Fprintf(w, "  goal >= 5000 reservations/s: %s\n", verdict)
	}
	return missed, nil
}
