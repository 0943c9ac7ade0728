package budget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func reserve(t *testing.T, g *Gate, now time.Time, ests ...Estimate) (int, time.Duration, Reason) {
	t.Helper()
	n, wait, why, err := g.Reserve(context.Background(), now, ests)
	if err != nil {
		t.Fatalf("Reserve = %v", err)
	}
	return n, wait, why
}

func ones(n int, tokens int64) []Estimate {
	e := make([]Estimate, n)
	for i := range e {
		e[i] = Estimate{Tokens: tokens}
	}
	return e
}

// exactGate is a gate that is exactly the server's bucket: no slack.
func exactGate(s Store, l Limits) *Gate {
	g := NewGate(s, l)
	g.SetSlack(0)
	return g
}

// A full bucket admits the limit at once, then one request every 60/rpm
// seconds, and says exactly how long to wait.
func TestReserveRPM(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 600})
		if n, wait, why := reserve(t, g, t0, ones(700, 1)...); n != 600 || wait != 100*time.Millisecond || why != MinuteRequests {
			t.Fatalf("Reserve(700) on a full rpm 600 bucket = %d, %v, %q; want 600, 100ms, %q", n, wait, why, MinuteRequests)
		}
		if n, wait, _ := reserve(t, g, t0.Add(99*time.Millisecond), ones(1, 1)...); n != 0 || wait != time.Millisecond {
			t.Errorf("Reserve 99ms later = %d, %v; want 0, 1ms", n, wait)
		}
		if n, wait, _ := reserve(t, g, t0.Add(100*time.Millisecond), ones(5, 1)...); n != 1 || wait != 100*time.Millisecond {
			t.Errorf("Reserve(5) 100ms later = %d, %v; want 1, 100ms", n, wait)
		}
		if n, _, _ := reserve(t, g, t0.Add(100*time.Millisecond+time.Second), ones(20, 1)...); n != 10 {
			t.Errorf("Reserve(20) a second later = %d, want 10", n)
		}
	})
}

// With the default slack, a bucket that holds anything keeps 250 ms of
// refill in hand (whole requests: 2 at 10 a second); an empty one still admits a request as large as the
// limit.
func TestReserveSlack(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := NewGate(open(t, State{}), Limits{RPM: 600, TPM: 6000})
		if n, wait, _ := reserve(t, g, t0, ones(700, 1)...); n != 598 || wait != 100*time.Millisecond {
			t.Errorf("Reserve(700) on a full rpm 600 bucket with slack = %d, %v; want 598, 100ms", n, wait)
		}
		g = NewGate(open(t, State{}), Limits{TPM: 6000})
		if n, _, _ := reserve(t, g, t0, Estimate{Tokens: 6000}); n != 1 {
			t.Errorf("Reserve(6000 tokens) on a full tpm 6000 bucket with slack = %d, want 1", n)
		}
		// 5975 fit after the 25 tokens (250 ms at 100 a second) kept in hand.
		g = NewGate(open(t, State{}), Limits{TPM: 6000})
		if n, wait, _ := reserve(t, g, t0, Estimate{Tokens: 1}, Estimate{Tokens: 5974}, Estimate{Tokens: 1}); n != 2 || wait != 10*time.Millisecond {
			t.Errorf("Reserve(1, 5974, 1) with slack = %d, %v; want 2, 10ms", n, wait)
		}
	})
}

func TestReserveTPMWait(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{TPM: 6000})
		if n, _, _ := reserve(t, g, t0, Estimate{Tokens: 5000}); n != 1 {
			t.Fatal("Reserve(5000) on a full tpm 6000 bucket refused")
		}
		// 4000 of the 5000 in the bucket must drain, at 100 a second.
		n, wait, why := reserve(t, g, t0, Estimate{Tokens: 5000})
		if n != 0 || why != MinuteTokens || wait != 40*time.Second {
			t.Errorf("Reserve(5000) = %d, %v, %q; want 0, 40s, %q", n, wait, why, MinuteTokens)
		}
		if n, _, _ := reserve(t, g, t0.Add(wait), Estimate{Tokens: 5000}); n != 1 {
			t.Errorf("Reserve(5000) after the wait = %d, want 1", n)
		}
	})
}

