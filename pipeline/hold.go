package pipeline

import (
	"context"
	"fmt"

	"github.com/gptbatch/gptbatch/budget"
)

// hold keeps the batch back until its size is known to be within
// --batch-tokens and --max-cost: until the end of input, or until a limit is
// crossed, which refuses the whole batch before anything is sent. With
// Confirm set it holds the whole batch and asks before sending any of it.
// With both limits off and no question to ask, in a dry run, and once the
// run has stopped sending, it streams. Memory is bounded by the limits
// themselves. Lines the cache answers count against neither limit; those
// read before the first line to be sent go on at once.
func (r *runner) hold(ctx context.Context, in <-chan *item, out chan<- *item) error {
	defer close(out)
	ask := r.cfg.Confirm != nil && !r.cfg.DryRun
	stream := r.cfg.DryRun || (r.cfg.BatchTokens == 0 && r.cfg.MaxCost == 0 && !ask)
	var held []*item
	passed := 0 // lines the cache answers, gone on before anything was held
	for it := range in {
		switch {
		case it.cached != nil:
			// Answered without a call: it costs nothing and counts
			// against no batch limit.
			r.stats.CacheFound.Add(1)
		case it.result == nil:
			r.stats.estimate(it)
		}
		if msg := r.overBatch(); msg != "" && !r.cfg.DryRun {
			return &Error{Code: ExitLimit, Err: fmt.Errorf("%s; nothing sent", msg)}
		}
		if !stream && !r.cfg.DryRun && r.stop.stopped() != nil {
			// Nothing more will be sent: there is no batch to hold back,
			// and the lines read on to the end must not pile up here.
			stream = true
			for _, h := range held {
				if err := send(ctx, out, h); err != nil {
					return err
				}
			}
			held = nil
		}
		if !stream && !(it.cached != nil && len(held) == 0 && !ask) {
			held = append(held, it)
			continue
		}
		if !stream {
			// Nothing is held before it, and it is not sent: it need not
			// wait, nor take memory while the rest is counted.
			passed++
		}
		if err := send(ctx, out, it); err != nil {
			return err
		}
	}
	if !stream {
		r.stats.Total.Store(int64(passed + len(held)))
	}
	if ask {
		if err := r.cfg.Confirm(); err != nil {
			return err
		}
	}
	for _, it := range held {
		if err := send(ctx, out, it); err != nil {
			return err
		}
	}
	return nil
}

// overBatch says which batch limit the lines counted so far exceed, or "".
func (r *runner) overBatch() string {
	tokens, cost := r.stats.EstPromptTokens.Load(), budget.Cost(r.stats.EstCostMax.Load())
	lines := r.stats.Estimated.Load()
	switch {
	case r.cfg.BatchTokens > 0 && tokens > r.cfg.BatchTokens:
		return fmt.Sprintf("batch exceeds --batch-tokens %d: %d input tokens in its first %s", r.cfg.BatchTokens, tokens, Count(lines, "line", "lines"))
	case r.cfg.MaxCost > 0 && cost > r.cfg.MaxCost:
		return fmt.Sprintf("batch exceeds --max-cost %s: up to $%s in its first %s", r.cfg.MaxCost, cost, Count(lines, "line", "lines"))
	}
	return ""
}
