package budget

import (
	"context"
	"time"
)

// ReserveDay admits the longest prefix of ests against the day limits
// only (tokens a day, dollars a day) and charges them there: the Batch
// API's lines count against the day's budget but not against the
// per-minute limits, which the Batch API keeps in a pool of its own. Its
// results are as Reserve's, and day is the day (State.Date) the
// reservations were counted in; settle them with Settlement.DayOnly and
// that Day.
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
