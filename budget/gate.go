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
	Cost   Cost  // the price of Tokens; 0 when CostUnknown
	// CostUnknown: no known price, so never admitted under a dollar limit.
	CostUnknown bool
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

// TooLargeError says an estimate can never be admitted (see Check).
type TooLargeError struct{ Msg string }

// Error is the message, naming the estimate and the limit.
func (e *TooLargeError) Error() string { return e.Msg }

// DefaultSlack is the slack a new Gate keeps (see SetSlack): 250 ms covers
// a far network and a stalled scheduler (docs/performance.md).
const DefaultSlack = 250 * time.Millisecond

// Gate admits requests against Limits as rate.Limiter does: the time is a
// parameter, reservations are charged up front and settled later. Every
// decision is one Store.Update, so gates sharing a store decide as one, on
// the store's clock. Safe for concurrent use.
type Gate struct {
	store Store
	mu    sync.Mutex // guards lim, slack, lag, zone and seen
	lim   Limits
	slack time.Duration
	lag   time.Duration // the longest lag told (see Lag), as of lagAt
	lagAt time.Time
	zone  *time.Location // where a day this gate starts ends; nil: now's zone
	seen  Seen
}

// NewGate is a gate over s with limits l and DefaultSlack.
func NewGate(s Store, l Limits) *Gate { return &Gate{store: s, lim: l, slack: DefaultSlack} }

// Limits are the gate's own limits under the stored ones it last saw.
func (g *Gate) Limits() Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim.Ceil(g.seen.Stored)
}

// Own are the gate's own limits, before the stored ceilings.
func (g *Gate) Own() Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim
}

// Seen is what the gate last saw of the shared budget.
func (g *Gate) Seen() Seen {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen
}

// update is one Store.Update with the limits in force; it records what it
// saw.
func (g *Gate) update(ctx context.Context, now time.Time, fn func(s *State, at time.Time, l Limits, slack time.Duration, zone *time.Location) []LedgerEntry) error {
	own, slack, zone := g.conf(now)
	var seen Seen
	err := g.store.Update(ctx, now, func(s *State, at time.Time) ([]LedgerEntry, error) {
		entries := fn(s, at, own.Ceil(s.Stored), slack, zone)
		seen = Seen{State: *s}
		return entries, nil
	})
	if err == nil {
		g.saw(now, seen)
	}
	return err
}

// conf is what the gate decides by at now besides the shared state.
func (g *Gate) conf(now time.Time) (own Limits, slack time.Duration, zone *time.Location) {
	g.mu.Lock()
	defer g.mu.Unlock()
	slack = g.slack
	if now.Sub(g.lagAt) <= PaceLapse {
		slack += g.lag
	}
	return g.lim, slack, g.zone
}

// Lag tells the gate that a request it admitted at now-d went out at now.
// Requests admitted after a stalled one arrive closer together than spaced,
// so the longest lag of the last PaceLapse is added to the slack.
func (g *Gate) Lag(now time.Time, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d > g.lag || now.Sub(g.lagAt) > PaceLapse {
		g.lag, g.lagAt = max(d, 0), now
	}
}

// saw records what a decision at now saw, unless one saw later.
func (g *Gate) saw(now time.Time, s Seen) {
	s.At = now
	g.mu.Lock()
	defer g.mu.Unlock()
	if !now.Before(g.seen.At) {
		g.seen = s
	}
}

// shift is t, of the caller's clock (now), on the store's (at).
func shift(t, now, at time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return at.Add(t.Sub(now))
}

// BatchEntries is the store's: what collecting the batches settled before
// it was stopped, so that collecting them again settles only the rest.
func (g *Gate) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return g.store.BatchEntries(ctx, since, ids)
}

// Load reads the shared state, so that Limits knows the stored limits.
func (g *Gate) Load(ctx context.Context, now time.Time) error {
	return g.update(ctx, now, func(*State, time.Time, Limits, time.Duration, *time.Location) []LedgerEntry { return nil })
}

// SetLimits changes the limits, as when the server says its own are lower.
func (g *Gate) SetLimits(l Limits) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lim = l
}

// SetSlack sets how much of a minute bucket's refill the gate keeps in
// hand once it holds anything, as the server charges requests on arrival.
// With slack 0 the gate is exactly the server's bucket; an empty bucket
// admits up to the limit whatever the slack.
func (g *Gate) SetSlack(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.slack = max(d, 0)
}

// SetDayZone sets the zone whose midnight ends a day this gate starts (nil:
// the time's); every process keeps to the day_ends_at stored.
func (g *Gate) SetDayZone(loc *time.Location) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.zone = loc
}

// Check says whether e can ever be admitted: a *TooLargeError when it
// exceeds --tpm, --tpd or --daily-cost on its own, or its cost is unknown
// under --daily-cost.
func (g *Gate) Check(e Estimate) error {
	return CheckLimits(g.Limits(), e)
}

