package main

import (
	"context"
	"io"
	"time"

	"github.com/gptbatch/gptbatch/budget"
)

// run reports spending from the ledger beside the usage file, or from
// the stream of the Redis --store names: every host's calls.
func (u *usageCmd) run(ctx context.Context, r *runCmd, stdout io.Writer) error {
	now := time.Now()
	from, until, err := budget.Period(now, u.Today, u.Month, u.Since)
	if err != nil {
		return usageError(err)
	}
	store, closeStore, err := r.openShared(ctx)
	if err != nil {
		return usageError(err)
	}
	defer closeStore()
	st, err := store.Load(ctx)
	if err != nil {
		return usageError(err)
	}
	rep, err := store.Report(ctx, budget.ReportOptions{Since: from, Until: until, By: u.By}, now.Location())
	if err != nil {
		return usageError(err)
	}
	if u.JSON {
		return rep.WriteJSON(stdout, &st)
	}
	return rep.WriteTable(stdout, &st)
}
