package budget

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func reserve(t *testing.T, g *Gate, now time.Time, ests ...Estimate) (int, time.Duration, Reason) {
	t.Helper()
	n, wait, why, err := g.Reserve(context.Background(), now, ests)
	if err != nil {
		t.Fatal(err)
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

// A fresh bucket admits the limit at once, then refills at limit/60 a
// second, less the slack kept in hand.
func TestReserveRPM(t *testing.T) {
	g := NewGate(new(MemStore), Limits{RPM: 600})
	// 599: one request's refill (100 ms) is kept in hand for requests that
	// reach the server out of order.
	if n, _, _ := reserve(t, g, t0, ones(700, 1)...); n != 599 {
		t.Fatalf("Reserve(700) on a fresh rpm 600 bucket = %d, want 599", n)
	}
	n, wait, why := reserve(t, g, t0, ones(1, 1)...)
	// 599 in the bucket, 599 usable: 1 request must drain.
	if n != 0 || why != MinuteRequests || wait != 100*time.Millisecond {
		t.Errorf("Reserve after 599 = %d, %v, %q; want 0, 100ms, %q", n, wait, why, MinuteRequests)
	}
	if n, _, _ := reserve(t, g, t0.Add(wait), ones(5, 1)...); n != 1 {
		t.Errorf("Reserve(5) after the wait = %d, want 1", n)
	}
}

// Over a simulated two minutes, admitting greedily never admits a request
// that the API's own bucket (full at start, refilled continuously) would
// refuse, even if it reached the server up to the slack later than
// requests admitted after it; and it keeps pace with that bucket.
func TestReserveMatchesServerBucket(t *testing.T) {
	const rpm = 600
	g := NewGate(new(MemStore), Limits{RPM: rpm})
	server, last := float64(rpm), t0 // the server's tokens, full at start
	admitted := 0
	for now := t0; now.Before(t0.Add(2 * time.Minute)); now = now.Add(10 * time.Millisecond) {
		n, _, _ := reserve(t, g, now, ones(50, 1)...)
		server = min(rpm, server+now.Sub(last).Seconds()*rpm/60)
		last = now
		if server-float64(n) < -1e-9 {
			t.Fatalf("at %v the gate admitted %d, the server had room for %.2f", now.Sub(t0), n, server)
		}
		server -= float64(n)
		admitted += n
	}
	// 600 at once, then 10 a second for 120 s, less the request of slack.
	if want := rpm + 10*120 - 1; admitted < want-1 || admitted > want {
		t.Errorf("admitted %d in two minutes, want %d", admitted, want)
	}
}

func TestReserveTPMWait(t *testing.T) {
	g := NewGate(new(MemStore), Limits{TPM: 6000})
	if n, _, _ := reserve(t, g, t0, Estimate{Tokens: 5000}); n != 1 {
		t.Fatal("first reservation refused")
	}
	// Level 5000, limit 6000 less 10 tokens of slack: 4000 more must drain
	// at 100 a second.
	n, wait, why := reserve(t, g, t0, Estimate{Tokens: 5000})
	if n != 0 || why != MinuteTokens || wait != 40100*time.Millisecond {
		t.Errorf("Reserve = %d, %v, %q; want 0, 40.1s, %q", n, wait, why, MinuteTokens)
	}
}

func TestDayLimits(t *testing.T) {
	local := time.FixedZone("X", 3600)
	now := time.Date(2026, 11, 22, 23, 0, 0, 0, local)
	for _, tt := range []struct {
		name string
		l    Limits
		e    Estimate
		why  Reason
	}{
		{"tpd", Limits{TPD: 1000}, Estimate{Tokens: 600}, DayTokens},
		{"daily cost", Limits{DailyCost: Dollar}, Estimate{Tokens: 1, Cost: Dollar * 6 / 10}, DayCost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := new(MemStore)
			g := NewGate(m, tt.l)
			reserve(t, g, now, tt.e)
			n, wait, why := reserve(t, g, now, tt.e)
			if n != 0 || why != tt.why || wait != time.Hour {
				t.Errorf("Reserve = %d, %v, %q; want 0, 1h (midnight), %q", n, wait, why, tt.why)
			}
			if tt.why == DayTokens && !m.State().DayTokenLimitReached {
				t.Error("day_token_limit_reached not set")
			}
			if n, _, _ := reserve(t, g, now.Add(time.Hour), tt.e); n != 1 {
				t.Error("the next day still refuses")
			}
			if st := m.State(); st.Date != "2026-11-23" || st.TokensWithinDay != tt.e.Tokens || st.DayTokenLimitReached {
				t.Errorf("state after midnight = %+v", st)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	g := NewGate(new(MemStore), Limits{TPM: 1000, TPD: 5000, DailyCost: Dollar})
	var tl *TooLargeError
	for _, e := range []Estimate{{Tokens: 1001}, {Tokens: 10, Cost: 2 * Dollar}} {
		if err := g.Check(e); !errors.As(err, &tl) {
			t.Errorf("Check(%+v) = %v, want a TooLargeError", e, err)
		}
	}
	if err := g.Check(Estimate{Tokens: 1000, Cost: Dollar}); err != nil {
		t.Errorf("Check at the limits = %v, want nil", err)
	}
}

func TestSettle(t *testing.T) {
	m := new(MemStore)
	g := NewGate(m, Limits{RPM: 100, TPM: 100000, TPD: 1000000})
	est := Estimate{Tokens: 1000, Cost: 1000}
	reserve(t, g, t0, est, est)
	entry := &LedgerEntry{ID: "a", Status: 200}
	err := g.Settle(context.Background(), t0, []Settlement{
		{Est: est, Sent: true, Tokens: 300, Cost: 300, Entry: entry},
		{Est: est, Sent: false},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := m.State()
	if st.TokensWithinDay != 300 || st.CostWithinDay != 300 {
		t.Errorf("day = %d tokens, %d cost; want the actuals 300, 300", st.TokensWithinDay, st.CostWithinDay)
	}
	if st.RequestsWithinMin != 1 || st.TokensWithinMin != 1000 {
		t.Errorf("minute = %v requests, %v tokens; want the sent one's charge kept: 1, 1000", st.RequestsWithinMin, st.TokensWithinMin)
	}
	if es := m.Entries(); len(es) != 1 || es[0].ID != "a" {
		t.Errorf("ledger = %+v, want the one entry", es)
	}
}

func TestPause(t *testing.T) {
	g := NewGate(new(MemStore), Limits{RPM: 100})
	if err := g.Pause(context.Background(), t0, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, wait, why := reserve(t, g, t0.Add(time.Second), Estimate{}); n != 0 || why != BackOff || wait != 2*time.Second {
		t.Errorf("Reserve while paused = %d, %v, %q; want 0, 2s, %q", n, wait, why, BackOff)
	}
	if n, _, _ := reserve(t, g, t0.Add(3*time.Second), Estimate{}); n != 1 {
		t.Error("Reserve after the pause refused")
	}
}

// BenchmarkGateReserveSettle is one request's reservation and settlement
// through a locked usage.md, reserving one at a time or in blocks of 16 as
// the pipeline's gate does when requests queue.
func BenchmarkGateReserveSettle(b *testing.B) {
	for _, block := range []int{1, 16} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			f, err := OpenFile(filepath.Join(b.TempDir(), "usage.md"))
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
				if _, _, _, err := g.Reserve(ctx, now, ests); err != nil {
					b.Fatal(err)
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

// After a 429, the bucket holds what the server counts as used, so sending
// resumes at the server's pace rather than in a burst.
func TestSync(t *testing.T) {
	m := new(MemStore)
	g := NewGate(m, Limits{RPM: 60})
	if err := g.Sync(context.Background(), t0, t0.Add(time.Second), ServerUsage{Requests: 60, Tokens: -1}); err != nil {
		t.Fatal(err)
	}
	// Paused 1 s; then the bucket has drained 1 request: one fits, not 60.
	if n, _, _ := reserve(t, g, t0.Add(time.Second), ones(10, 1)...); n != 1 {
		t.Errorf("Reserve after Sync to a full server bucket = %d, want 1", n)
	}
	if st := m.State(); st.TokensWithinMin != 1 {
		t.Errorf("tokens_within_min = %v after an unstated token usage, want 1", st.TokensWithinMin)
	}
}
