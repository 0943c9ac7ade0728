package budget

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// miniStore is a RedisStore on a miniredis whose clock the test sets.
func miniStore(t *testing.T) (*miniredis.Miniredis, *RedisStore) {
	t.Helper()
	m := miniredis.RunT(t)
	m.SetTime(t0)
	r, err := OpenRedis(context.Background(), "redis://"+m.Addr()+"/0", "test")
	if err != nil {
		t.Fatalf("OpenRedis(miniredis) = %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return m, r
}

func load(t *testing.T, r *RedisStore) State {
	t.Helper()
	st, err := r.Load(context.Background())
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	return st
}

// step is one operation of a parity case, at a time after the case's
// start that is both the host's and the server's clock.
type step struct {
	at      time.Duration
	reserve []Estimate
	settle  []Settlement
	sync    *ServerUsage  // with pause
	pause   time.Duration // for sync
}

// result is what a step returns that a caller sees.
type result struct {
	N    int
	Wait time.Duration
	Why  Reason
	Err  string
}

// sameState compares what both stores hold. The Go path keeps the host's
// location in its times; only the instants count.
func sameState(a, b State) bool {
	return a.Date == b.Date && a.TokensWithinMin == b.TokensWithinMin && a.RequestsWithinMin == b.RequestsWithinMin &&
		a.TokensWithinDay == b.TokensWithinDay && a.CostWithinDay == b.CostWithinDay &&
		a.MinuteTokenLimitReached == b.MinuteTokenLimitReached && a.DayTokenLimitReached == b.DayTokenLimitReached &&
		a.Updated.Equal(b.Updated) && a.PausedUntil.Equal(b.PausedUntil)
}

func run(ctx context.Context, g *Gate, now time.Time, s step) result {
	var r result
	var err error
	switch {
	case s.reserve != nil:
		r.N, r.Wait, r.Why, err = g.Reserve(ctx, now, s.reserve)
	case s.settle != nil:
		err = g.Settle(ctx, now, s.settle)
	case s.sync != nil:
		err = g.Sync(ctx, now, now.Add(s.pause), *s.sync)
	}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// checkParity runs steps through a Gate over a MemStore (the Go code) and
// through one over a RedisStore (the Lua scripts, on a miniredis at the
// same time) and fails at the first step where they differ in what they
// return or in the state they leave.
// It returns the reasons for waiting that the steps met.
func checkParity(t *testing.T, l Limits, slack time.Duration, start time.Time, steps []step) map[Reason]int {
	t.Helper()
	ctx := context.Background()
	m, r := miniStore(t)
	mem := new(MemStore)
	goGate, luaGate := NewGate(mem, l), NewGate(r, l)
	goGate.SetSlack(slack)
	luaGate.SetSlack(slack)
	seen := map[Reason]int{}
	for i, s := range steps {
		now := start.Add(s.at)
		m.SetTime(now)
		want := run(ctx, goGate, now, s)
		got := run(ctx, luaGate, now, s)
		if got != want {
			t.Fatalf("step %d at %v: Lua = %+v, want %+v as the Go code", i, s.at, got, want)
		}
		if gs, ws := load(t, r), mem.State(); !sameState(gs, ws) {
			t.Fatalf("step %d at %v: Lua state = %+v, want %+v as the Go code", i, s.at, gs, ws)
		}
		seen[want.Why]++
	}
	return seen
}

// The scripts decide as the Go code does: the same admissions, waits and
// reasons, and the same state, on the cases of gate_test.go.
func TestRedisParity(t *testing.T) {
	plus1 := time.FixedZone("X", 3600)
	late := time.Date(2026, 11, 22, 23, 0, 0, 0, plus1)
	est := Estimate{Tokens: 1000, Cost: 1000}
	for _, tt := range []struct {
		name  string
		l     Limits
		slack time.Duration
		start time.Time
		steps []step
	}{
		{"rpm", Limits{RPM: 600}, 0, t0, []step{
			{at: 0, reserve: ones(700, 1)},
			{at: 99 * time.Millisecond, reserve: ones(1, 1)},
			{at: 100 * time.Millisecond, reserve: ones(5, 1)},
			{at: 1100 * time.Millisecond, reserve: ones(20, 1)},
		}},
		{"slack", Limits{RPM: 600, TPM: 6000}, DefaultSlack, t0, []step{
			{at: 0, reserve: ones(700, 1)},
			{at: time.Minute, reserve: []Estimate{{Tokens: 1}, {Tokens: 5989}, {Tokens: 1}}},
			{at: 3 * time.Minute, reserve: []Estimate{{Tokens: 6000}}},
		}},
		{"tpm wait", Limits{TPM: 6000}, 0, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 5000}}},
			{at: 0, reserve: []Estimate{{Tokens: 5000}}},
			{at: 40 * time.Second, reserve: []Estimate{{Tokens: 5000}}},
		}},
		{"longest wait", Limits{RPM: 60, TPM: 600}, 0, t0, []step{
			{at: 0, reserve: ones(60, 10)},
			{at: 0, reserve: []Estimate{{Tokens: 100}}},
		}},
		{"tpd at midnight", Limits{TPD: 1000}, 0, late, []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour - time.Microsecond, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"daily cost at midnight", Limits{DailyCost: Dollar}, 0, late, []step{
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
		}},
		// Beyond 2^53 picodollars a double is not exact; the scripts' costs are.
		{"large dollars", Limits{DailyCost: 20000 * Dollar}, 0, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 12000*Dollar + 1}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 8000*Dollar - 1}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 1}}},
			{at: 0, settle: []Settlement{{Est: Estimate{Tokens: 1, Cost: 12000*Dollar + 1}, Sent: true, Cost: 3}}},
		}},
		{"minute flag", Limits{TPM: 1000}, 0, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 900}, {Tokens: 900}}},
			{at: time.Minute, reserve: []Estimate{{Tokens: 900}}},
		}},
		{"settle", Limits{RPM: 100, TPM: 100000, TPD: 1000000}, 0, t0, []step{
			{at: 0, reserve: []Estimate{est, est, est}},
			{at: time.Second, settle: []Settlement{
				{Est: est, Sent: true, Tokens: 300, Cost: 300},
				{Est: est, Sent: true},
				{Est: est, Sent: false},
			}},
		}},
		{"settle after midnight", Limits{RPM: 100, TPD: 1000000}, 0, late, []step{
			{at: 0, reserve: []Estimate{est, est}},
			{at: time.Hour, settle: []Settlement{{Est: est, Sent: true, Tokens: 300, Cost: 300}}},
		}},
		{"pause", Limits{RPM: 100}, 0, t0, []step{
			{at: 0, sync: &ServerUsage{}, pause: 3 * time.Second},
			{at: 0, sync: &ServerUsage{}, pause: time.Second},
			{at: time.Second, reserve: []Estimate{{}}},
			{at: 3 * time.Second, reserve: []Estimate{{}}},
		}},
		{"sync", Limits{RPM: 60}, 0, t0, []step{
			{at: 0, sync: &ServerUsage{Requests: 60, Tokens: -1}, pause: time.Second},
			{at: time.Second, reserve: ones(10, 1)},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { checkParity(t, tt.l, tt.slack, tt.start, tt.steps) })
	}
}

