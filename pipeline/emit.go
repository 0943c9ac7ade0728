package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/gptbatch/gptbatch/jsonl"
)

// emit is the only writer of results: it writes them as they come from
// in, already in order unless --unordered. Output is flushed whenever no
// result is ready, so a reader downstream sees results as soon as they
// are final.
func (r *runner) emit(ctx context.Context, in <-chan *jsonl.Result, out io.Writer) error {
	w := jsonl.NewWriter(out)
	for {
		var res *jsonl.Result
		var ok bool
		select {
		case res, ok = <-in:
		default:
			if err := w.Flush(); err != nil {
				return writeErr(err)
			}
			select {
			case res, ok = <-in:
			case <-ctx.Done():
				return nil
			}
		}
		if !ok {
			return writeErr(w.Flush())
		}
		if err := w.Write(res); err != nil {
			return writeErr(err)
		}
		r.stats.result(res)
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
		default:
			e.PromptTokens, e.MaxOutputTokens = it.prompt, it.maxOut
			e.EstCostUSD = []byte("null")
			if it.priced {
				e.EstCostUSD = mustJSON(it.est.Cost)
			}
			if err := r.cfg.Gate.Check(it.est); err != nil {
				e.Error = &jsonl.Error{Type: jsonl.ErrBudget, Message: fmt.Sprintf("line %d: would not be sent: %v", it.req.Line, err)}
			}
		}
		if err := w.Write(e); err != nil {
			return writeErr(err)
		}
		if e.Error != nil {
			r.stats.Failed.Add(1)
		} else {
			r.stats.Succeeded.Add(1)
		}
		r.stats.Written.Add(1)
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
