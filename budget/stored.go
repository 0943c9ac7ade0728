package budget

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Stored limits, set by `gptbatch limits set`, are ceilings for every run
// sharing the budget: a run uses, for each limit, the lower of its own (a
// flag or the default) and the stored one.

// LimitNames are the names of the limits that can be stored, in the order
// they are shown: `gptbatch limits clear` takes these.
var LimitNames = []string{"rpm", "tpm", "tpd", "daily-cost"}

// byName are the limits in LimitNames' order.
func (l *Limits) byName() [4]*int64 {
	return [4]*int64{&l.RPM, &l.TPM, &l.TPD, (*int64)(&l.DailyCost)}
}

// Ceil is l with every limit no higher than c's. A limit that is off (0)
// in either is the other's.
func (l Limits) Ceil(c Limits) Limits {
	for i, p := range l.byName() {
		if b := *c.byName()[i]; *p <= 0 || b > 0 && b < *p {
			*p = b
		}
	}
	return l
}

// SetStoredLimits stores every limit that set gives (> 0) with the shared
// budget, under the store's lock, leaving the others as they are.
func SetStoredLimits(ctx context.Context, st Store, set Limits) error {
	return st.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) {
		for i, p := range s.Stored.byName() {
			if v := *set.byName()[i]; v > 0 {
				*p = v
			}
		}
		return nil, nil
	})
}

// ClearStoredLimits removes the named stored limits (LimitNames), or all of
// them when names is empty.
func ClearStoredLimits(ctx context.Context, st Store, names []string) error {
	if len(names) == 0 {
		names = LimitNames
	}
	for _, n := range names {
		if !slices.Contains(LimitNames, n) {
			return fmt.Errorf("no limit named %q (limits are %s)", n, strings.Join(LimitNames, ", "))
		}
	}
	return st.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) {
		for _, n := range names {
			*s.Stored.byName()[slices.Index(LimitNames, n)] = 0
		}
		return nil, nil
	})
}

// Seen is what the gate last saw of the shared budget: today's use and the
// stored limits, as of its last read of the store.
type Seen struct {
	Date            string // the day TokensWithinDay and CostWithinDay belong to
	TokensWithinDay int64
	CostWithinDay   Cost
	Stored          Limits
	At              time.Time // when it was seen (the time passed to the gate)
}