// When two buckets are short, the wait is the longer one.
func TestReserveLongestWait(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 60, TPM: 600})
		reserve(t, g, t0, ones(60, 10)...) // both buckets full
		n, wait, why := reserve(t, g, t0, Estimate{Tokens: 100})
		if n != 0 || wait != 10*time.Second || why != MinuteTokens {
			t.Errorf("Reserve = %d, %v, %q; want 0, 10s (100 tokens at 10/s), %q", n, wait, why, MinuteTokens)
		}
	})
}

// Over a simulated two minutes, a gate polled at the waits it returns
// admits exactly what the server's own bucket (full at start, refilled
// continuously, charged at arrival) allows, never a request the server
// would refuse, and no more in any window than the bucket's bound.
func TestReserveMatchesServerBucket(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		// 60/rpm seconds (0.4) is no binary fraction, as 0.1 was at 600
		// rpm: the same rounding at a quarter of the store updates.
		const rpm = 150
		g := exactGate(open(t, State{}), Limits{RPM: rpm})
		server, last := float64(rpm), t0
		var times []time.Time
		end := t0.Add(2 * time.Minute)
		for now := t0; now.Before(end); {
			n, wait, _ := reserve(t, g, now, ones(50, 1)...)
			server = min(rpm, server+now.Sub(last).Seconds()*rpm/60)
			last = now
			if server-float64(n) < -1e-9 {
				t.Fatalf("at %v the gate admitted %d, the server had room for %.3f", now.Sub(t0), n, server)
			}
			server -= float64(n)
			for range n {
				times = append(times, now)
			}
			if n == 50 {
				continue // ask again at once
			}
			// Whatever is left over (less than one request) must be all the
			// server has: the gate leaves nothing on the table.
			if server >= 1 {
				t.Fatalf("at %v the gate admitted %d and waits %v; the server had room for %.3f more", now.Sub(t0), n, wait, server)
			}
			now = now.Add(wait)
		}
		// 150 at once, then one every 400 ms: at 0.4 s, ..., 119.6 s.
		if want := rpm + 299; len(times) != want {
			t.Errorf("admitted %d in two minutes, want %d", len(times), want)
		}
		// A bucket admits at most its capacity plus its refill in any window.
		for i, j := 0, 0; i < len(times); i++ {
			for j < len(times) && times[j].Sub(times[i]) < time.Minute {
				j++
			}
			if n := j - i; n > 2*rpm {
				t.Fatalf("%d admitted in the minute from %v, want at most %d", n, times[i].Sub(t0), 2*rpm)
			}
		}
	})
}

