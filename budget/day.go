package budget

import (
	"context"
	"time"
)

// ReserveDay is Reserve against the day limits only, for the Batch API's
// lines (its own pool keeps them from the per-minute limits). Settle them
// with Settlement.DayOnly and Day: the day (State.Date) they counted in.
func (g *Gate) ReserveDay(ctx context.Context, now time.Time, ests []Estimate) (n int, day string, wait time.Duration, why Reason, err error) {
	if len(ests) == 0 {
		return 0, "", 0, "", nil
	}
	err = g.update(ctx, now, func(s *State, now time.Time, l Limits, _ time.Duration, zone *time.Location) []LedgerEntry {
		n, wait, why = 0, 0, ""
		advance(s, l, now, zone)
		day = s.Date
		for _, e := range ests {
			dayOnly := Limits{TPD: l.TPD, DailyCost: l.DailyCost}
			if wait, why, _, _ = room(s, dayOnly, 0, e, now); wait > 0 {
				break
			}
			s.TokensWithinDay += e.Tokens
			s.CostWithinDay += e.Cost
			n++
		}
		return nil
	})
	if err != nil {
		return 0, "", 0, "", err
	}
	return n, day, wait, why, nil
}
