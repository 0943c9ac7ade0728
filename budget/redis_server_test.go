package budget

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// These tests run against a real redis-server the test starts itself.

// noon is the time now in a zone where it is about noon, so that a test
// that starts a day on a real server does not see it end.
func noon() time.Time {
	utc := time.Now().UTC()
	return utc.In(time.FixedZone("noon", int((12*time.Hour-utc.Sub(utc.Truncate(24*time.Hour)))/time.Second)))
}

// closedAddr is an address on 127.0.0.1 where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// openReal opens the budget name ("": the default) at url.
func openReal(t testing.TB, url, name string) *RedisStore {
	t.Helper()
	r, err := OpenRedis(context.Background(), url, name)
	if err != nil {
		t.Fatalf("OpenRedis = %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// One limit refusing charges no other: a reservation is all or nothing.
func TestRedisAllOrNothing(t *testing.T) {
	srv := redistest.Shared(t)
	for _, tt := range []struct {
		name  string
		l     Limits
		e     Estimate
		why   Reason
		spent Estimate // what the first reservation charged
	}{
		{"tpd", Limits{RPM: 1000, TPM: 100000, TPD: 1000, DailyCost: Dollar}, Estimate{Tokens: 600, Cost: Dollar / 10}, DayTokens, Estimate{Tokens: 600, Cost: Dollar / 10}},
		{"daily cost", Limits{RPM: 1000, TPM: 100000, TPD: 100000, DailyCost: Dollar}, Estimate{Tokens: 10, Cost: Dollar * 6 / 10}, DayCost, Estimate{Tokens: 10, Cost: Dollar * 6 / 10}},
		{"tpm", Limits{RPM: 1000, TPM: 1000, TPD: 100000, DailyCost: Dollar}, Estimate{Tokens: 600, Cost: 1}, MinuteTokens, Estimate{Tokens: 600, Cost: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenRedis(context.Background(), srv.URL(""), fmt.Sprint(tt.name, "-", budgets.Add(1)))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			g := exactGate(r, tt.l)
			if n, _, _ := reserve(t, g, noon(), tt.e); n != 1 {
				t.Fatalf("first Reserve = %d, want 1", n)
			}
			if n, _, why := reserve(t, g, noon(), tt.e, tt.e); n != 0 || why != tt.why {
				t.Errorf("second Reserve = %d, %q; want 0, %q", n, why, tt.why)
			}
			st, err := r.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// The minute buckets drain while the test runs: never above one request's charge.
			if st.TokensWithinDay != tt.spent.Tokens || st.CostWithinDay != tt.spent.Cost || st.RequestsWithinMin > 1 || st.TokensWithinMin > float64(tt.spent.Tokens) {
				t.Errorf("state after a refusal = %+v; want only the first reservation charged", st)
			}
		})
	}
}

// Many hosts, many goroutines each, reserving at once never admit more
// than the limit.
func TestRedisConcurrent(t *testing.T) {
	srv, name := redistest.Shared(t), fmt.Sprint("concurrent-", budgets.Add(1))
	const hosts, workers, tpd, tokens = 4, 8, 10000, 7
	l := Limits{TPD: tpd, DailyCost: 1000 * Dollar}
	var mu sync.Mutex
	admitted := 0
	errs := make(chan error, hosts*workers)
	var wg sync.WaitGroup
	for range hosts {
		g := exactGate(openReal(t, srv.URL(""), name), l)
		for w := range workers {
			wg.Go(func() {
				for {
					n, _, why, err := g.Reserve(context.Background(), noon(), ones(1+w%4, tokens))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					admitted += n
					mu.Unlock()
					if why != "" {
						if why != DayTokens {
							errs <- fmt.Errorf("refused by %q, want %q", why, DayTokens)
						}
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, err := openReal(t, srv.URL(""), name).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := tpd / tokens; admitted != want || st.TokensWithinDay != int64(want*tokens) {
		t.Errorf("%d hosts × %d workers admitted %d (day %d tokens), want %d (%d tokens)", hosts, workers, admitted, st.TokensWithinDay, want, want*tokens)
	}
}

// A Redis that dies mid-run fails every operation with an error naming the
// store, and never its password.
func TestRedisKilled(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "s3cret")
	r := openReal(t, srv.URL("s3cret"), "")
	g := exactGate(r, Limits{RPM: 100})
	ctx := context.Background()
	if n, _, _ := reserve(t, g, noon(), Estimate{Tokens: 1}); n != 1 {
		t.Fatal("Reserve before the kill refused")
	}
	srv.Kill()
	_, _, _, rerr := g.Reserve(ctx, noon(), []Estimate{{Tokens: 1}})
	_, lerr := r.Load(ctx)
	for name, err := range map[string]error{
		"Reserve": rerr,
		"Settle":  g.Settle(ctx, noon(), []Settlement{{Est: Estimate{Tokens: 1}, Sent: true, Entry: &LedgerEntry{ID: "x"}}}),
		"Pause":   g.Pause(ctx, noon(), noon().Add(time.Second)),
		"Load":    lerr,
		"Update":  r.Update(ctx, time.Time{}, func(*State, time.Time) ([]LedgerEntry, error) { return nil, nil }),
		"Ledger":  r.Ledger(ctx, time.Time{}, func(LedgerEntry) error { return nil }),
	} {
		want := "store redis://:xxxxx@" + srv.Addr + "/0: "
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s with Redis killed = %v, want an error starting %q", name, err, want)
		}
	}
	// Back, empty (as after a failover that lost the writes): it works again.
	srv.Restart(t)
	if n, _, _ := reserve(t, g, noon(), Estimate{Tokens: 1}); n != 1 {
		t.Error("Reserve with Redis back refused")
	}
}

// A cancelled context stops an operation with its error.
func TestRedisContext(t *testing.T) {
	g := NewGate(openReal(t, redistest.Shared(t).URL(""), fmt.Sprint("context-", budgets.Add(1))), Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := g.Reserve(ctx, noon(), []Estimate{{}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Reserve with a cancelled context = %v, want context.Canceled", err)
	}
}

// BenchmarkRedisReserve is one reservation through a real redis-server on
// 127.0.0.1, in blocks of 1 and 16 as the pipeline's gate reserves when
// requests queue: reservations a second and the p99 latency of one Reserve
// call.
func BenchmarkRedisReserve(b *testing.B) {
	srv := redistest.Start(b)
	for _, block := range []int{1, 16} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			r, err := OpenRedis(context.Background(), srv.URL(""), fmt.Sprint("bench", block))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			g := NewGate(r, Limits{RPM: 1 << 40, TPM: 1 << 40, TPD: 1 << 50})
			ests := ones(block, 300)
			ctx := context.Background()
			var lat []time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				if got, _, _, err := g.Reserve(ctx, start, ests); err != nil || got != block {
					b.Fatalf("Reserve = %d, %v; want %d", got, err, block)
				}
				lat = append(lat, time.Since(start))
				n += block
			}
			slices.Sort(lat)
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "reservations/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkRedisReserveSettle is one request's reservation and settlement
// with its ledger entry, from 8 goroutines at once, as the pipeline does.
func BenchmarkRedisReserveSettle(b *testing.B) {
	srv := redistest.Start(b)
	for _, block := range []int{1, 16} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			r, err := OpenRedis(context.Background(), srv.URL(""), fmt.Sprint("benchsettle", block))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			g := NewGate(r, Limits{RPM: 1 << 40, TPM: 1 << 40, TPD: 1 << 50})
			ests := ones(block, 300)
			ss := make([]Settlement, block)
			for i := range ss {
				ss[i] = Settlement{Est: ests[i], Sent: true, Tokens: 200, Cost: 100, Entry: &LedgerEntry{ID: "x", Status: 200}}
			}
			b.SetParallelism(4) // 4 × GOMAXPROCS goroutines: the pipeline's workers share one gate
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, _, _, err := g.Reserve(ctx, time.Now(), ests); err != nil {
						b.Error(err)
						return
					}
					if err := g.Settle(ctx, time.Now(), ss); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*block)/b.Elapsed().Seconds(), "requests/s")
		})
	}
}

// A budget's keys of the wrong type are refused before anything is
// written: at the start of an update (the state is not a string, the
// ledger not a stream), and when one changes type between the read and
// the write, which then writes neither the state nor the ledger.
func TestRedisWrongTypes(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name, key string
		before    bool // set the wrong type before the update, else during it
	}{
		{"state before", ":state", true},
		{"ledger before", ":ledger", true},
		{"ledger during", ":ledger", false},
		{"state during", ":state", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("wrongtype-", budgets.Add(1))
			r, err := OpenRedis(ctx, srv.URL(""), name)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			key := "{gptbatch:" + name + "}" + tt.key
			wrong := func() {
				r.c.Del(ctx, key)
				if err := r.c.HSet(ctx, key, "x", "1").Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.before {
				wrong()
			}
			err = r.Update(ctx, noon(), func(s *State, _ time.Time) ([]LedgerEntry, error) {
				if !tt.before {
					wrong()
				}
				s.TokensWithinDay += 5
				return []LedgerEntry{{ID: "x"}}, nil
			})
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("Update with %s of the wrong type = %v, want an error naming it", key, err)
			}
			if n, _ := r.c.XLen(ctx, "{gptbatch:"+name+"}:ledger").Result(); n != 0 {
				t.Errorf("the ledger has %d entries after the failed update, want none", n)
			}
			if tt.key == ":ledger" {
				if st := stateOf(t, r); st.TokensWithinDay != 0 {
					t.Errorf("tokens_within_day = %d after the failed update, want 0: written without its ledger", st.TokensWithinDay)
				}
			}
			// The turn went back: the budget works once the key is right.
			r.c.Del(ctx, key)
			if err := SetStoredLimits(ctx, r, Limits{RPM: 8}); err != nil {
				t.Errorf("SetStoredLimits after the key was removed = %v", err)
			}
		})
	}
}

// A cluster is named by any one node, or by several (go-redis's ?addr=
// form): every form reaches the one budget, in the slot of its hash tag.
func TestRedisClusterForms(t *testing.T) {
	c := redistest.SharedCluster(t)
	ctx := context.Background()
	name := fmt.Sprint("forms-", budgets.Add(1))
	var stores []*RedisStore
	for _, url := range []string{c.URL(), "redis://" + c.Servers[2].Addr, c.SeedsURL()} {
		r, err := OpenRedis(ctx, url, name)
		if err != nil {
			t.Fatalf("OpenRedis(%s) = %v", url, err)
		}
		defer r.Close()
		stores = append(stores, r)
	}
	for i, r := range stores {
		if n, _, _ := reserve(t, NewGate(r, Limits{TPD: 100}), noon(), Estimate{Tokens: 10}); n != 1 {
			t.Fatalf("store %d: Reserve = %d, want 1", i, n)
		}
	}
	if st := stateOf(t, stores[0]); st.TokensWithinDay != 30 {
		t.Errorf("tokens_within_day = %d after one reservation through each form, want 30", st.TokensWithinDay)
	}
}

// A URL's password never appears in an error, even when the URL does not
// parse because of it.
func TestRedisURLRedacted(t *testing.T) {
	for _, url := range []string{"redis://:pa%ss@127.0.0.1:1/0", "redis://user:pa%ss@127.0.0.1:1/0", "rediss://:pa%zzs@host/0?x=1",
		"redis://127.0.0.1:1/0?master_name=m&password=pa%25ss", "redis://127.0.0.1:1/0?master_name=m&sentinel_password=pa%25ss&password=pa%25ss"} {
		_, err := OpenRedis(context.Background(), url, "")
		if err == nil || strings.Contains(err.Error(), "%ss") || strings.Contains(err.Error(), "pa%") || strings.Contains(err.Error(), "%zz") {
			t.Errorf("OpenRedis(%q) = %v, want an error without the password or a piece of it", url, err)
		}
	}
}

// A Sentinel URL (?master_name=) finds the master through the sentinel
// and keeps the budget there.
func TestRedisSentinel(t *testing.T) {
	sentinel := redistest.StartSentinel(t, "budgets")
	r, err := OpenRedis(context.Background(), "redis://"+sentinel.Addr+"/0?master_name=budgets", "")
	if err != nil {
		t.Fatalf("OpenRedis(sentinel) = %v", err)
	}
	defer r.Close()
	if n, _, _ := reserve(t, NewGate(r, Limits{TPD: 100}), noon(), Estimate{Tokens: 10}); n != 1 {
		t.Fatalf("Reserve through the sentinel's master = %d, want 1", n)
	}
	if st := stateOf(t, r); st.TokensWithinDay != 10 {
		t.Errorf("tokens_within_day = %d, want 10", st.TokensWithinDay)
	}
}

// A host that holds the turn past holdTurn (stalled, or cut off) loses it:
// another host takes it and writes, and the stalled host's write, when it
// comes, writes nothing and its update runs again on what the other
// wrote, so that neither write is lost.
func TestRedisTurnTakenBack(t *testing.T) {
	for _, kind := range []struct{ name, url string }{
		{"redis", redistest.Shared(t).URL("")},
		{"cluster", redistest.SharedCluster(t).URL()},
	} {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			name := fmt.Sprint("turn-test-", budgets.Add(1))
			open := func() *RedisStore {
				r, err := OpenRedis(ctx, kind.url, name)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			a, b := open(), open()
			started, written := make(chan struct{}), make(chan error, 1)
			go func() {
				<-started
				written <- b.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) {
					s.TokensWithinDay += 10
					return nil, nil
				})
			}()
			calls := 0
			err := a.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) {
				calls++
				if calls == 1 {
					close(started)
					if err := <-written; err != nil { // b waited out holdTurn
						return nil, err
					}
				}
				s.TokensWithinDay++
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if st := stateOf(t, a); calls != 2 || st.TokensWithinDay != 11 {
				t.Errorf("a stalled past holdTurn while b wrote: a's update ran %d times, tokens_within_day %d; want 2, 11", calls, st.TokensWithinDay)
			}
		})
	}
}