func TestDayLimits(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		local := time.FixedZone("X", 3600)
		now := time.Date(2026, 11, 22, 23, 0, 0, 0, local)
		for _, tt := range []struct {
			name       string
			l          Limits
			e          Estimate
			why        Reason
			dayReached bool
		}{
			{"tpd", Limits{TPD: 1000}, Estimate{Tokens: 600}, DayTokens, true},
			{"daily cost", Limits{DailyCost: Dollar}, Estimate{Tokens: 1, Cost: Dollar * 6 / 10}, DayCost, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				m := open(t, State{})
				g := exactGate(m, tt.l)
				if n, _, _ := reserve(t, g, now, tt.e); n != 1 {
					t.Fatalf("first Reserve = %d, want 1", n)
				}
				n, wait, why := reserve(t, g, now, tt.e)
				if n != 0 || why != tt.why || wait != time.Hour {
					t.Errorf("Reserve = %d, %v, %q; want 0, 1h (local midnight), %q", n, wait, why, tt.why)
				}
				if got := stateOf(t, m).DayTokenLimitReached; got != tt.dayReached {
					t.Errorf("day_token_limit_reached = %v, want %v", got, tt.dayReached)
				}
				if n, _, _ := reserve(t, g, now.Add(time.Hour-time.Nanosecond), tt.e); n != 0 {
					t.Error("Reserve 1ns before midnight admitted")
				}
				if n, _, _ := reserve(t, g, now.Add(time.Hour), tt.e); n != 1 {
					t.Error("Reserve at midnight refused")
				}
				st := stateOf(t, m)
				if st.Date != "2026-11-23" || st.TokensWithinDay != tt.e.Tokens || st.CostWithinDay != tt.e.Cost || st.DayTokenLimitReached {
					t.Errorf("state after midnight = %+v, want Date 2026-11-23 and one estimate charged", st)
				}
			})
		}
	})
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// Processes in different time zones sharing one usage file agree on one
// day: the first to start it stores the instant it ends, and nobody
// starts it again before then. (Alternating TZ=UTC and
// TZ=Pacific/Auckland used to reset the day on every switch.)
func TestDayBoundaryAcrossZones(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		utc, auckland := time.UTC, zone(t, "Pacific/Auckland")
		m := open(t, State{})
		g := exactGate(m, Limits{TPD: 300})
		start := time.Date(2026, 11, 22, 20, 0, 0, 0, utc) // 2026-11-23 09:00 in Auckland
		admitted := 0
		for i := range 8 {
			now := start.Add(time.Duration(i) * 10 * time.Minute)
			if i%2 == 1 {
				now = now.In(auckland)
			}
			n, _, _ := reserve(t, g, now, Estimate{Tokens: 100})
			admitted += n
		}
		if admitted != 3 {
			t.Errorf("Reserve(100 tokens) 8 times alternating UTC and Auckland under --tpd 300 admitted %d, want 3", admitted)
		}
		st := stateOf(t, m)
		if want := time.Date(2026, 11, 23, 0, 0, 0, 0, utc); st.Date != "2026-11-22" || !st.DayEndsAt.Equal(want) {
			t.Errorf("day started at %v in UTC: Date %s, day_ends_at %v; want 2026-11-22, %v", start, st.Date, st.DayEndsAt, want)
		}
		// An Auckland process waiting on the day limit waits for the UTC
		// midnight that ends it, not its own.
		_, wait, why := reserve(t, g, start.In(auckland), Estimate{Tokens: 100})
		if why != DayTokens || wait != 4*time.Hour {
			t.Errorf("Reserve in Auckland at %v = wait %v for %q, want 4h for %q", start, wait, why, DayTokens)
		}
		// At that instant an Auckland process starts the next day, which
		// ends at Auckland's midnight.
		end := time.Date(2026, 11, 23, 0, 0, 0, 0, utc)
		if n, _, _ := reserve(t, g, end.In(auckland), Estimate{Tokens: 100}); n != 1 {
			t.Errorf("Reserve at the stored end of the day = %d, want 1", n)
		}
		st = stateOf(t, m)
		if want := time.Date(2026, 11, 24, 0, 0, 0, 0, auckland); st.Date != "2026-11-23" || !st.DayEndsAt.Equal(want) || st.TokensWithinDay != 100 {
			t.Errorf("after the day ended: Date %s, day_ends_at %v, tokens_within_day %d; want 2026-11-23, %v, 100", st.Date, st.DayEndsAt, st.TokensWithinDay, want)
		}
		// A UTC process (still on 2026-11-23 too) cannot start it again.
		if n, _, _ := reserve(t, g, end.Add(time.Hour), Estimate{Tokens: 300}); n != 0 {
			t.Errorf("Reserve(300) in UTC an hour into Auckland's day = %d, want 0", n)
		}
	})
}

// SetDayZone (GPTBATCH_DAY_TZ) chooses the zone whose midnight ends a day
// the gate starts, whatever the zone of the time it is given.
func TestSetDayZone(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		ny := zone(t, "America/New_York")
		m := open(t, State{})
		g := exactGate(m, Limits{TPD: 1000})
		g.SetDayZone(ny)
		now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC) // 2026-11-22 22:00 in New York
		reserve(t, g, now, Estimate{Tokens: 1})
		st := stateOf(t, m)
		if want := time.Date(2026, 11, 23, 0, 0, 0, 0, ny); st.Date != "2026-11-22" || !st.DayEndsAt.Equal(want) {
			t.Errorf("day started at %v with zone New York: Date %s, day_ends_at %v; want 2026-11-22, %v", now, st.Date, st.DayEndsAt, want)
		}
		if f, ok := m.(*FileStore); ok {
			if b, _ := os.ReadFile(f.path); !strings.Contains(string(b), "day_ends_at = 2026-11-23T00:00:00-05:00") {
				t.Errorf("usage.md does not say day_ends_at in New York time:\n%s", b)
			}
		}
	})
}

