package cli

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/gptbatch/gptbatch/budget"
)

// openStore opens the shared budget: the Redis --store names, else the
// usage file (warn, when set, hears of a wait for its lock). Read-only, a
// usage file is read without its lock and nothing is created, so that
// reports work on a read-only or a missing state directory. An error names
// the store, a Redis URL without its password.
func (r *runCmd) openStore(ctx context.Context, readOnly bool, warn func(string)) (budget.Store, error) {
	spec := r.Store
	if spec == "" {
		path, err := r.usagePath()
		if err != nil {
			return nil, err
		}
		spec = path
	}
	return budget.Open(ctx, spec, budget.Options{Name: r.StoreName, ReadOnly: readOnly, OnLockWait: warn})
}

// budgetName is the budget's name in a Redis --store, "" for a usage file,
// which holds one budget.
func (r *runCmd) budgetName() string {
	if !strings.Contains(r.Store, "://") {
		return ""
	}
	return cmp.Or(r.StoreName, "default")
}

// storeWhere names the store for messages: a Redis URL (without its
// password) with the budget's name, or the usage file.
func (r *runCmd) storeWhere(st budget.Store) string {
	if name := r.budgetName(); name != "" {
		return fmt.Sprintf("%s (budget %q)", st, name)
	}
	return st.String()
}