// On a long random run across a midnight, with limits that divide nothing
// evenly, the scripts stay bit for bit with the Go code.
func TestRedisParityRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	zone := time.FixedZone("IST", 5*3600+1800)
	start := time.Date(2026, 11, 22, 23, 57, 0, 0, zone)
	var steps []step
	var at time.Duration
	var open []Estimate
	for range 800 {
		at += time.Duration(rng.IntN(3_000_000)) * time.Microsecond
		switch k := rng.IntN(10); {
		case k < 7:
			ests := make([]Estimate, 1+rng.IntN(16))
			// Small dear ones meet the rpm and dollar limits, large cheap ones
			// the token limits.
			small := rng.IntN(2) == 0
			for i := range ests {
				if small {
					ests[i] = Estimate{Tokens: 1 + rng.Int64N(40), Cost: Cost(rng.Int64N(4e8))}
				} else {
					tok := 1 + rng.Int64N(3000)
					ests[i] = Estimate{Tokens: tok, Cost: Cost(tok * 10)}
				}
			}
			steps = append(steps, step{at: at, reserve: ests})
			open = append(open, ests...)
		case k < 9 && len(open) > 0:
			n := 1 + rng.IntN(len(open))
			var ss []Settlement
			for _, e := range open[:n] {
				used := rng.Int64N(e.Tokens + 1)
				ss = append(ss, Settlement{Est: e, Sent: rng.IntN(4) > 0, Tokens: used, Cost: Cost(used * 300)})
			}
			open = open[n:]
			steps = append(steps, step{at: at, settle: ss})
		default:
			u := ServerUsage{Requests: float64(rng.IntN(120)) - 20, Tokens: rng.Float64()*30000 - 5000}
			steps = append(steps, step{at: at, sync: &u, pause: time.Duration(1+rng.IntN(2000)) * time.Millisecond})
		}
	}
	seen := checkParity(t, Limits{RPM: 97, TPM: 20011, TPD: 30011, DailyCost: Dollar / 100}, DefaultSlack, start, steps)
	for _, why := range []Reason{"", MinuteRequests, MinuteTokens, DayTokens, DayCost, BackOff} {
		if seen[why] == 0 {
			t.Errorf("the run met no step that returned %q: it does not test it", why)
		}
	}
	t.Logf("reasons met: %v", seen)
}