// A usage.md written before day_ends_at keeps today's counters, read in
// this process's zone, and starts a new day for another date's.
func TestDayBoundaryOldFile(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		for _, tt := range []struct {
			date string
			want int64
		}{
			{"2026-11-22", 501},
			{"2026-11-21", 1},
		} {
			t.Run(tt.date, func(t *testing.T) {
				m := open(t, State{Date: tt.date, TokensWithinDay: 500})
				reserve(t, exactGate(m, Limits{TPD: 1000}), t0, Estimate{Tokens: 1})
				st := stateOf(t, m)
				if st.TokensWithinDay != tt.want || !st.DayEndsAt.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) {
					t.Errorf("Reserve on a file of %s at %v: tokens_within_day %d, day_ends_at %v; want %d, 2026-11-23 00:00 UTC", tt.date, t0, st.TokensWithinDay, st.DayEndsAt, tt.want)
				}
			})
		}
	})
}

// A day_ends_at days ahead (written by a clock far ahead) ends at the next
// midnight instead.
func TestDayEndsFarAhead(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{Date: "2026-11-22", TokensWithinDay: 900, DayEndsAt: t0.Add(72 * time.Hour)})
		_, wait, _ := reserve(t, exactGate(m, Limits{TPD: 1000}), t0, Estimate{Tokens: 200})
		if wait != 12*time.Hour {
			t.Errorf("Reserve with day_ends_at 3 days ahead waits %v, want 12h (the next midnight)", wait)
		}
	})
}

func TestDayUsed(t *testing.T) {
	s := State{Date: "2026-11-22", TokensWithinDay: 7, CostWithinDay: 3}
	for _, tt := range []struct {
		name   string
		ends   time.Time
		now    time.Time
		tokens int64
		cost   Cost
	}{
		{"old file today", time.Time{}, t0, 7, 3},
		{"old file another day", time.Time{}, t0.Add(24 * time.Hour), 0, 0},
		{"before the end", t0.Add(time.Hour), t0, 7, 3},
		{"at the end", t0, t0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.DayEndsAt = tt.ends
			if tok, c := s.DayUsed(tt.now); tok != tt.tokens || c != tt.cost {
				t.Errorf("DayUsed(%v) = %d, %v; want %d, %v", tt.now, tok, c, tt.tokens, tt.cost)
			}
		})
	}
}

// An updated far in the future (a clock stepped back, a skewed host) is
// clamped to now, so the buckets drain from now on instead of freezing
// until the clock catches up.
func TestReserveUpdatedInFuture(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 60})
		reserve(t, g, t0.Add(time.Hour), ones(60, 1)...) // the clock was an hour ahead
		back := t0                                       // and is stepped back
		if n, wait, _ := reserve(t, g, back, Estimate{}); n != 0 || wait != time.Second {
			t.Errorf("Reserve after the clock stepped back = %d, %v; want 0, 1s", n, wait)
		}
		if st := stateOf(t, m); !st.Updated.Equal(back) {
			t.Errorf("updated = %v, want clamped to %v", st.Updated, back)
		}
		if n, _, _ := reserve(t, g, back.Add(10*time.Second), ones(20, 1)...); n != 10 {
			t.Errorf("Reserve(20) 10s after the clock stepped back = %d, want 10 (drained from then)", n)
		}
	})
}

func TestMinuteTokenFlag(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{TPM: 1000})
		reserve(t, g, t0, Estimate{Tokens: 900}, Estimate{Tokens: 900})
		if !stateOf(t, m).MinuteTokenLimitReached {
			t.Error("minute_token_limit_reached = 0 after a refusal by --tpm, want 1")
		}
		reserve(t, g, t0.Add(time.Minute), Estimate{Tokens: 900})
		if stateOf(t, m).MinuteTokenLimitReached {
			t.Error("minute_token_limit_reached = 1 after everything fit, want 0")
		}
	})
}

// countingStore counts the updates that changed the state.
type countingStore struct {
	MemStore
	writes int
}

func (c *countingStore) Update(ctx context.Context, now time.Time, fn func(*State, time.Time) ([]LedgerEntry, error)) error {
	return c.MemStore.Update(ctx, now, func(s *State, now time.Time) ([]LedgerEntry, error) {
		before := string(s.Format())
		es, err := fn(s, now)
		if string(s.Format()) != before {
			c.writes++
		}
		return es, err
	})
}

