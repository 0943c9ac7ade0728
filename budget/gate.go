package budget

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Limits are the shared limits; 0 means off.
type Limits struct {
	RPM, TPM, TPD int64
	DailyCost     Cost
}

// Estimate is the most one API call may use.
type Estimate struct {
	Tokens int64 // prompt tokens + maximum output tokens
	Cost   Cost  // the price of Tokens
}

// Reason is why a reservation has to wait.
type Reason string

// The reasons.
const (
	MinuteRequests Reason = "minute request limit"
	MinuteTokens   Reason = "minute token limit"
	DayTokens      Reason = "day token limit"
	DayCost        Reason = "daily cost limit"
	BackOff        Reason = "server back-off"
)

// TooLargeError says an estimate exceeds a limit on its own: it can never
// be admitted.
type TooLargeError struct{ Msg string }

func (e *TooLargeError) Error() string { return e.Msg }

// Gate admits requests against Limits through a Store, as rate.Limiter
// does against one process's clock: the time is a parameter, reservations
// are charged up front and settled to actuals later. Safe for concurrent
// use.
type Gate struct {
	store Store
	mu    sync.Mutex // guards limits
	lim   Limits
}

// NewGate is a gate over s with limits l.
func NewGate(s Store, l Limits) *Gate { return &Gate{store: s, lim: l} }

// Limits are the gate's current limits.
func (g *Gate) Limits() Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim
}

// SetLimits changes the limits, as when the server says its own are lower.
func (g *Gate) SetLimits(l Limits) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lim = l
}

// Check says whether e can ever be admitted: a *TooLargeError when e
// exceeds a limit on its own.
func (g *Gate) Check(e Estimate) error {
	l := g.Limits()
	switch {
	case l.TPM > 0 && e.Tokens > l.TPM:
		return &TooLargeError{fmt.Sprintf("estimate of %d tokens exceeds --tpm %d on its own", e.Tokens, l.TPM)}
	case l.TPD > 0 && e.Tokens > l.TPD:
		return &TooLargeError{fmt.Sprintf("estimate of %d tokens exceeds --tpd %d on its own", e.Tokens, l.TPD)}
	case l.DailyCost > 0 && e.Cost > l.DailyCost:
		return &TooLargeError{fmt.Sprintf("estimated cost $%s exceeds --daily-cost %s on its own", e.Cost, l.DailyCost)}
	}
	return nil
}

// advance brings s to now: the minute buckets drain by the time elapsed
// since s.Updated, and the day counters start again on a new day.
func advance(s *State, l Limits, now time.Time) {
	if today := now.Format(time.DateOnly); s.Date != today {
		s.Date = today
		s.TokensWithinDay, s.CostWithinDay, s.DayTokenLimitReached = 0, 0, false
	}
	if el := now.Sub(s.Updated).Seconds(); el > 0 && !s.Updated.IsZero() {
		s.TokensWithinMin = drain(s.TokensWithinMin, l.TPM, el)
		s.RequestsWithinMin = drain(s.RequestsWithinMin, l.RPM, el)
	}
	if now.After(s.Updated) || s.Updated.IsZero() {
		s.Updated = now
	}
	if !s.PausedUntil.IsZero() && !now.Before(s.PausedUntil) {
		s.PausedUntil = time.Time{}
	}
}

// drain empties a bucket of a per-minute limit for secs seconds. With the
// limit off, the bucket drains at once.
func drain(level float64, limit int64, secs float64) float64 {
	if limit <= 0 {
		return 0
	}
	return max(0, level-float64(limit)/60*secs)
}

// slack is the time by which a request may reach the server later than
// another admitted after it (a new connection, a slow goroutine). The
// server's bucket is charged at arrival, so gptbatch keeps this much of
// each bucket's refill in hand; an empty bucket still admits anything that
// fits the limit.
const slack = 100 * time.Millisecond

// bucketWait is how long until a bucket at level with a per-minute limit
// has room for need.
func bucketWait(level float64, need, limit int64) time.Duration {
	// Whole units only, so that a small limit still admits all of itself
	// at once.
	capacity := float64(limit) - math.Floor(float64(limit)/60*slack.Seconds())
	if level <= 0 || float64(need) > capacity {
		capacity = float64(limit)
	}
	over := level + float64(need) - capacity
	if over <= 0 {
		return 0
	}
	secs := over / (float64(limit) / 60)
	return time.Duration(math.Ceil(secs * float64(time.Second)))
}

