package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// job is an admitted line and where its result goes.
type job struct {
	it      *item
	deliver func(*jsonl.Result) error
}

// startFetch starts the gate, the workers, the settler and the writer in g.
// They stop on ctx; stop only ends the sending of new requests.
func (r *runner) startFetch(g *errgroup.Group, ctx, stop context.Context, in <-chan *item, out io.Writer) {
	p := r.cfg.Parallel
	// One job queued per worker, so the gate admits requests just ahead of
	// the workers that send them.
	jobs := make(chan job, p)
	// Settlements queue while the settler writes the last batch of them;
	// sized so that workers rarely wait for the file.
	settle := make(chan budget.Settlement, 4*p)
	// The window: results finished ahead of the writer. A slow line at the
	// head holds back at most this many.
	window := 4*p + 64

	var newSink func() (func(*jsonl.Result) error, error)
	var closeSink func()
	if r.cfg.Unordered {
		results := make(chan *jsonl.Result, window)
		newSink = func() (func(*jsonl.Result) error, error) {
			return func(res *jsonl.Result) error { return send(ctx, results, res) }, nil
		}
		closeSink = func() { close(results) }
		g.Go(func() error { return r.emitUnordered(ctx, results, out) })
	} else {
		order := make(chan chan *jsonl.Result, window)
		newSink = func() (func(*jsonl.Result) error, error) {
			slot := make(chan *jsonl.Result, 1) // filled once, never blocks the worker
			if err := send(ctx, order, slot); err != nil {
				return nil, err
			}
			return func(res *jsonl.Result) error { slot <- res; return nil }, nil
		}
		closeSink = func() { close(order) }
		g.Go(func() error { return r.emitOrdered(ctx, order, out) })
	}

	// The gate and the workers all deliver results; the last of them to
	// finish closes the sink and the settlements.
	var running atomic.Int32
	running.Store(int32(p) + 1)
	finish := func() {
		if running.Add(-1) == 0 {
			closeSink()
			close(settle)
		}
	}
	g.Go(func() error {
		defer finish()
		defer close(jobs)
		return r.gate(ctx, stop, in, jobs, newSink)
	})
	for range p {
		g.Go(func() error {
			defer finish()
			for j := range jobs {
				if err := j.deliver(r.fetch(ctx, stop, j.it, settle)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error { return r.settler(ctx, settle) })
}

// longWait is a wait worth a warning.
const longWait = 30 * time.Second

// errStopped says the run stopped sending: a signal, --on-limit fail or a
// refused key. The lines not yet sent get their result from preflight.
var errStopped = errors.New("stopped")

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

// fetch sends one admitted line, retrying what is worth retrying, and
// returns its result. Every call is settled through settle.
func (r *runner) fetch(ctx, stop context.Context, it *item, settle chan<- budget.Settlement) *jsonl.Result {
	var last failure
	for n := 1; ; n++ {
		if n > 1 {
			if _, err := r.admit(ctx, stop, []budget.Estimate{it.est}); err != nil {
				return r.failed(it, last)
			}
		} else if stop.Err() != nil || r.halted.Load() != nil {
			r.unsent(ctx, it, settle)
			if res := r.preflight(it, stop); res != nil {
				return res
			}
		}
		it.attempts = n
		a := call(ctx, r.client, it, r.cfg.Timeout)
		r.stats.Requests.Add(1)
		r.observe(ctx, a.reply.header)
		var f failure
		if a.err != nil {
			f = classify(a, r.cfg.Key)
		}
		r.record(ctx, it, a, f, settle)
		if a.err == nil {
			return r.succeeded(it, a)
		}
		last = f
		if f.status == 429 {
			r.stats.RateLimited.Add(1)
		}
		if f.verdict == halt {
			r.halted.CompareAndSwap(nil, &f)
		}
		if f.verdict != retry || n > r.cfg.Retries || stop.Err() != nil {
			return r.failed(it, f)
		}
		wait := backoff(n, f.after)
		if f.status == 429 {
			// Every worker, in every process sharing the budget, waits.
			if err := r.cfg.Gate.Sync(ctx, r.cfg.Now(), r.cfg.Now().Add(wait), serverUsage(a.reply.header)); err != nil {
				return r.failed(it, f)
			}
		}
		r.stats.Retries.Add(1)
		r.cfg.Log.Debug("retry", "line", it.req.Line, "id", it.req.ID, "attempt", n, "error", f.typ, "status", f.status, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-stop.Done():
			t.Stop()
			return r.failed(it, f)
		case <-ctx.Done():
			t.Stop()
			return r.failed(it, f)
		}
	}
}

func (r *runner) succeeded(it *item, a attempt) *jsonl.Result {
	res := successResult(it, a)
	u := res.Usage
	r.stats.PromptTokens.Add(u.PromptTokens)
	r.stats.CompletionTokens.Add(u.CompletionTokens)
	r.stats.CachedTokens.Add(u.CachedTokens)
	if it.priced {
		c := it.price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
		r.stats.Cost.Add(int64(c))
		res.CostUSD = mustJSON(c)
	} else {
		r.stats.Unpriced.Add(1)
		res.CostUSD = []byte("null")
	}
	return res
}

func (r *runner) failed(it *item, f failure) *jsonl.Result {
	res := errorResult(it.req, f.typ, fmt.Sprintf("line %d: %s", it.req.Line, f.msg), f.status)
	res.Attempts = it.attempts
	return res
}

// unsent settles the reservation of a line admitted but never sent.
func (r *runner) unsent(ctx context.Context, it *item, settle chan<- budget.Settlement) {
	_ = send(ctx, settle, budget.Settlement{Est: it.est})
}

// record settles one call: the ledger gets a line and the budget moves from
// the estimate to what the API counted.
func (r *runner) record(ctx context.Context, it *item, a attempt, f failure, settle chan<- budget.Settlement) {
	e := &budget.LedgerEntry{
		Time:      r.cfg.Now(),
		ID:        it.req.ID,
		Line:      it.req.Line,
		Model:     it.model,
		Status:    a.reply.status,
		LatencyMS: a.latency.Milliseconds(),
		Attempt:   it.attempts,
		Error:     f.typ,
	}
	s := budget.Settlement{Est: it.est, Sent: sent(a), Entry: e}
	if a.err == nil {
		u := usageOf(a.resp)
		if a.resp.Model != "" {
			e.Model = a.resp.Model
		}
		e.PromptTokens, e.CompletionTokens, e.CachedTokens = u.PromptTokens, u.CompletionTokens, u.CachedTokens
		s.Tokens = u.TotalTokens
		if it.priced {
			c := it.price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
			e.CostUSD, s.Cost = &c, c
		}
	} else if it.priced {
		var zero budget.Cost
		e.CostUSD = &zero
	}
	_ = send(ctx, settle, s)
}

// sent reports whether a call may have reached the API, which then counts
// it against the rate limits: only a failed dial surely did not.
func sent(a attempt) bool {
	var op *net.OpError
	if a.reply.status == 0 && errors.As(a.err, &op) && op.Op == "dial" {
		return false
	}
	return true
}

// settler applies settlements to the budget, as many at a time as have
// queued, so that the shared file is written once per batch, not per call.
func (r *runner) settler(ctx context.Context, in <-chan budget.Settlement) error {
	batch := make([]budget.Settlement, 0, cap(in))
	for s := range in {
		batch = append(batch[:0], s)
	more:
		for len(batch) < cap(batch) {
			select {
			case s, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, s)
			default:
				break more
			}
		}
		if err := r.cfg.Gate.Settle(ctx, r.cfg.Now(), batch); err != nil {
			return &ExitError{Code: ExitConfig, Err: fmt.Errorf("settle usage: %w", err)}
		}
	}
	return nil
}

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

// orderedMap applies f to each value from in on workers goroutines and
// sends the results to out in input order, like sourcegraph/conc's stream:
// one slot per value, queued in submit order, at most 2×workers in flight.
func orderedMap[A, B any](ctx context.Context, workers int, in <-chan A, out chan<- B, f func(A) B) error {
	type task struct {
		a    A
		slot chan B
	}
	tasks := make(chan task)              // unbuffered: a task waits for a free worker
	queue := make(chan chan B, 2*workers) // the slots in submit order; bounds the values in flight
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		defer close(queue)
		for a := range in {
			slot := make(chan B, 1)
			if err := send(ctx, queue, slot); err != nil {
				return err
			}
			if err := send(ctx, tasks, task{a, slot}); err != nil {
				return err
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for t := range tasks {
				t.slot <- f(t.a)
			}
			return nil
		})
	}
	g.Go(func() error {
		for slot := range queue {
			select {
			case b := <-slot:
				if err := send(ctx, out, b); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}