// A process that waits for a limit and asks again does not rewrite the
// file each time it asks.
func TestReserveWritesOnlyOnChange(t *testing.T) {
	c := new(countingStore)
	g := exactGate(c, Limits{RPM: 1, TPM: 1000})
	reserve(t, g, t0, Estimate{Tokens: 900}) // admitted: a write
	reserve(t, g, t0, Estimate{Tokens: 10})  // refused by rpm alone: no flag changes
	reserve(t, g, t0.Add(time.Second), Estimate{Tokens: 10})
	if c.writes != 1 {
		t.Errorf("%d writes for one admission and two refusals, want 1", c.writes)
	}
	reserve(t, g, t0.Add(2*time.Second), Estimate{Tokens: 900}) // refused by tpm as well: the flag changes
	if c.writes != 2 || !c.State().MinuteTokenLimitReached {
		t.Errorf("%d writes, minute_token_limit_reached %v after a refusal by tpm; want 2, true", c.writes, c.State().MinuteTokenLimitReached)
	}
}

func TestCheck(t *testing.T) {
	g := NewGate(new(MemStore), Limits{TPM: 5000, TPD: 8000, DailyCost: Dollar})
	for _, tt := range []struct {
		e    Estimate
		want string
	}{
		{Estimate{Tokens: 9000}, "estimate 9000 tokens exceeds --tpm 5000 on its own"},
		{Estimate{Tokens: 10, Cost: 2 * Dollar}, "estimated cost $2 exceeds --daily-cost 1 on its own"},
		{Estimate{Tokens: 5000, Cost: Dollar}, ""},
	} {
		err := g.Check(tt.e)
		var tl *TooLargeError
		if tt.want == "" && err != nil || tt.want != "" && (!errors.As(err, &tl) || err.Error() != tt.want) {
			t.Errorf("Check(%+v) = %v, want %q", tt.e, err, tt.want)
		}
	}
	g.SetLimits(Limits{TPD: 8000})
	if err := g.Check(Estimate{Tokens: 9000}); err == nil || err.Error() != "estimate 9000 tokens exceeds --tpd 8000 on its own" {
		t.Errorf("Check(9000) with --tpd 8000 = %v", err)
	}
	if err := NewGate(new(MemStore), Limits{}).Check(Estimate{Tokens: 1 << 40, Cost: 1000 * Dollar}); err != nil {
		t.Errorf("Check with every limit off = %v, want nil", err)
	}
}

// A call whose price is unknown is never admitted under a dollar limit,
// rather than counted as free; without one it is admitted as before.
func TestUnknownCost(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		unknown := Estimate{Tokens: 10, CostUnknown: true}
		for _, tt := range []struct {
			name    string
			l       Limits
			refused bool
		}{
			{"daily cost on", Limits{DailyCost: Dollar}, true},
			{"daily cost on with token limits", Limits{TPM: 1000, TPD: 1000, DailyCost: 1}, true},
			{"no dollar limit", Limits{TPM: 1000, TPD: 1000}, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				m := open(t, State{})
				g := NewGate(m, tt.l)
				err := g.Check(unknown)
				var tl *TooLargeError
				if tt.refused && (!errors.As(err, &tl) || !strings.Contains(err.Error(), "no known price") || !strings.Contains(err.Error(), "--daily-cost")) {
					t.Errorf("Check(%+v) = %v, want a *TooLargeError naming the unknown price and --daily-cost", unknown, err)
				}
				if !tt.refused && err != nil {
					t.Errorf("Check(%+v) = %v, want nil", unknown, err)
				}
				n, _, _, err := g.Reserve(context.Background(), t0, []Estimate{{Tokens: 1}, unknown})
				if tt.refused && (n != 0 || !errors.As(err, &tl) || stateOf(t, m).RequestsWithinMin != 0) {
					t.Errorf("Reserve(known, unknown) = %d, %v, requests_within_min %v; want 0, a *TooLargeError, nothing reserved", n, err, stateOf(t, m).RequestsWithinMin)
				}
				if !tt.refused && (n != 2 || err != nil) {
					t.Errorf("Reserve(known, unknown) = %d, %v; want 2, nil", n, err)
				}
			})
		}
	})
}