// CheckLimits is Check against l, for limits of the caller's own.
func CheckLimits(l Limits, e Estimate) error {
	switch {
	case l.DailyCost > 0 && e.CostUnknown:
		return &TooLargeError{"the model has no known price, so its cost cannot be counted against --daily-cost"}
	case l.TPM > 0 && e.Tokens > l.TPM:
		return &TooLargeError{fmt.Sprintf("estimate %d tokens exceeds --tpm %d on its own", e.Tokens, l.TPM)}
	case l.TPD > 0 && e.Tokens > l.TPD:
		return &TooLargeError{fmt.Sprintf("estimate %d tokens exceeds --tpd %d on its own", e.Tokens, l.TPD)}
	case l.DailyCost > 0 && e.Cost > l.DailyCost:
		return &TooLargeError{fmt.Sprintf("estimated cost $%s exceeds --daily-cost %s on its own", e.Cost, l.DailyCost)}
	}
	return nil
}

// maxFuture is how far ahead of now updated may be as another process's
// clock read a moment after ours (clamping it would hand out refill twice).
// Further, it is a skewed clock: clamped to now, so that the buckets do
// not freeze until the clock catches up.
const maxFuture = time.Second

// maxDay bounds a day: 25 hours as summer time ends, and a margin.
const maxDay = 26 * time.Hour

