package budget

import (
	"context"
	"testing"
	"time"
)

func refused(t *testing.T, g *Gate, now time.Time, r Refusal) Reason {
	t.Helper()
	newly, err := g.Refused(context.Background(), now, r)
	if err != nil {
		t.Fatalf("Refused = %v", err)
	}
	return newly
}

// admitTimes simulates one client that asks for one request of tokens at a
// time, from start until end, waiting exactly as long as the gate says,
// and returns the instants it was admitted.
func admitTimes(t *testing.T, g *Gate, start, end time.Time, tokens int64) []time.Time {
	t.Helper()
	var at []time.Time
	for now := start; now.Before(end); {
		n, wait, _ := reserve(t, g, now, Estimate{Tokens: tokens})
		if n == 1 {
			at = append(at, now)
			continue
		}
		now = now.Add(wait)
	}
	return at
}

// maxInWindow is the most instants of at that fall in any window of length
// w (closed at the start, open at the end).
func maxInWindow(at []time.Time, w time.Duration) int {
	most := 0
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < w; j++ {
			n++
		}
		most = max(most, n)
	}
	return most
}

// A 429 while the minute bucket had plenty of room switches the refused
// limit to per-second pacing: from then on no second admits more than
// limit/60, and requests are spread across the second.
func TestRefusedSwitchesToPacing(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		tests := []struct {
			name   string
			lim    Limits
			limit  Reason
			tokens int64
			paced  Reason
			share  int // limit/60 in the unit of the limit
		}{
			{"requests", Limits{RPM: 600}, MinuteRequests, 1, PacedRequests, 10},
			{"tokens", Limits{TPM: 60000}, MinuteTokens, 60, PacedTokens, 1000},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				g := exactGate(open(t, State{}), tt.lim)
				// A burst of 20 requests fills a twentieth of the bucket.
				if n, _, _ := reserve(t, g, t0, ones(20, tt.tokens)...); n != 20 {
					t.Fatalf("Reserve(20) on a fresh bucket = %d, want 20", n)
				}
				until := t0.Add(time.Second)
				if got := refused(t, g, t0, Refusal{Limit: tt.limit, Until: until}); got != tt.paced {
					t.Fatalf("Refused(%s) with a roomy bucket = %q, want %q", tt.limit, got, tt.paced)
				}
				if got := refused(t, g, t0.Add(time.Millisecond), Refusal{Limit: tt.limit, Until: until}); got != "" {
					t.Errorf("Refused again while paced = %q, want \"\" (said once)", got)
				}
				if n, wait, why := reserve(t, g, t0.Add(10*time.Millisecond), ones(1, tt.tokens)...); n != 0 || why != BackOff || wait != 990*time.Millisecond {
					t.Errorf("Reserve during the back-off = %d, %v, %q; want 0, 990ms, %q", n, wait, why, BackOff)
				}
				at := admitTimes(t, g, until, until.Add(10*time.Second), tt.tokens)
				// Even spacing at PaceShare of the rate admits in any second
				// at most its share, rounded down, plus the request that
				// opens the second: for whole requests that is limit/60; for
				// tokens it can be one request more, which a server's
				// continuous bucket absorbs (a fixed window rarely sees it).
				perSecond := int64(tt.share) / tt.tokens
				bound := int64(float64(tt.share)*PaceShare/float64(tt.tokens)) + 1
				if got := maxInWindow(at, time.Second); int64(got) > bound || (tt.tokens == 1 && int64(got) > perSecond) {
					t.Errorf("paced: %d admitted in one second, want at most %d (limit/60 is %d)", got, bound, perSecond)
				}
				// Spread: never two closer than the paced interval.
				gap := paceInterval(tt.tokens, max(tt.lim.RPM, tt.lim.TPM))
				for i := 1; i < len(at); i++ {
					if d := at[i].Sub(at[i-1]); d < gap {
						t.Fatalf("admissions %d and %d %v apart, want at least %v", i-1, i, d, gap)
					}
				}
				// Within 1/PaceShare of the server's own pace.
				if want := int(float64(perSecond) * 10 * PaceShare); len(at) < want-1 {
					t.Errorf("paced for 10 s: admitted %d, want about %d", len(at), want)
				}
			})
		}
	})
}

