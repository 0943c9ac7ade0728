package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/gptbatch/gptbatch/jsonl"
)

// emitOrdered writes results in input order: it waits for each line's slot
// in turn. Output is flushed whenever the next result is not ready, so a
// reader downstream sees results as soon as they are final.
func (r *runner) emitOrdered(ctx context.Context, order <-chan chan *jsonl.Result, out io.Writer) error {
	w := jsonl.NewWriter(out)
	for slot := range order {
		var res *jsonl.Result
		select {
		case res = <-slot:
		default:
			if err := w.Flush(); err != nil {
				return writeErr(err)
			}
			select {
			case res = <-slot:
			case <-ctx.Done():
				return nil
			}
		}
		if err := w.Write(res); err != nil {
			return writeErr(err)
		}
		r.stats.result(res)
	}
	return writeErr(w.Flush())
}

// emitUnordered writes results as they finish.
func (r *runner) emitUnordered(ctx context.Context, results <-chan *jsonl.Result, out io.Writer) error {
	w := jsonl.NewWriter(out)
	for {
		var res *jsonl.Result
		var ok bool
		select {
		case res, ok = <-results:
		default:
			if err := w.Flush(); err != nil {
				return writeErr(err)
			}
			select {
			case res, ok = <-results:
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
		case it.done != nil:
			e.Error = it.done.Error
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
		r.stats.Done.Add(1)
		if len(in) == 0 {
			if err := w.Flush(); err != nil {
				return writeErr(err)
			}
		}
	}
	return writeErr(w.Flush())
}

func writeErr(err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: ExitFailed, Err: fmt.Errorf("write results: %w", err)}
}