// advance brings s to now and reports whether a new day started.
func advance(s *State, l Limits, now time.Time, zone *time.Location) (newDay bool) {
	newDay = advanceDay(s, now, zone)
	if s.Updated.After(now.Add(maxFuture)) {
		s.Updated = now
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
	lapsePace(s, now)
	return newDay
}

// advanceDay starts a new day at s.DayEndsAt, ending at zone's next
// midnight: every process goes by the instant stored, whatever its zone.
func advanceDay(s *State, now time.Time, zone *time.Location) bool {
	if zone == nil {
		zone = now.Location()
	}
	local := now.In(zone)
	y, m, d := local.Date()
	next := time.Date(y, m, d+1, 0, 0, 0, 0, zone)
	switch {
	case s.DayEndsAt.IsZero():
		// A file from before day_ends_at (or fresh): its Date says.
		if s.Date == local.Format(time.DateOnly) {
			s.DayEndsAt = next
			return false
		}
	case now.Before(s.DayEndsAt):
		if s.DayEndsAt.Sub(now) > maxDay {
			// Started by a clock far ahead: end it at the next midnight.
			s.DayEndsAt = next
		}
		return false
	}
	s.Date = local.Format(time.DateOnly)
	s.DayEndsAt = next
	s.TokensWithinDay, s.CostWithinDay, s.DayTokenLimitReached = 0, 0, false
	return true
}

// drain empties a bucket of a per-minute limit (off: at once) for secs.
func drain(level float64, limit int64, secs float64) float64 {
	if limit <= 0 {
		return 0
	}
	return max(0, level-float64(limit)/60*secs)
}

// bucketWait is how long until a bucket at level has room for need.
func bucketWait(level float64, need, limit int64, slack time.Duration) time.Duration {
	rate := float64(limit) / 60 // a second
	// Whole units, so that a small limit still admits all of itself.
	capacity := float64(limit) - math.Floor(rate*slack.Seconds())
	if level <= 0 || float64(need) > capacity {
		capacity = float64(limit)
	}
	over := level + float64(need) - capacity
	// tol absorbs rounding: a request retried after the wait fits.
	if tol := 1e-6 + float64(limit)*1e-12; over <= tol {
		return 0
	}
	ns := math.Ceil(over / rate * float64(time.Second))
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

// Reserve admits the longest prefix of ests that fits at now, charging the
// minute buckets and the day. When not all fit, it says how long until the
// next would and the limit holding it longest, and the *_limit_reached
// flags whether those limits held it; the store is written only if one
// was admitted or a flag changed. An estimate Check refuses is an error,
// nothing reserved: it fails closed rather than wait for ever.
func (g *Gate) Reserve(ctx context.Context, now time.Time, ests []Estimate) (n int, wait time.Duration, why Reason, err error) {
	if len(ests) == 0 {
		return 0, 0, "", nil
	}
	for _, e := range ests {
		if e.CostUnknown {
			if err := CheckLimits(g.Limits(), e); err != nil {
				return 0, 0, "", err
			}
		}
	}
	err = g.update(ctx, now, func(s *State, now time.Time, l Limits, slack time.Duration, zone *time.Location) []LedgerEntry {
		n, wait, why = 0, 0, ""
		old := *s
		advance(s, l, now, zone)
		// A clamped updated is written, or the buckets would never drain.
		clamped := !s.Updated.Equal(old.Updated) && old.Updated.After(now)
		if s.PausedUntil.After(now) {
			wait, why = s.PausedUntil.Sub(now), BackOff
			if !clamped {
				*s = old // nothing changed that the next reader will not work out
			}
			return nil
		}
		var minute, day bool
		for _, e := range ests {
			if wait, why, minute, day = room(s, l, slack, e, now); wait > 0 {
				break
			}
			chargePace(s, l, e, now)
			s.RequestsWithinMin++
			s.TokensWithinMin += float64(e.Tokens)
			s.TokensWithinDay += e.Tokens
			s.CostWithinDay += e.Cost
			n++
		}
		if n == 0 && !clamped && minute == old.MinuteTokenLimitReached && day == old.DayTokenLimitReached {
			*s = old
			return nil
		}
		s.MinuteTokenLimitReached, s.DayTokenLimitReached = minute, day
		return nil
	})
	if err != nil {
		return 0, 0, "", err
	}
	return n, wait, why, nil
}

// room is how long e must wait, why, and whether token limits hold it.
func room(s *State, l Limits, slack time.Duration, e Estimate, now time.Time) (wait time.Duration, why Reason, minute, day bool) {
	hold := func(w time.Duration, r Reason) {
		if w > wait {
			wait, why = w, r
		}
	}
	if l.TPD > 0 && s.TokensWithinDay+e.Tokens > l.TPD {
		day = true
		hold(s.DayEndsAt.Sub(now), DayTokens)
	}
	if l.DailyCost > 0 && s.CostWithinDay+e.Cost > l.DailyCost {
		hold(s.DayEndsAt.Sub(now), DayCost)
	}
	if l.TPM > 0 {
		w := bucketWait(s.TokensWithinMin, e.Tokens, l.TPM, slack)
		minute = w > 0
		hold(w, MinuteTokens)
	}
	if l.RPM > 0 {
		hold(bucketWait(s.RequestsWithinMin, 1, l.RPM, slack), MinuteRequests)
	}
	hold(paceWait(s, l, e, now))
	return wait, why, minute, day
}

// Record appends entries to the ledger, changing nothing else (CacheHits).
func (g *Gate) Record(ctx context.Context, now time.Time, entries []LedgerEntry) error {
	if len(entries) == 0 {
		return nil
	}
	return g.update(ctx, now, func(*State, time.Time, Limits, time.Duration, *time.Location) []LedgerEntry {
		return entries
	})
}

// Settlement ends one reservation: an API attempt, or a request not sent.
type Settlement struct {
	Est    Estimate
	Sent   bool  // the request may have reached the API
	Tokens int64 // total tokens the API reported; 0 for a failure
	Cost   Cost  // what the call cost
	Entry  *LedgerEntry
	// DayOnly settles ReserveDay's: nothing goes back to the minute.
	DayOnly bool
	// Day is the day (State.Date) ReserveDay counted the estimate in: it
	// goes back only while the counters are that day's. "" is today's,
	// unless this update starts a new one.
	Day string
}

// Settle moves the day's tokens and cost from estimates to actuals; the
// minute buckets give back an unsent request's charge only, as the API.
func (g *Gate) Settle(ctx context.Context, now time.Time, ss []Settlement) error {
	if len(ss) == 0 {
		return nil
	}
	return g.update(ctx, now, func(s *State, now time.Time, l Limits, _ time.Duration, zone *time.Location) []LedgerEntry {
		sameDay := !advance(s, l, now, zone)
		var entries []LedgerEntry
		for _, st := range ss {
			back := sameDay
			if st.Day != "" {
				back = st.Day == s.Date
			}
			if back {
				s.TokensWithinDay = max(0, s.TokensWithinDay-st.Est.Tokens)
				s.CostWithinDay = max(0, s.CostWithinDay-st.Est.Cost)
			}
			s.TokensWithinDay += st.Tokens
			s.CostWithinDay += st.Cost
			if !st.Sent && !st.DayOnly {
				s.RequestsWithinMin = max(0, s.RequestsWithinMin-1)
				s.TokensWithinMin = max(0, s.TokensWithinMin-float64(st.Est.Tokens))
			}
			if st.Entry != nil {
				entries = append(entries, *st.Entry)
			}
		}
		return entries
	})
}

// Pause makes every process sharing the store wait until at least until.
func (g *Gate) Pause(ctx context.Context, now, until time.Time) error {
	return g.update(ctx, now, func(s *State, at time.Time, l Limits, _ time.Duration, zone *time.Location) []LedgerEntry {
		advance(s, l, at, zone)
		s.PausedUntil = later(shift(until, now, at), s.PausedUntil)
		return nil
	})
}

// ServerUsage is the use x-ratelimit headers state; negative: not stated.
type ServerUsage struct{ Requests, Tokens float64 }