// A host whose clock is minutes off shares the budget as if it were right:
// the server's clock decides, and the host's time moves nothing.
func TestRedisSkewedHost(t *testing.T) {
	m, r := miniStore(t)
	ahead, behind := exactGate(r, Limits{RPM: 60}), exactGate(r, Limits{RPM: 60})
	skew := 7 * time.Minute
	if n, _, _ := reserve(t, ahead, t0.Add(skew), ones(60, 1)...); n != 60 {
		t.Fatalf("Reserve(60) on a host 7 min ahead = %d, want 60", n)
	}
	// Over a FileStore, the host behind would wait 7 min plus 1 s.
	if n, wait, why := reserve(t, behind, t0.Add(-skew), ones(1, 1)...); n != 0 || wait != time.Second || why != MinuteRequests {
		t.Errorf("Reserve on a host 7 min behind = %d, %v, %q; want 0, 1s, %q", n, wait, why, MinuteRequests)
	}
	if st := load(t, r); !st.Updated.Equal(t0) {
		t.Errorf("updated = %v, want the server's %v", st.Updated, t0)
	}
	// A pause after a 429 lasts as long on the server whatever the host's clock.
	if err := behind.Pause(context.Background(), t0.Add(-skew), t0.Add(-skew+2*time.Second)); err != nil {
		t.Fatal(err)
	}
	m.SetTime(t0.Add(time.Second))
	if n, wait, why := reserve(t, ahead, t0.Add(skew+time.Second), ones(1, 1)...); n != 0 || wait != time.Second || why != BackOff {
		t.Errorf("Reserve while paused = %d, %v, %q; want 0, 1s, %q", n, wait, why, BackOff)
	}
	m.SetTime(t0.Add(2 * time.Second))
	if n, _, _ := reserve(t, behind, t0.Add(-skew), ones(5, 1)...); n != 2 {
		t.Errorf("Reserve(5) 2 s later = %d, want 2 (the pause over, 2 s of refill)", n)
	}
}

