package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// longWait is a wait worth a warning.
const longWait = 30 * time.Second

// gate admits lines through the budget in input order, batching the lines
// that are ready into one reservation, and hands them to the workers. Lines
// that need no call get their result here.
func (r *runner) gate(ctx, stop context.Context, in <-chan *item, jobs chan<- job, newSink func() (func(*jsonl.Result) error, error)) error {
	batch := make([]*item, 0, r.cfg.Parallel)
	ests := make([]budget.Estimate, 0, r.cfg.Parallel)
	for {
		var it *item
		var ok bool
		select {
		case it, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			return nil
		}
		// Take what else is ready, up to a worker's worth each.
		batch = append(batch[:0], it)
	more:
		for len(batch) < cap(batch) {
			select {
			case it, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, it)
			default:
				break more
			}
		}
		for i := 0; i < len(batch); {
			if res := r.preflight(batch[i], stop); res != nil {
				deliver, err := newSink()
				if err != nil {
					return nil
				}
				if err := deliver(res); err != nil {
					return nil
				}
				i++
				continue
			}
			ests = ests[:0]
			for j := i; j < len(batch) && (j == i || r.preflight(batch[j], stop) == nil); j++ {
				ests = append(ests, batch[j].est)
			}
			n, err := r.admit(ctx, stop, ests)
			if errors.Is(err, errStopped) {
				continue // preflight now gives the line its result
			}
			if err != nil {
				return err
			}
			for _, it := range batch[i : i+n] {
				deliver, err := newSink()
				if err != nil {
					return nil
				}
				if err := send(ctx, jobs, job{it: it, deliver: deliver}); err != nil {
					return nil
				}
			}
			i += n
		}
	}
}

// preflight gives the result of a line that will not be sent, or nil.
func (r *runner) preflight(it *item, stop context.Context) *jsonl.Result {
	switch {
	case it.done != nil:
		return it.done
	case stop.Err() != nil:
		return errorResult(it.req, jsonl.ErrInterrupted, "not sent: interrupted", 0)
	case r.stats.limitStop.Load() != nil:
		return errorResult(it.req, jsonl.ErrBudget, "not sent: "+r.stats.limitMsg(), 0)
	}
	if h := r.halted.Load(); h != nil {
		return errorResult(it.req, h.typ, "not sent: an earlier request was refused: "+h.msg, h.status)
	}
	if err := r.cfg.Gate.Check(it.est); err != nil {
		if !it.exact {
			// The byte bound may be what is too large: count exactly.
			*it = *prepare(it.req, &r.cfg, true)
			return r.preflight(it, stop)
		}
		return errorResult(it.req, jsonl.ErrBudget, fmt.Sprintf("line %d: not sent: %v", it.req.Line, err), 0)
	}
	return nil
}

// admit reserves room for the requests of ests, in order, waiting while a
// limit holds the first back. It returns how many it admitted (at least
// one), or errStopped when the run stopped sending meanwhile.
func (r *runner) admit(ctx, stop context.Context, ests []budget.Estimate) (int, error) {
	r.admitMu.Lock()
	defer r.admitMu.Unlock()
	defer r.stats.waiting.Store(nil)
	for {
		if stop.Err() != nil || r.stats.limitStop.Load() != nil || r.halted.Load() != nil {
			return 0, errStopped
		}
		now := r.cfg.Now()
		n, wait, why, err := r.cfg.Gate.Reserve(ctx, now, ests)
		if err != nil {
			return 0, &ExitError{Code: ExitConfig, Err: err}
		}
		if n > 0 {
			return n, nil
		}
		if r.cfg.OnLimit == Fail {
			msg := fmt.Sprintf("stopped by the %s (--on-limit fail)", why)
			r.stats.limitStop.CompareAndSwap(nil, &msg)
			return 0, errStopped
		}
		w := &Waiting{Reason: why, Until: now.Add(wait)}
		if prev := r.stats.waiting.Swap(w); prev == nil || prev.Reason != why {
			if wait >= longWait {
				// Said even without --verbose: a cron job's log should
				// show why a batch sat still for hours.
				r.cfg.Log.Warn(fmt.Sprintf("waiting %s for the %s (--on-limit wait)", wait.Round(time.Second), why))
			} else {
				r.cfg.Log.Debug("waiting", "for", string(why), "wait", wait.Round(time.Millisecond))
			}
		}
		// Look again at least every second: other processes settle and
		// the user may interrupt.
		t := time.NewTimer(min(wait, time.Second))
		select {
		case <-t.C:
		case <-stop.Done():
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
	}
}
