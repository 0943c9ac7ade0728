package budget

import (
	"context"
	"fmt"
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
	want := new(MemStore)
	// More than two pages, settled a batch's worth at a time: one script
	// run per Settle is what costs here, not the entries.
	const entries, batch = 2500, 250
	for lo := 0; lo < entries; lo += batch {
		ss := make([]Settlement, 0, batch)
		for i := lo; i < lo+batch; i++ {
			e := LedgerEntry{Time: t0.Add(time.Duration(i) * time.Minute), ID: fmt.Sprint(i), Model: []string{"a", "b"}[i%2], Status: 200, PromptTokens: 9, CostUSD: &c}
			if i%3 == 0 {
				e.CostUSD = nil
			}
			ss = append(ss, Settlement{Sent: true, Entry: &e})
		}
		if err := NewGate(want, Limits{}).Settle(ctx, t0, ss); err != nil {
			t.Fatal(err)
		}
		if err := g.Settle(ctx, t0, ss); err != nil {
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
	wantRep, err := want.Report(ctx, opt, time.UTC)
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
	err := r.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) {
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
			errs <- r.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) { s.TokensWithinDay++; return nil, nil })
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
	const bad = "tokens_within_day = lots\n"
	m.Set("{gptbatch:test}:state", bad)
	_, err := r.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "redis://127.0.0.1") || !strings.Contains(err.Error(), "tokens_within_day") {
		t.Errorf("Load of a corrupt state = %v, want an error naming the store and the key", err)
	}
	if err := NewGate(r, Limits{}).Load(context.Background(), t0); err == nil {
		t.Error("Gate.Load of a corrupt state = nil, want an error")
	}
	if v, _ := m.Get("{gptbatch:test}:state"); v != bad {
		t.Errorf("state = %q after Load, want it left as it was", v)
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

// Loading a gate and setting limits that are already stored write
// nothing.
func TestRedisUpdateUnchanged(t *testing.T) {
	m, r := miniStore(t)
	ctx := context.Background()
	if err := SetStoredLimits(ctx, r, Limits{RPM: 60}); err != nil {
		t.Fatal(err)
	}
	ver, _ := m.Get("{gptbatch:test}:state")
	g := NewGate(r, Limits{RPM: 600})
	if err := g.Load(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if err := SetStoredLimits(ctx, r, Limits{RPM: 60}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get("{gptbatch:test}:state"); got != ver {
		t.Errorf("state = %q after Load and a SetStoredLimits that changed nothing, want %q", got, ver)
	}
	if got := g.Limits(); got.RPM != 60 {
		t.Errorf("Limits() after Load = %+v, want the stored rpm 60", got)
	}
}