// A 429 when the minute bucket itself was (nearly) full is what a server
// with true minute buckets does: no pacing.
func TestRefusedFullBucketDoesNotPace(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 600})
		if n, _, _ := reserve(t, g, t0, ones(600, 1)...); n != 600 {
			t.Fatalf("Reserve(600) = %d", n)
		}
		if got := refused(t, g, t0, Refusal{Limit: MinuteRequests, Until: t0.Add(100 * time.Millisecond)}); got != "" {
			t.Errorf("Refused with a full bucket = %q, want no pacing", got)
		}
		if got := refused(t, g, t0, Refusal{Until: t0.Add(100 * time.Millisecond)}); got != "" {
			t.Errorf("Refused naming no limit = %q, want no pacing", got)
		}
	})
}

// Pacing lapses PaceLapse after the last refusal that called for it, and
// the minute bucket's burst is back; every refusal while paced extends it.
func TestPacingLapses(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 600})
		refused(t, g, t0, Refusal{Limit: MinuteRequests, Until: t0})
		refused(t, g, t0.Add(30*time.Second), Refusal{Limit: MinuteRequests, Until: t0.Add(30 * time.Second)})
		if n, _, why := reserve(t, g, t0.Add(80*time.Second), ones(50, 1)...); n != 1 || why != PacedRequests {
			t.Errorf("Reserve(50) 50 s after the last refusal = %d, %q; want 1, %q", n, why, PacedRequests)
		}
		if n, _, _ := reserve(t, g, t0.Add(91*time.Second), ones(50, 1)...); n != 50 {
			t.Errorf("Reserve(50) 61 s after the last refusal = %d, want 50 (the burst is back)", n)
		}
		st := stateOf(t, g.store)
		if !st.RequestsPacedUntil.IsZero() || !st.RequestsNextAt.IsZero() {
			t.Errorf("after the lapse the state still paces: %v, %v", st.RequestsPacedUntil, st.RequestsNextAt)
		}
	})
}

// Retries that all wait for the same back-off do not go out together when
// it ends: each gets the next paced slot.
func TestRetriesAfterPauseAreSpread(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		g := exactGate(open(t, State{}), Limits{RPM: 600})
		reserve(t, g, t0, ones(30, 1)...)
		until := t0.Add(2 * time.Second)
		refused(t, g, t0, Refusal{Limit: MinuteRequests, Until: until})
		// 30 workers ask at the instant the pause ends: one goes.
		n, wait, why := reserve(t, g, until, ones(30, 1)...)
		if n != 1 || why != PacedRequests || wait != paceInterval(1, 600) {
			t.Errorf("Reserve(30) as the pause ends = %d, %v, %q; want 1, %v, %q", n, wait, why, paceInterval(1, 600), PacedRequests)
		}
	})
}

// Pacing lives in the shared state: another gate on the same store (another
// process) paces alike, and it survives usage.md's format.
func TestPacingIsShared(t *testing.T) {
	onEveryStore(t, func(t *testing.T, open func(*testing.T, State) Store) {
		store := open(t, State{})
		a, b := exactGate(store, Limits{RPM: 600}), exactGate(store, Limits{RPM: 600})
		refused(t, a, t0, Refusal{Limit: MinuteRequests, Until: t0})
		if n, _, _ := reserve(t, a, t0, ones(1, 1)...); n != 1 {
			t.Fatalf("a: Reserve = %d, want 1", n)
		}
		if n, _, why := reserve(t, b, t0.Add(time.Millisecond), ones(1, 1)...); n != 0 || why != PacedRequests {
			t.Errorf("b: Reserve 1 ms after a's = %d, %q; want 0, %q", n, why, PacedRequests)
		}
		s := stateOf(t, store)
		back, err := ParseState(s.Format())
		if err != nil {
			t.Fatalf("ParseState(Format()) = %v", err)
		}
		if !back.RequestsPacedUntil.Equal(s.RequestsPacedUntil) || !back.RequestsNextAt.Equal(s.RequestsNextAt) {
			t.Errorf("pacing after a round trip = %v, %v; want %v, %v", back.RequestsPacedUntil, back.RequestsNextAt, s.RequestsPacedUntil, s.RequestsNextAt)
		}
	})
}