func TestSettle(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 100, TPM: 100000, TPD: 1000000})
		est := Estimate{Tokens: 1000, Cost: 1000}
		reserve(t, g, t0, est, est, est)
		entry := &LedgerEntry{ID: "a", Status: 200}
		err := g.Settle(context.Background(), t0, []Settlement{
			{Est: est, Sent: true, Tokens: 300, Cost: 300, Entry: entry},      // done
			{Est: est, Sent: true, Entry: &LedgerEntry{ID: "b", Status: 500}}, // failed after sending
			{Est: est, Sent: false}, // never sent
		})
		if err != nil {
			t.Fatal(err)
		}
		st := stateOf(t, m)
		if st.TokensWithinDay != 300 || st.CostWithinDay != 300 {
			t.Errorf("day = %d tokens, %s; want the actuals: 300 tokens, $%s", st.TokensWithinDay, st.CostWithinDay, Cost(300))
		}
		if st.RequestsWithinMin != 2 || st.TokensWithinMin != 2000 {
			t.Errorf("minute buckets = %v requests, %v tokens; want the two sent ones' charge kept: 2, 2000", st.RequestsWithinMin, st.TokensWithinMin)
		}
		if rep, err := m.Report(context.Background(), ReportOptions{}, time.UTC); err != nil || rep.Total.Requests != 2 || rep.Total.Succeeded != 1 {
			t.Errorf("ledger = %+v, %v; want entries a (succeeded) and b", rep.Total, err)
		}
	})
}

func TestPause(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 100})
		ctx := context.Background()
		if err := g.Pause(ctx, t0, t0.Add(3*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := g.Pause(ctx, t0, t0.Add(time.Second)); err != nil { // an earlier end does not shorten it
			t.Fatal(err)
		}
		if n, wait, why := reserve(t, g, t0.Add(time.Second), Estimate{}); n != 0 || why != BackOff || wait != 2*time.Second {
			t.Errorf("Reserve while paused = %d, %v, %q; want 0, 2s, %q", n, wait, why, BackOff)
		}
		// Another gate on the same store (another process) waits as well.
		if n, _, why := reserve(t, exactGate(m, Limits{}), t0.Add(2*time.Second), Estimate{}); n != 0 || why != BackOff {
			t.Errorf("Reserve on another gate while paused = %d, %q; want 0, %q", n, why, BackOff)
		}
		if n, _, _ := reserve(t, g, t0.Add(3*time.Second), Estimate{}); n != 1 {
			t.Error("Reserve at the end of the pause refused")
		}
	})
}

// After a 429, the bucket holds what the server counts as used, so sending
// resumes at the server's pace rather than in a burst.
func TestRefusedHoldsServerUsage(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 60})
		if _, err := g.Refused(context.Background(), t0, Refusal{Until: t0.Add(time.Second), Used: ServerUsage{Requests: 60, Tokens: -1}}); err != nil {
			t.Fatal(err)
		}
		// Paused 1 s; then the bucket has drained 1 request: one fits, not 60.
		if n, _, _ := reserve(t, g, t0.Add(time.Second), ones(10, 1)...); n != 1 {
			t.Errorf("Reserve after a refusal with a full server bucket = %d, want 1", n)
		}
	})
}

// A clock behind the file's (another process's) drains nothing and does
// not move updated back.
func TestReserveClockBehind(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		m := open(t, State{})
		g := exactGate(m, Limits{RPM: 60})
		reserve(t, g, t0, ones(60, 1)...)
		if n, wait, _ := reserve(t, g, t0.Add(-time.Second), Estimate{}); n != 0 || wait != time.Second {
			t.Errorf("Reserve a second before updated = %d, %v; want 0, 1s", n, wait)
		}
		if st := stateOf(t, m); !st.Updated.Equal(t0) {
			t.Errorf("updated = %v, want %v", st.Updated, t0)
		}
	})
}

