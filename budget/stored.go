package budget

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Stored limits (`gptbatch limits set`) are ceilings for every run sharing
// the budget: a flag can lower one for a run, never raise it.

// LimitNames are the names of the limits that can be stored, as shown.
var LimitNames = []string{"rpm", "tpm", "tpd", "daily-cost"}

// byName are the limits in LimitNames' order.
func (l *Limits) byName() [4]*int64 {
	return [4]*int64{&l.RPM, &l.TPM, &l.TPD, (*int64)(&l.DailyCost)}
}

// Ceil is l with every limit no higher than c's; off (0) in one is the
// other's.
func (l Limits) Ceil(c Limits) Limits {
	for i, p := range l.byName() {
		if b := *c.byName()[i]; *p <= 0 || b > 0 && b < *p {
			*p = b
		}
	}
	return l
}

// SetStoredLimits stores every limit set gives (> 0), leaving the others.
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

// ClearStoredLimits removes the named stored limits, or all for none.
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

// Seen is the shared state as the gate last saw it, at At (its time then).
type Seen struct {
	State
	At time.Time
}
