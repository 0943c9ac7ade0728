package budget

import (
	"context"
	"time"
)

// Pacing per second: OpenAI may enforce a per-minute limit in shorter
// slices. After such a refusal (Refused), the gate spaces that limit's
// requests at limit/60 a second (a GCRA with no burst) until PaceLapse
// passes without another, so that true minute buckets get their burst back.

// The reasons a paced limit holds a request back.
const (
	PacedRequests Reason = "request limit, paced per second"
	PacedTokens   Reason = "token limit, paced per second"
)

// PaceLapse is how long pacing stays on after the refusal that called for it.
const PaceLapse = time.Minute

// PaceShare is the share of limit/60 a second that pacing admits: the rest
// absorbs requests that arrive closer together than they left.
const PaceShare = 0.98

// paceInterval is the spacing of units of a per-minute limit when paced.
func paceInterval(units, limit int64) time.Duration {
	return time.Duration(float64(units) * float64(time.Minute) / (float64(limit) * PaceShare))
}

// paced reports whether pacing until until is on at now.
func paced(until, now time.Time) bool { return !until.IsZero() && now.Before(until) }

// paceWait is how long e must wait for the paced limits, and why.
func paceWait(s *State, l Limits, e Estimate, now time.Time) (wait time.Duration, why Reason) {
	if l.RPM > 0 && paced(s.RequestsPacedUntil, now) && s.RequestsNextAt.After(now) {
		wait, why = s.RequestsNextAt.Sub(now), PacedRequests
	}
	if l.TPM > 0 && paced(s.TokensPacedUntil, now) && s.TokensNextAt.After(now) {
		if w := s.TokensNextAt.Sub(now); w > wait {
			wait, why = w, PacedTokens
		}
	}
	return wait, why
}

// chargePace moves the paced limits' next slots on by e.
func chargePace(s *State, l Limits, e Estimate, now time.Time) {
	if l.RPM > 0 && paced(s.RequestsPacedUntil, now) {
		s.RequestsNextAt = later(s.RequestsNextAt, now).Add(paceInterval(1, l.RPM))
	}
	if l.TPM > 0 && paced(s.TokensPacedUntil, now) {
		s.TokensNextAt = later(s.TokensNextAt, now).Add(paceInterval(e.Tokens, l.TPM))
	}
}

// lapsePace clears pacing that has lapsed at now.
func lapsePace(s *State, now time.Time) {
	if !s.RequestsPacedUntil.IsZero() && !now.Before(s.RequestsPacedUntil) {
		s.RequestsPacedUntil, s.RequestsNextAt = time.Time{}, time.Time{}
	}
	if !s.TokensPacedUntil.IsZero() && !now.Before(s.TokensPacedUntil) {
		s.TokensPacedUntil, s.TokensNextAt = time.Time{}, time.Time{}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Refusal is a 429 from the server.
type Refusal struct {
	Limit Reason      // MinuteRequests or MinuteTokens; "" when the server did not say
	Used  ServerUsage // from the x-ratelimit headers
	Until time.Time   // the back-off every process keeps
}

// Refused records a 429 at now: every process waits until r.Until, the
// minute buckets hold at least r.Used, and a limit refused with a second's
// room in its bucket is paced, from the back-off's end so that the retries
// go out spaced. newly is the limit newly paced, for the caller to say.
func (g *Gate) Refused(ctx context.Context, now time.Time, r Refusal) (newly Reason, err error) {
	host := now
	err = g.update(ctx, now, func(s *State, now time.Time, l Limits, _ time.Duration, zone *time.Location) []LedgerEntry {
		newly = ""
		until := shift(r.Until, host, now)
		advance(s, l, now, zone)
		roomy := func(level float64, limit int64) bool {
			return limit > 0 && level <= float64(limit)-max(1, float64(limit)/60)
		}
		switch {
		case r.Limit == MinuteRequests && roomy(s.RequestsWithinMin, l.RPM):
			if !paced(s.RequestsPacedUntil, now) {
				newly = PacedRequests
			}
			s.RequestsPacedUntil = now.Add(PaceLapse)
		case r.Limit == MinuteTokens && roomy(s.TokensWithinMin, l.TPM):
			if !paced(s.TokensPacedUntil, now) {
				newly = PacedTokens
			}
			s.TokensPacedUntil = now.Add(PaceLapse)
		}
		if paced(s.RequestsPacedUntil, now) {
			s.RequestsNextAt = later(s.RequestsNextAt, until)
		}
		if paced(s.TokensPacedUntil, now) {
			s.TokensNextAt = later(s.TokensNextAt, until)
		}
		// Sending resumes at the server's pace, not in a burst it refuses.
		s.PausedUntil = later(until, s.PausedUntil)
		if r.Used.Requests > s.RequestsWithinMin {
			s.RequestsWithinMin = r.Used.Requests
		}
		if r.Used.Tokens > s.TokensWithinMin {
			s.TokensWithinMin = r.Used.Tokens
		}
		return nil
	})
	return newly, err
}

// PaceRate is how many units a second a paced per-minute limit admits.
func PaceRate(limit int64) float64 { return float64(limit) / 60 * PaceShare }
