package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/gptbatch/gptbatch/jsonl"
)

// emit is the only writer of results: it writes them as they come from
// in, already in order unless --unordered; a receive is the results of one
// item (a line, or a pack's lines). Output is flushed whenever no
// result is ready, so a reader downstream sees results as soon as they
// are final, also while the run waits for a limit. When out cannot be
// written (a closed pipe), the run stops sending (outputFailed) and emit
// takes the remaining results without writing them, so that what is in
// flight still finishes and is settled.
func (r *runner) emit(ctx context.Context, in <-chan []*jsonl.Result, out io.Writer) error {
	w := jsonl.NewWriter(out)
	failed := false
	fail := func(err error) {
		if err != nil && !failed {
			failed = true
			r.outputFailed(err)
		}
	}
	for {
		var rs []*jsonl.Result
		var ok bool
		select {
		case rs, ok = <-in:
		default:
			if !failed {
				fail(w.Flush())
			}
			select {
			case rs, ok = <-in:
			case <-ctx.Done():
				return nil
			}
		}
		if !ok {
			if !failed {
				fail(w.Flush())
			}
			return nil
		}
		for _, res := range rs {
			if r.cache != nil {
				r.cache.wrote(res)
			}
			if failed {
				continue
			}
			fail(w.Write(res))
			if !failed {
				r.stats.result(res)
			}
		}
	}
}

// emitEstimates writes a dry run's estimate for each line.
func (r *runner) emitEstimates(ctx context.Context, in <-chan *item, out io.Writer) error {
	w := jsonl.NewWriter(out)
	for it := range in {
		e := jsonl.Estimate{ID: it.req.ID, Line: it.req.Line}
		switch {
		case it.result != nil:
			e.Error = it.result.Error
		case it.cached != nil:
			// The cache holds its answer: the real run sends nothing.
			e.PromptTokens, e.MaxOutputTokens = it.prompt, it.maxOut
			e.EstCostUSD, e.Cached = []byte("0"), true
			r.stats.CacheHits.Add(1)
			r.stats.CacheSaved.Add(max(it.cached.entry.Cost, 0))
		default:
			e.PromptTokens, e.MaxOutputTokens, e.SchemaTokens = it.prompt, it.maxOut, it.schemaTokens
			e.EstCostUSD = []byte("null")
			if it.priced {
				e.EstCostUSD = it.est.Cost.AppendJSON(nil)
			}
			if err := r.check(it.est); err != nil {
				e.Error = &jsonl.Error{Type: jsonl.ErrBudget, Message: refusal(it, "would not be sent", err)}
			}
		}
		if err := w.Write(e); err != nil {
			return writeErr(err)
		}
		r.stats.wrote(e.Error != nil)
		if len(in) == 0 {
			if err := w.Flush(); err != nil {
				return writeErr(err)
			}
		}
	}
	return writeErr(w.Flush())
}

// writeErr is a failure to write the results, which ends the run.
func writeErr(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: ExitFailed, Err: fmt.Errorf("write results: %w", err)}
}
