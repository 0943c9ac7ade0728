package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// holds reports whether run starts hold: to count a dry run's estimates,
// or to hold the batch back for --batch-tokens, --max-cost or Confirm.
// Otherwise the lines go straight on to be sent.
func (r *runner) holds() bool {
	return r.cfg.DryRun || r.cfg.BatchTokens > 0 || r.cfg.MaxCost > 0 || r.cfg.Confirm != nil
}

// hold keeps the batch back until its size is known to be within
// --batch-tokens and --max-cost: until the end of input, or until a limit is
// crossed, which refuses the whole batch before anything is sent. With
// Confirm set it holds the whole batch and asks before sending any of it.
// In a dry run, and once the run has stopped sending, it streams. It
// counts the estimates (Stats.Estimated and the rest) that the limits, the
// question and a dry run's summary are made of. Memory is bounded by the
// limits themselves. Lines the cache answers count against neither limit;
// those read before the first line to be sent go on at once.
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
		k, at, err := a.r.reserve(ctx, ests)
		if errors.Is(err, errStopped) {
			continue // preflight now gives the lines their result
		}
		if err != nil {
			return nil, err
		}
		for _, it := range a.pending[:k] {
			it.reserved = at
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
	if it.result != nil || it.cached != nil {
		// Done, or answered by the cache: nothing to reserve.
		return true
	}
	if why := r.stop.stopped(); why != nil {
		it.result = why.result(it.req)
		return true
	}
	if err := r.check(it.est); err != nil {
		if !it.exact {
			// The byte bound may be what is too large: count exactly.
			r.recount(it)
			return r.preflight(it)
		}
		it.result = errorResult(it.req, jsonl.ErrBudget, refusal(it, "not sent", err), 0)
		return true
	}
	return false
}

// refusal says that a line is what (not sent, would not be sent) and
// why, naming its model when the refusal is for the model's unknown price.
func refusal(it *item, what string, err error) string {
	if it.est.CostUnknown {
		return fmt.Sprintf("line %d: %s: model %q: %v", it.req.Line, what, it.model, err)
	}
	return fmt.Sprintf("line %d: %s: %v", it.req.Line, what, err)
}

// check says whether e can ever be sent: the gate's Check, and, with
// --max-cost, a known price (a line of unknown cost cannot be counted
// against it and must not count as free).
func (r *runner) check(e budget.Estimate) error {
	if r.cfg.MaxCost > 0 && e.CostUnknown {
		return &budget.TooLargeError{Msg: "the model has no known price, so its cost cannot be counted against --max-cost"}
	}
	return r.cfg.Gate.Check(e)
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
// one) and when the reservation was done, or errStopped when the run
// stopped sending meanwhile. A signal also ends a wait for the usage
// file's lock. A shared state that cannot be read or written stops the
// run (storeFailed): errStopped.
func (r *runner) reserve(ctx context.Context, ests []budget.Estimate) (int, time.Time, error) {
	r.reserveMu.Lock()
	defer r.reserveMu.Unlock()
	defer r.stats.waiting.Store(nil)
	for {
		if r.stop.stopped() != nil {
			return 0, time.Time{}, errStopped
		}
		now := r.cfg.Clock.Now()
		// A signal also ends Gate.Reserve's wait for the usage file's lock.
		rctx, cancel := context.WithCancel(ctx)
		unwatch := context.AfterFunc(r.stop.signal, cancel)
		n, wait, why, err := r.cfg.Gate.Reserve(rctx, now, ests)
		unwatch()
		cancel()
		if err != nil && r.stop.signal.Err() != nil {
			err = errStopped
		}
		var tooLarge *budget.TooLargeError
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return 0, time.Time{}, ctx.Err()
			case errors.As(err, &tooLarge):
				return 0, time.Time{}, &Error{Code: ExitConfig, Err: err}
			case r.stop.stopped() == nil:
				r.storeFailed(err)
			}
			return 0, time.Time{}, errStopped
		}
		if n > 0 {
			r.unsettled.Add(int64(n))
			return n, r.cfg.Clock.Now(), nil
		}
		var settled <-chan struct{}
		if why == budget.DayTokens || why == budget.DayCost {
			// Taken before looking, so that no settlement falls between.
			settled = r.settled.wait()
			if r.unsettled.Load() == 0 {
				settled = nil
			}
		}
		switch {
		case settled != nil:
			// This run's own reservations fill the day: their calls will
			// settle to what they used, mostly far less than the caps
			// reserved. Neither fail nor announce a wait of hours for
			// a limit that will have room in a moment.
			r.cfg.Log.Debug("waiting for this run's calls to settle", "for", string(why))
		case r.cfg.OnLimit == Fail:
			msg := fmt.Sprintf("stopped by the %s (--on-limit fail)", why)
			r.stop.halt(&stopped{typ: jsonl.ErrBudget, msg: "not sent: " + msg, err: &Error{Code: ExitLimit, Err: errors.New(msg)}})
			return 0, time.Time{}, errStopped
		default:
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
		}
		var after <-chan time.Time
		if settled == nil {
			after = r.cfg.Clock.After(min(wait, recheck))
		}
		select {
		case <-after:
		case <-settled:
		case <-r.stop.signal.Done():
		case <-ctx.Done():
			return 0, time.Time{}, ctx.Err()
		}
	}
}
