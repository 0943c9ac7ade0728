package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gptbatch/gptbatch/budget"
)

// run reports spending from the ledger beside the usage file (or the
// stream of the Redis --store names: every host's calls), or with
// --limit stores a daily cost limit. A report needs only the ledger: it
// takes no lock, creates nothing, and goes on without the state when
// usage.md is damaged.
func (u *usageCmd) run(ctx context.Context, r *runCmd, stdout, stderr io.Writer) error {
	if u.Limit != "" {
		c, err := parseDollars("--limit", u.Limit)
		if err != nil {
			return usageError(err)
		}
		if c <= 0 {
			return usageError(errors.New("usage --limit must be more than 0; to remove the stored limit: gptbatch limits clear daily-cost"))
		}
		return storeLimits(ctx, r, stdout, u.JSON, func(st budget.Store) error {
			return budget.SetStoredLimits(ctx, st, budget.Limits{DailyCost: c})
		})
	}
	warn := func(format string, args ...any) {
		if !r.Quiet {
			fmt.Fprintf(stderr, "gptbatch: warning: "+format+"\n", args...)
		}
	}
	now := r.seams.now()
	from, until, err := budget.Period(now, u.Today, u.Month, u.Since)
	if err != nil {
		return usageError(err)
	}
	rd, err := r.openStore(ctx, true, nil)
	if err != nil {
		return usageError(err)
	}
	defer rd.Close()
	var st *budget.State
	if s, err := rd.Load(ctx); err != nil {
		warn("%v; the report below comes from the ledger alone", err)
	} else {
		st = &s
	}
	rep, err := rd.Report(ctx, budget.ReportOptions{Since: from, Until: until, By: u.By}, now.Location())
	if err != nil {
		return usageError(err)
	}
	if rep.Skipped > 0 {
		warn("%d ledger lines are not ledger entries and are left out of the report", rep.Skipped)
	}
	if u.JSON {
		return rep.WriteJSON(stdout, st)
	}
	if err := rep.WriteTable(stdout, st); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "costs from the price table of %s\n", budget.PriceTableDate)
	return err
}