// Hosts in different zones share one day: it ends when the host that
// started it reaches midnight, not when each does.
func TestRedisDayBoundary(t *testing.T) {
	m, r := miniStore(t)
	la, tokyo := time.FixedZone("PST", -8*3600), time.FixedZone("JST", 9*3600)
	now := time.Date(2026, 11, 22, 23, 0, 0, 0, la) // 16:00 on the 23rd in Tokyo
	m.SetTime(now)
	g := exactGate(r, Limits{TPD: 1000})
	if n, _, _ := reserve(t, g, now, Estimate{Tokens: 600}); n != 1 {
		t.Fatalf("Reserve(600) in Los Angeles = %d, want 1", n)
	}
	// Over a FileStore, Tokyo's date would start a new day here.
	if n, wait, why := reserve(t, g, now.In(tokyo), Estimate{Tokens: 600}); n != 0 || wait != time.Hour || why != DayTokens {
		t.Errorf("Reserve(600) in Tokyo = %d, %v, %q; want 0, 1h (Los Angeles' midnight), %q", n, wait, why, DayTokens)
	}
	if st := load(t, r); st.Date != "2026-11-22" || st.TokensWithinDay != 600 || !st.DayTokenLimitReached {
		t.Errorf("state = %+v; want Date 2026-11-22, 600 tokens, day limit reached", st)
	}
	m.SetTime(now.Add(time.Hour - time.Microsecond))
	if n, _, _ := reserve(t, g, now.In(tokyo), Estimate{Tokens: 600}); n != 0 {
		t.Error("Reserve 1µs before the day ends admitted")
	}
	// Tokyo starts the next day: it ends at Tokyo's midnight.
	m.SetTime(now.Add(time.Hour))
	if n, _, _ := reserve(t, g, now.Add(time.Hour).In(tokyo), Estimate{Tokens: 600}); n != 1 {
		t.Fatal("Reserve when the day ends refused")
	}
	if st := load(t, r); st.Date != "2026-11-23" || st.TokensWithinDay != 600 {
		t.Errorf("state = %+v; want Tokyo's day 2026-11-23 and 600 tokens", st)
	}
	// 17:00 in Tokyo, 00:00 in Los Angeles.
	n, wait, _ := reserve(t, g, now.Add(time.Hour), Estimate{Tokens: 600})
	if want := 7 * time.Hour; n != 0 || wait != want {
		t.Errorf("Reserve(600) from Los Angeles after = %d, %v; want 0, %v (Tokyo's midnight)", n, wait, want)
	}
}

