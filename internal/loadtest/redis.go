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
	for _, clients := range []int{1, 4, 16} {
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
// after another in each, for d: reservations a second, the p50 and p99
// latency of one Reserve call, and the share of the client that got the
// fewest.
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
	got := make([]int, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		store, err := budget.OpenRedis(ctx, rs.URL(""), "bench")
		if err != nil {
			return 0, err
		}
		defer store.Close()
		g := budget.NewGate(store, l)
		wg.Go(func() {
			var mine []time.Duration
			defer func() { got[i] = len(mine) * block }()
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
	p99 := lat[len(lat)*99/100]
	least := slices.Min(got)
	fmt.Fprintf(w, "  %d calls, %.0f reservations/s, one Reserve p50 %d us, p99 %d us; the client with the fewest got 1/%.1f of them\n",
		len(lat), rate, lat[len(lat)/2].Microseconds(), p99.Microseconds(), float64(len(lat)*block)/float64(max(least, 1)))
	missed := 0
	say := func(goal string, ok bool) {
		verdict := "met"
		if !ok {
			verdict = "MISSED"
			missed++
		}
		fmt.Fprintf(w, "  goal %s: %s\n", goal, verdict)
	}
	if block == 16 && clients == 1 {
		say(">= 5000 reservations/s", rate >= 5000)
	}
	if clients == 16 {
		say("none starves (each >= 1/32 of the reservations)", least*32 >= len(lat)*block)
		say("p99 of a Reserve <= 10 ms", p99 <= 10*time.Millisecond)
	}
	return missed, nil
}
