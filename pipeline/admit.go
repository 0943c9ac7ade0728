package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// admitter is the admit stage. It runs on the goroutine of the stage that
// sends, which pulls from it only as workers come free, so that a line's
// reservation and its arrival at the server stay close.
type admitter struct {
	r       *runner
	in      <-chan *item
	pending []*item // taken from in, not yet handed on
}

// admitter is the admission of the lines from in, for the sending stage to
// pull from.
func (r *runner) admitter(in <-chan *item) source[*item] {
	a := &admitter{r: r, in: in}
	return a.next
}

// next hands on up to n lines in input order, at least one: lines that
// will not be sent with their result, or lines whose estimates it has
// reserved through the gate, batching the lines that are ready into one
// reservation. It waits while a limit holds the first line back.
func (a *admitter) next(ctx context.Context, n int) ([]*item, error) {
	if len(a.pending) == 0 {
		select {
		case it, ok := <-a.in:
			if !ok {
				return nil, nil
			}
			a.pending = append(a.pending[:0], it)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if len(a.pending) < n {
		a.pending = drainReady(a.in, a.pending, n)
	}
	for {
		batch := a.pending[:min(n, len(a.pending))]
		// Lines that will not be sent go on at once, with their result.
		done := 0
		for done < len(batch) && a.r.preflight(batch[done]) {
			done++
		}
		if done > 0 {
			return a.hand(done), nil
		}
		// Reserve the run of lines that will be sent.
		ests := make([]budget.Estimate, 0, len(batch))
		for _, it := range batch {
			if len(ests) > 0 && a.r.preflight(it) {
				break
			}
			ests = append(ests, it.est)
		}
		k, err := a.r.reserve(ctx, ests)
		if errors.Is(err, errStopped) {
			continue // preflight now gives the lines their result
		}
		if err != nil {
			return nil, err
		}
		return a.hand(k), nil
	}
}

// hand takes the first k pending lines.
func (a *admitter) hand(k int) []*item {
	out := make([]*item, k)
	copy(out, a.pending)
	a.pending = a.pending[k:]
	return out
}

// preflight gives a line that will not be sent its result, and reports
// whether it has one.
func (r *runner) preflight(it *item) bool {
	if it.result != nil {
		return true
	}
	if why := r.stop.stopped(); why != nil {
		it.result = why.result(it.req)
		return true
	}
	if err := r.cfg.Gate.Check(it.est); err != nil {
		if !it.exact {
			// The byte bound may be what is too large: count exactly.
			*it = *prepare(it.req, &r.cfg, true)
			return r.preflight(it)
		}
		it.result = errorResult(it.req, jsonl.ErrBudget, fmt.Sprintf("line %d: not sent: %v", it.req.Line, err), 0)
		return true
	}
	return false
}

// longWait is a wait worth a warning.
const longWait = 30 * time.Second

// recheck is how often a wait for a limit looks again: other processes
// settle, and a refill may come sooner than the gate said.
const recheck = time.Second

// errStopped says the run stopped sending: see stopState.
var errStopped = errors.New("stopped")

// reserve reserves room for the requests of ests, in order, waiting while
// a limit holds the first back. It returns how many it reserved (at least
// one), or errStopped when the run stopped sending meanwhile.
func (r *runner) reserve(ctx context.Context, ests []budget.Estimate) (int, error) {
	r.reserveMu.Lock()
	defer r.reserveMu.Unlock()
	defer r.stats.waiting.Store(nil)
	for {
		if r.stop.stopped() != nil {
			return 0, errStopped
		}
		now := r.cfg.Clock.Now()
		n, wait, why, err := r.cfg.Gate.Reserve(ctx, now, ests)
		var tooLarge *budget.TooLargeError
		switch {
		case err == nil:
		case ctx.Err() != nil || errors.As(err, &tooLarge):
			return 0, &Error{Code: ExitConfig, Err: err}
		default:
			r.storeLost(err)
			return 0, errStopped
		}
		if n > 0 {
			return n, nil
		}
		if r.cfg.OnLimit == Fail {
			msg := fmt.Sprintf("stopped by the %s (--on-limit fail)", why)
			r.stop.halt(&stopped{typ: jsonl.ErrBudget, msg: "not sent: " + msg, err: &Error{Code: ExitLimit, Err: errors.New(msg)}})
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
		select {
		case <-r.cfg.Clock.After(min(wait, recheck)):
		case <-r.stop.signal.Done():
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