// Reserve admits the longest prefix of ests that fits at now and charges
// each one: a request and its tokens against the minute buckets, its
// tokens and cost against the day. When not all fit it returns n <
// len(ests), how long until the next would fit and which limit holds it.
// One Store.Update does it all.
func (g *Gate) Reserve(ctx context.Context, now time.Time, ests []Estimate) (n int, wait time.Duration, why Reason, err error) {
	l := g.Limits()
	err = g.store.Update(ctx, func(s *State) ([]LedgerEntry, error) {
		n, wait, why = 0, 0, ""
		advance(s, l, now)
		if s.PausedUntil.After(now) {
			wait, why = s.PausedUntil.Sub(now), BackOff
			return nil, nil
		}
		for _, e := range ests {
			if wait, why = room(s, l, e, now); wait > 0 {
				break
			}
			s.RequestsWithinMin++
			s.TokensWithinMin += float64(e.Tokens)
			s.TokensWithinDay += e.Tokens
			s.CostWithinDay += e.Cost
			n++
		}
		s.MinuteTokenLimitReached = why == MinuteTokens
		s.DayTokenLimitReached = why == DayTokens
		return nil, nil
	})
	return n, wait, why, err
}

// room is how long e must wait for every limit to have room for it.
func room(s *State, l Limits, e Estimate, now time.Time) (time.Duration, Reason) {
	if l.TPD > 0 && s.TokensWithinDay+e.Tokens > l.TPD {
		return untilMidnight(now), DayTokens
	}
	if l.DailyCost > 0 && s.CostWithinDay+e.Cost > l.DailyCost {
		return untilMidnight(now), DayCost
	}
	if l.RPM > 0 {
		if w := bucketWait(s.RequestsWithinMin, 1, l.RPM); w > 0 {
			return w, MinuteRequests
		}
	}
	if l.TPM > 0 {
		if w := bucketWait(s.TokensWithinMin, e.Tokens, l.TPM); w > 0 {
			return w, MinuteTokens
		}
	}
	return 0, ""
}

func untilMidnight(now time.Time) time.Duration {
	y, m, d := now.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, now.Location()).Sub(now)
}

// Settlement ends one reservation: one API attempt, or one admitted
// request that was never sent.
type Settlement struct {
	Est    Estimate
	Sent   bool  // the request may have reached the API
	Tokens int64 // total tokens the API reported; 0 for a failure
	Cost   Cost  // what the call cost
	Entry  *LedgerEntry
}

// Settle applies settlements in one Store.Update. The day's tokens and
// cost move from the estimate to the actual. The minute buckets keep the
// charge of a request that was sent, since the API counts a request and its
// prompt+max_tokens estimate against its rate limits when it arrives and
// gives nothing back; a request never sent gives its charge back.
func (g *Gate) Settle(ctx context.Context, now time.Time, ss []Settlement) error {
	l := g.Limits()
	return g.store.Update(ctx, func(s *State) ([]LedgerEntry, error) {
		today := s.Date
		advance(s, l, now)
		sameDay := today == s.Date
		var entries []LedgerEntry
		for _, st := range ss {
			if sameDay {
				s.TokensWithinDay = max(0, s.TokensWithinDay-st.Est.Tokens)
				s.CostWithinDay = max(0, s.CostWithinDay-st.Est.Cost)
			}
			s.TokensWithinDay += st.Tokens
			s.CostWithinDay += st.Cost
			if !st.Sent {
				s.RequestsWithinMin = max(0, s.RequestsWithinMin-1)
				s.TokensWithinMin = max(0, s.TokensWithinMin-float64(st.Est.Tokens))
			}
			if st.Entry != nil {
				entries = append(entries, *st.Entry)
			}
		}
		return entries, nil
	})
}

// Pause makes every process sharing the store wait until at least until.
func (g *Gate) Pause(ctx context.Context, now, until time.Time) error {
	return g.Sync(ctx, now, until, ServerUsage{})
}

// ServerUsage is what the server's x-ratelimit headers say is used of its
// per-minute limits (limit − remaining); negative means not stated.
type ServerUsage struct{ Requests, Tokens float64 }

// Sync brings the shared state in line with the server after it refused a
// request or said a limit is used up: every process waits until at least
// until, and the minute buckets hold at least what the server counts as
// used, so that sending resumes at the server's pace instead of in a burst
// it would refuse.
func (g *Gate) Sync(ctx context.Context, now, until time.Time, used ServerUsage) error {
	l := g.Limits()
	return g.store.Update(ctx, func(s *State) ([]LedgerEntry, error) {
		advance(s, l, now)
		if until.After(s.PausedUntil) {
			s.PausedUntil = until
		}
		if used.Requests > s.RequestsWithinMin {
			s.RequestsWithinMin = used.Requests
		}
		if used.Tokens > s.TokensWithinMin {
			s.TokensWithinMin = used.Tokens
		}
		return nil, nil
	})
}