// The ledger in the stream reports as the ledger file does.
func TestRedisLedger(t *testing.T) {
	m, r := miniStore(t)
	ctx := context.Background()
	g := NewGate(r, Limits{})
	c := Cost(7400)
	var want bytes.Buffer
	for i := range 2500 { // more than a page
		e := LedgerEntry{Time: t0.Add(time.Duration(i) * time.Minute), ID: fmt.Sprint(i), Model: []string{"a", "b"}[i%2], Status: 200, PromptTokens: 9, CostUSD: &c}
		if i%3 == 0 {
			e.CostUSD = nil
		}
		b, _ := json.Marshal(e)
		want.Write(append(b, '\n'))
		if err := g.Settle(ctx, t0, []Settlement{{Sent: true, Entry: &e}}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	if err := r.Ledger(ctx, time.Time{}, func(e LedgerEntry) error { ids = append(ids, e.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2500 || ids[0] != "0" || ids[2499] != "2499" {
		t.Errorf("Ledger read %d entries, %v ... %v; want 2500, 0 ... 2499", len(ids), ids[:1], ids[len(ids)-1:])
	}
	opt := ReportOptions{Since: t0.Add(10 * time.Hour), Until: t0.Add(30 * time.Hour), By: "model"}
	wantRep, err := BuildReport(&want, opt, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Report(ctx, opt, time.UTC)
	if err != nil || !reflect.DeepEqual(got, wantRep) {
		t.Errorf("Report = %+v, %v; want %+v", got, err, wantRep)
	}
	// Entries older than LedgerKeep go at the next append.
	m.SetTime(t0.Add(LedgerKeep + time.Hour))
	if err := g.Settle(ctx, t0, []Settlement{{Sent: true, Entry: &LedgerEntry{ID: "new"}}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	r.Ledger(ctx, time.Time{}, func(LedgerEntry) error { n++; return nil })
	if n != 1 {
		t.Errorf("after %v, the ledger holds %d entries, want 1", LedgerKeep, n)
	}
}

// Update is a compare-and-swap: concurrent updates all land, and the keys
// this version does not know are kept.
func TestRedisUpdate(t *testing.T) {
	_, r := miniStore(t)
	ctx := context.Background()
	err := r.Update(ctx, func(s *State) ([]LedgerEntry, error) {
		s.extra = append(s.extra, [2]string{"daily_cost_limit_usd", "5"})
		s.Date = "2026-11-22"
		return []LedgerEntry{{ID: "u"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- r.Update(ctx, func(s *State) ([]LedgerEntry, error) { s.TokensWithinDay++; return nil, nil })
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := load(t, r)
	if st.TokensWithinDay != n || st.Date != "2026-11-22" || len(st.extra) != 1 || st.extra[0] != [2]string{"daily_cost_limit_usd", "5"} {
		t.Errorf("after %d concurrent updates, state = %+v; want %d tokens, the date and the extra key", n, st, n)
	}
	var ids []string
	r.Ledger(ctx, time.Time{}, func(e LedgerEntry) error { ids = append(ids, e.ID); return nil })
	if len(ids) != 1 || ids[0] != "u" {
		t.Errorf("ledger = %v, want [u]", ids)
	}
}

// A state that does not parse is an error naming the store, never reset.
func TestRedisCorrupt(t *testing.T) {
	m, r := miniStore(t)
	m.HSet("{gptbatch:test}:state", "tday", "lots")
	_, err := r.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "redis://127.0.0.1") || !strings.Contains(err.Error(), "tday") {
		t.Errorf("Load of a corrupt state = %v, want an error naming the store and the field", err)
	}
	if v := m.HGet("{gptbatch:test}:state", "tday"); v != "lots" {
		t.Errorf("tday = %q after Load, want it left as it was", v)
	}
}

func TestOpenRedisErrors(t *testing.T) {
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	m := miniredis.RunT(t)
	for _, tt := range []struct {
		name, url string
		ctx       context.Context
		want      string
	}{
		{"not redis", "http://host/", ctx, "want a redis:// or rediss:// URL"},
		{"bad URL", "redis://:s3cret@host:port x/0", ctx, "not a redis:// URL"},
		{"bad db", "redis://:s3cret@127.0.0.1:1/x", ctx, "store redis://:xxxxx@127.0.0.1:1/x: "},
		{"unreachable", "redis://:s3cret@" + closedAddr(t) + "/0", ctx, "connection refused"},
		{"canceled", "redis://" + m.Addr() + "/0", canceled, "context canceled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenRedis(tt.ctx, tt.url, "")
			if err == nil {
				r.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("OpenRedis(%q) = %v, want an error with %q and no password", tt.url, err, tt.want)
			}
		})
	}
}

// Two names on one Redis are two budgets, every key under its hash tag.
func TestRedisNames(t *testing.T) {
	m, a := miniStore(t)
	b, err := OpenRedis(context.Background(), "redis://"+m.Addr()+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reserve(t, NewGate(a, Limits{}), t0, Estimate{Tokens: 5})
	if st := load(t, b); st.TokensWithinDay != 0 {
		t.Errorf("budget default holds %d tokens after budget test reserved, want 0", st.TokensWithinDay)
	}
	reserve(t, NewGate(b, Limits{}), t0, Estimate{Tokens: 5})
	for _, k := range m.Keys() {
		if !strings.HasPrefix(k, "{gptbatch:test}:") && !strings.HasPrefix(k, "{gptbatch:default}:") {
			t.Errorf("key %q is under no budget's hash tag", k)
		}
	}
}
