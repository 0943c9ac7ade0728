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

// Error is the message, naming the estimate and the limit.
func (e *TooLargeError) Error() string { return e.Msg }

// DefaultSlack is the slack a new Gate keeps: see SetSlack.
const DefaultSlack = 100 * time.Millisecond

// Gate admits requests against Limits through a Store, as rate.Limiter
// does against one process's clock: the time is a parameter, reservations
// are charged up front and settled to actuals later. Safe for concurrent
// use; every decision is one Store.Update, so gates in many processes
// sharing a FileStore decide as one. Over a RedisStore every decision is
// instead one script on the server, on the server's clock.
type Gate struct {
	store Store
	mu    sync.Mutex // guards lim and slack
	lim   Limits
	slack time.Duration
}

// NewGate is a gate over s with limits l and DefaultSlack.
func NewGate(s Store, l Limits) *Gate { return &Gate{store: s, lim: l, slack: DefaultSlack} }

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

// SetSlack sets how much of each minute bucket's refill the gate keeps in
// hand once the bucket holds anything: a request can reach the server
// after one admitted later than it (a new connection, a slow goroutine),
// and the server charges its bucket at arrival. With slack 0 the gate is
// exactly the server's bucket: capacity the limit, full at start,
// refilled at limit/60 a second. An empty bucket admits anything up to the
// limit whatever the slack, so a request as large as the limit still fits.
func (g *Gate) SetSlack(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.slack = max(d, 0)
}

func (g *Gate) config() (Limits, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim, g.slack
}

// Check says whether e can ever be admitted: a *TooLargeError when e
// exceeds on its own a limit that is on (--tpm, --tpd, --daily-cost).
func (g *Gate) Check(e Estimate) error {
	l := g.Limits()
	switch {
	case l.TPM > 0 && e.Tokens > l.TPM:
		return &TooLargeError{fmt.Sprintf("estimate %d tokens exceeds --tpm %d on its own", e.Tokens, l.TPM)}
	case l.TPD > 0 && e.Tokens > l.TPD:
		return &TooLargeError{fmt.Sprintf("estimate %d tokens exceeds --tpd %d on its own", e.Tokens, l.TPD)}
	case l.DailyCost > 0 && e.Cost > l.DailyCost:
		return &TooLargeError{fmt.Sprintf("estimated cost $%s exceeds --daily-cost %s on its own", e.Cost, l.DailyCost)}
	}
	return nil
}

// advance brings s to now: the minute buckets drain by the time elapsed
// since s.Updated (never negative: a clock behind another process's drains
// nothing), the day counters start again on a new local day, and a pause
// that has ended is cleared.
func advance(s *State, l Limits, now time.Time) {
	if today := now.Format(time.DateOnly); s.Date != today {
		s.Date = today
		s.TokensWithinDay, s.CostWithinDay, s.DayTokenLimitReached = 0, 0, false
	}
	if s.Updated.IsZero() {
		s.Updated = now // a fresh or hand-made file: its levels drain from now
	} else if el := now.Sub(s.Updated).Seconds(); el > 0 {
		s.TokensWithinMin = drain(s.TokensWithinMin, l.TPM, el)
		s.RequestsWithinMin = drain(s.RequestsWithinMin, l.RPM, el)
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

// bucketWait is how long until a bucket at level with a per-minute limit
// has room for need, keeping slack's refill in hand.
func bucketWait(level float64, need, limit int64, slack time.Duration) time.Duration {
	rate := float64(limit) / 60 // a second
	// Whole units only, so that a small limit still admits all of itself
	// at once.
	capacity := float64(limit) - math.Floor(rate*slack.Seconds())
	if level <= 0 || float64(need) > capacity {
		capacity = float64(limit)
	}
	over := level + float64(need) - capacity
	// tol absorbs float rounding, so that a request retried after the
	// wait returned fits.
	if tol := 1e-6 + float64(limit)*1e-12; over <= tol {
		return 0
	}
	ns := math.Ceil(over / rate * float64(time.Second))
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

// Reserve admits the longest prefix of ests that fits at now and charges
// each one: a request and its tokens against the minute buckets, its
// tokens and cost against the day. When not all fit it returns n <
// len(ests), how long until the next would fit (the longest of the waits
// of the limits that hold it: bucket waits are exact, day limits wait for
// local midnight, a back-off for its end) and the limit that holds it
// longest. It sets minute_token_limit_reached and day_token_limit_reached
// to whether those limits held the next estimate, and writes the store
// only when it admitted something or a flag changed. One Store.Update does
// it all.
func (g *Gate) Reserve(ctx context.Context, now time.Time, ests []Estimate) (n int, wait time.Duration, why Reason, err error) {
	if len(ests) == 0 {
		return 0, 0, "", nil
	}
	l, slack := g.config()
	if sg, ok := g.store.(serverGate); ok {
		return sg.reserve(ctx, now, l, slack, ests)
	}
	err = g.store.Update(ctx, func(s *State) ([]LedgerEntry, error) {
		n, wait, why = 0, 0, ""
		old := *s
		advance(s, l, now)
		if s.PausedUntil.After(now) {
			wait, why = s.PausedUntil.Sub(now), BackOff
			*s = old // nothing changed that the next reader will not work out
			return nil, nil
		}
		var minute, day bool
		for _, e := range ests {
			if wait, why, minute, day = room(s, l, slack, e, now); wait > 0 {
				break
			}
			s.RequestsWithinMin++
			s.TokensWithinMin += float64(e.Tokens)
			s.TokensWithinDay += e.Tokens
			s.CostWithinDay += e.Cost
			n++
		}
		if n == 0 && minute == old.MinuteTokenLimitReached && day == old.DayTokenLimitReached {
			*s = old
			return nil, nil
		}
		s.MinuteTokenLimitReached, s.DayTokenLimitReached = minute, day
		return nil, nil
	})
	if err != nil {
		return 0, 0, "", err
	}
	return n, wait, why, nil
}

// room is how long e must wait for every limit to have room for it, the
// limit that holds it longest, and whether the minute token limit and the
// day token limit hold it.
func room(s *State, l Limits, slack time.Duration, e Estimate, now time.Time) (wait time.Duration, why Reason, minute, day bool) {
	hold := func(w time.Duration, r Reason) {
		if w > wait {
			wait, why = w, r
		}
	}
	if l.TPD > 0 && s.TokensWithinDay+e.Tokens > l.TPD {
		day = true
		hold(untilMidnight(now), DayTokens)
	}
	if l.DailyCost > 0 && s.CostWithinDay+e.Cost > l.DailyCost {
		hold(untilMidnight(now), DayCost)
	}
	if l.TPM > 0 {
		w := bucketWait(s.TokensWithinMin, e.Tokens, l.TPM, slack)
		minute = w > 0
		hold(w, MinuteTokens)
	}
	if l.RPM > 0 {
		hold(bucketWait(s.RequestsWithinMin, 1, l.RPM, slack), MinuteRequests)
	}
	return wait, why, minute, day
}

// untilMidnight is the time from now to the next local midnight in now's
// location.
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
	if len(ss) == 0 {
		return nil
	}
	l := g.Limits()
	if sg, ok := g.store.(serverGate); ok {
		return sg.settle(ctx, now, l, ss)
	}
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

// Pause makes every process sharing the store wait until at least until:
// paused_until becomes the later of its old value and until.
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
	if sg, ok := g.store.(serverGate); ok {
		return sg.sync(ctx, now, until, l, used)
	}
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