// BenchmarkGateReserveSettle is one request's reservation and settlement
// through a locked usage.md, reserving one at a time or in blocks of 16 as
// the pipeline's gate does when requests queue.
func BenchmarkGateReserveSettle(b *testing.B) {
	for _, block := range []int{1, 16} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			f, err := OpenFile(filepath.Join(b.TempDir(), "usage.md"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			g := NewGate(f, Limits{RPM: 1 << 40, TPM: 1 << 40, TPD: 1 << 50})
			ests := ones(block, 300)
			ss := make([]Settlement, block)
			for i := range ss {
				ss[i] = Settlement{Est: ests[i], Sent: true, Tokens: 200, Cost: 100, Entry: &LedgerEntry{ID: "x", Status: 200}}
			}
			ctx := context.Background()
			now := t0
			n := 0
			for b.Loop() {
				now = now.Add(time.Millisecond)
				if got, _, _, err := g.Reserve(ctx, now, ests); err != nil || got != block {
					b.Fatalf("Reserve = %d, %v; want %d", got, err, block)
				}
				if err := g.Settle(ctx, now, ss); err != nil {
					b.Fatal(err)
				}
				n += block
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/req")
		})
	}
}

// A lag told (Lag) is kept in hand on top of the slack, for PaceLapse.
func TestLagKeptInHand(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 600})
		g.Lag(t0, time.Second)
		if n, _, _ := reserve(t, g, t0, ones(700, 1)...); n != 590 {
			t.Errorf("Reserve(700) on a full rpm 600 bucket after a lag of 1 s = %d, want 590 (1 s of refill kept in hand)", n)
		}
		g = exactGate(open(t, State{}), Limits{RPM: 600})
		g.Lag(t0, time.Second)
		if n, _, _ := reserve(t, g, t0.Add(PaceLapse+time.Second), ones(700, 1)...); n != 600 {
			t.Errorf("Reserve(700) %v after the lag = %d, want 600 (the lag lapsed)", PaceLapse+time.Second, n)
		}
	})
}

// The first requests of a run reach the server late (cold connections, a
// cold process on a busy machine), later ones at once: while the first
// are on their way the server's bucket sits full and its refill goes to
// waste, refill the gate counted and hands out, and the server, charging
// at arrival, refuses the excess (4 of 1,320 for a first round 300 ms
// late, as TestRedisHostsShareLimits met). Told each lag as its request
// goes out (Lag), as the pipeline does, the gate keeps it in hand and the
// server refuses none.
func TestLagKeepsServerBucket(t *testing.T) {
	for _, tt := range []struct {
		late time.Duration
		tell bool
	}{
		{300 * time.Millisecond, false}, // the scenario bites
		{300 * time.Millisecond, true},
		{time.Second, true},
	} {
		t.Run(fmt.Sprintf("%v,told=%v", tt.late, tt.tell), func(t *testing.T) {
			const rpm, workers = 1200, 128 // 4 processes × --parallel 32
			g := NewGate(new(MemStore), Limits{RPM: rpm})
			type event struct {
				at, reserved time.Time
				arrival      bool // else a worker free to reserve
			}
			var events []event // by time; events at the same time in the order they came
			for range workers {
				events = append(events, event{at: t0})
			}
			// add inserts e after every event not later than it.
			add := func(e event) {
				i, _ := slices.BinarySearchFunc(events, e, func(a, b event) int {
					if a.at.After(b.at) {
						return 1
					}
					return -1
				})
				events = slices.Insert(events, i, e)
			}
			server, last := float64(rpm), t0 // full at the start, as the API's
			sent, refused := 0, 0
			for len(events) > 0 {
				e := events[0]
				events = events[1:]
				switch {
				case e.arrival:
					if tt.tell {
						g.Lag(e.at, e.at.Sub(e.reserved))
					}
					server = min(rpm, server+e.at.Sub(last).Seconds()*rpm/60)
					last = e.at
					if server < 1-1e-9 {
						refused++
					} else {
						server--
					}
					add(event{at: e.at.Add(20 * time.Millisecond)}) // answered
				case sent < 1320:
					n, wait, _ := reserve(t, g, e.at, Estimate{Tokens: 1})
					if n == 0 {
						add(event{at: e.at.Add(max(wait, time.Millisecond))})
						continue
					}
					lag := time.Millisecond
					if sent < workers {
						lag = tt.late // the first round
					}
					add(event{at: e.at.Add(lag), reserved: e.at, arrival: true})
					sent++
				}
			}
			if tt.tell && refused > 0 || !tt.tell && refused == 0 {
				t.Errorf("the first round %v late, lags told %v: the server refused %d", tt.late, tt.tell, refused)
			}
		})
	}
}
