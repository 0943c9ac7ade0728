package budget

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLimitsCeil(t *testing.T) {
	tests := []struct {
		own, stored, want Limits
	}{
		{Limits{RPM: 500, TPM: 1000}, Limits{}, Limits{RPM: 500, TPM: 1000}},
		{Limits{RPM: 500}, Limits{RPM: 100, TPD: 50}, Limits{RPM: 100, TPD: 50}},
		{Limits{RPM: 50}, Limits{RPM: 100}, Limits{RPM: 50}},
		{Limits{DailyCost: 10 * Dollar}, Limits{DailyCost: Dollar / 2}, Limits{DailyCost: Dollar / 2}},
		{Limits{}, Limits{DailyCost: Dollar}, Limits{DailyCost: Dollar}},
	}
	for _, tt := range tests {
		if got := tt.own.Ceil(tt.stored); got != tt.want {
			t.Errorf("%+v.Ceil(%+v) = %+v, want %+v", tt.own, tt.stored, got, tt.want)
		}
	}
}

// A stored daily cost caps a run whose own flag is higher: the flag cannot
// loosen it, and the gate says so from its first reservation on.
func TestStoredLimitIsACeiling(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		ctx := context.Background()
		s := open(t, State{})
		cap, _ := ParseCost("0.0005")
		if err := SetStoredLimits(ctx, s, Limits{DailyCost: cap}); err != nil {
			t.Fatalf("SetStoredLimits = %v", err)
		}
		g := NewGate(s, Limits{RPM: 500, DailyCost: 10 * Dollar})
		if err := g.Load(ctx, t0); err != nil {
			t.Fatalf("Load = %v", err)
		}
		if got := g.Limits().DailyCost; got != cap {
			t.Errorf("Limits().DailyCost after Load = %s, want the stored %s", got, cap)
		}
		each, _ := ParseCost("0.0002")
		ests := []Estimate{{Tokens: 10, Cost: each}, {Tokens: 10, Cost: each}, {Tokens: 10, Cost: each}}
		if n, _, why := reserve(t, g, t0, ests...); n != 2 || why != DayCost {
			t.Errorf("Reserve(3 × $0.0002) under a stored $0.0005 = %d, %q; want 2, %q", n, why, DayCost)
		}
		// Every later write keeps the stored limit, in a usage file
		// human-readable.
		if got := stateOf(t, s).Stored.DailyCost; got != cap {
			t.Errorf("stored daily cost after reservations = %s, want %s", got, cap)
		}
		if f, ok := s.(*FileStore); ok {
			if b, err := os.ReadFile(f.path); err != nil || !strings.Contains(string(b), "limit_daily_cost_usd = 0.0005\n") {
				t.Errorf("usage.md after reservations lacks the stored limit: %v\n%s", err, b)
			}
		}
		if s := g.Seen(); s.CostWithinDay != 2*each || s.Stored.DailyCost != cap {
			t.Errorf("Seen() = %+v, want $0.0004 used and the stored cap", s)
		}
		if err := ClearStoredLimits(ctx, s, []string{"daily-cost"}); err != nil {
			t.Fatalf("ClearStoredLimits = %v", err)
		}
		if n, _, _ := reserve(t, g, t0, ests[0]); n != 1 {
			t.Errorf("Reserve after clearing the stored cap = %d, want 1 (the flag's $10 rules)", n)
		}
		if err := ClearStoredLimits(ctx, s, []string{"rpn"}); err == nil || !strings.Contains(err.Error(), "rpm") {
			t.Errorf("ClearStoredLimits(rpn) = %v, want an error listing the names", err)
		}
	})
}

// A flag lower than the stored limit tightens it for this run only.
func TestFlagTightensStoredLimit(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		s := open(t, State{})
		if err := SetStoredLimits(context.Background(), s, Limits{RPM: 600}); err != nil {
			t.Fatal(err)
		}
		g := exactGate(s, Limits{RPM: 60})
		if n, _, _ := reserve(t, g, t0, ones(100, 1)...); n != 60 {
			t.Errorf("Reserve(100) with --rpm 60 under a stored 600 = %d, want 60", n)
		}
		if got := stateOf(t, s).Stored.RPM; got != 600 {
			t.Errorf("stored rpm after the run = %d, want 600 untouched", got)
		}
	})
}

// The Batch API's reservations count against the day, never the minute.
func TestReserveDay(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 1, TPM: 10, TPD: 1000})
		n, day, _, why, err := g.ReserveDay(context.Background(), t0, ones(20, 60))
		if err != nil || n != 16 || why != DayTokens || day != t0.Format(time.DateOnly) {
			t.Fatalf("ReserveDay(20 × 60) under tpd 1000, rpm 1 = %d, day %q, %q, %v; want 16, %q, %q", n, day, why, err, t0.Format(time.DateOnly), DayTokens)
		}
		s := stateOf(t, m)
		if s.TokensWithinDay != 960 || s.RequestsWithinMin != 0 || s.TokensWithinMin != 0 {
			t.Errorf("after ReserveDay: day %d, minute %v requests %v tokens; want 960, 0, 0", s.TokensWithinDay, s.RequestsWithinMin, s.TokensWithinMin)
		}
		ss := []Settlement{{Est: Estimate{Tokens: 60}, Sent: true, Tokens: 25, DayOnly: true}, {Est: Estimate{Tokens: 60}, DayOnly: true}}
		if err := g.Settle(context.Background(), t0, ss); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, m); s.TokensWithinDay != 865 || s.RequestsWithinMin != 0 {
			t.Errorf("after settling one line at 25 tokens and one unsent: day %d, minute requests %v; want 865, 0", s.TokensWithinDay, s.RequestsWithinMin)
		}
	})
}

// A Batch API reservation goes back from the day it was counted in, and
// only from that day: a batch collected after midnight, once another
// update has started the new day, takes nothing from the new day's
// counters, and one collected the same day gives its estimate back.
func TestSettleDay(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		ctx := context.Background()
		m := open(t, State{})
		g := exactGate(m, Limits{TPD: 100000})
		late := time.Date(2026, 11, 22, 23, 0, 0, 0, time.Local)
		_, day, _, _, err := g.ReserveDay(ctx, late, ones(1, 5000))
		if err != nil || day != "2026-11-22" {
			t.Fatalf("ReserveDay at %v = day %q, %v; want 2026-11-22", late, day, err)
		}
		// Another process's request starts the next day first.
		next := late.Add(2 * time.Hour)
		if err := g.Settle(ctx, next, []Settlement{{Est: Estimate{Tokens: 10}, Sent: true, Tokens: 40}}); err != nil {
			t.Fatal(err)
		}
		if err := g.Settle(ctx, next, []Settlement{{Est: Estimate{Tokens: 5000}, DayOnly: true, Sent: true, Tokens: 3000, Day: day}}); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, m); s.TokensWithinDay != 3040 {
			t.Errorf("the next day after a batch of yesterday's settled: %d tokens, want 3040 (its 3000 and the 40 of today's request; nothing taken back)", s.TokensWithinDay)
		}
		// The same day, the estimate goes back.
		_, day, _, _, _ = g.ReserveDay(ctx, next, ones(1, 5000))
		if err := g.Settle(ctx, next.Add(time.Hour), []Settlement{{Est: Estimate{Tokens: 5000}, DayOnly: true, Sent: true, Tokens: 1000, Day: day}}); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, m); s.TokensWithinDay != 4040 {
			t.Errorf("after a batch reserved and settled today: %d tokens, want 4040", s.TokensWithinDay)
		}
	})
}
