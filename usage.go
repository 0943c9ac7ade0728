package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gptbatch/gptbatch/budget"
)

// run reports spending from the ledger beside the usage file.
func (u *usageCmd) run(ctx context.Context, r *runCmd, stdout io.Writer) error {
	now := time.Now()
	from, until, err := budget.Period(now, u.Today, u.Month, u.Since)
	if err != nil {
		return usageError(err)
	}
	store, err := r.openStore()
	if err != nil {
		return usageError(err)
	}
	st, err := store.Load(ctx)
	if err != nil {
		return usageError(err)
	}
	var ledger io.Reader = strings.NewReader("")
	if f, err := os.Open(store.LedgerPath()); err == nil {
		defer f.Close()
		ledger = f
	} else if !errors.Is(err, os.ErrNotExist) {
		return usageError(err)
	}
	rep, err := budget.BuildReport(ledger, budget.ReportOptions{Since: from, Until: until, By: u.By}, now.Location())
	if err != nil {
		return usageError(fmt.Errorf("ledger %s: %w", store.LedgerPath(), err))
	}
	if u.JSON {
		return rep.WriteJSON(stdout, &st)
	}
	return rep.WriteTable(stdout, &st)
}
