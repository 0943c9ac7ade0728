package cli

import (
	"context"

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
