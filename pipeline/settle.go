package pipeline

import (
	"context"
	"net/http"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/retry"
)

// settle applies the settlements of the calls to the gate, as many at a
// time as have queued, so that the shared file is written once per batch,
// not once per call. It takes every settlement until in is closed, even
// after a signal: what reached the API must reach the ledger. When the
// shared state cannot be written, the run stops sending (storeFailed) and
// the settler goes on trying each later batch, so that a passing failure
// loses as little as it can; it never ends the run itself, which would
// drop the answers in flight.
func (r *runner) settle(ctx context.Context, in <-chan budget.Settlement) error {
	batch := make([]budget.Settlement, 0, max(cap(in), 1))
	for s := range in {
		batch = drainReady(in, append(batch[:0], s), cap(batch))
		if err := r.cfg.Gate.Settle(ctx, r.cfg.Clock.Now(), batch); err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // the run failed already
			}
			// Not tried again: the state may have been written and
			// only the ledger not, and a second try would settle the
			// day's counters twice.
			r.storeFailed(err)
		} else if r.cfg.Settled != nil {
			r.cfg.Settled()
		}
		for _, s := range batch {
			if !s.DayOnly {
				r.unsettled.Add(-1)
			}
		}
		r.settled.signal()
	}
	return nil
}

// settlement is what one call settles: the ledger gets a line and the
// budget moves from the estimate to what the API counted. A call that
// never left the process (wrote false) gives its whole reservation back
// and has no ledger line. A call the server took and never answered (a
// timeout, a dropped connection, an answer cut short, a call abandoned on
// a second signal) is settled at its estimate: the API usually bills it,
// and the ledger says so with the estimate's tokens.
func (r *runner) settlement(it *item, a attempt, f retry.Failure, wrote bool) budget.Settlement {
	if !wrote {
		return budget.Settlement{Est: it.est}
	}
	e := &budget.LedgerEntry{
		Endpoint:  it.endpoint,
		Time:      r.cfg.Clock.Now(),
		ID:        it.req.ID,
		Line:      it.req.Line,
		Model:     it.model,
		Status:    a.reply.status,
		LatencyMS: a.latency.Milliseconds(),
		Attempt:   it.attempts,
		Error:     f.Type,
	}
	s := budget.Settlement{Est: it.est, Sent: true, Entry: e}
	switch {
	case a.err == nil:
		u := a.ans.usage
		if a.ans.model != "" {
			e.Model = a.ans.model
		}
		e.PromptTokens, e.CompletionTokens, e.CachedTokens = u.PromptTokens, u.CompletionTokens, u.CachedTokens
		s.Tokens = u.TotalTokens
		if it.priced {
			c := a.ans.cost
			e.CostUSD, s.Cost = &c, c
		}
	case a.reply.status == 0 || a.reply.status < http.StatusMultipleChoices:
		// Taken and not answered, or answered 2xx with a body that did
		// not parse: presumed billed.
		e.PromptTokens, e.CompletionTokens = it.prompt, it.maxOut
		s.Tokens, s.Cost = it.est.Tokens, it.est.Cost
		if it.priced {
			c := it.est.Cost
			e.CostUSD = &c
		}
	default:
		// The API refused it: nothing billed.
		if it.priced {
			var zero budget.Cost
			e.CostUSD = &zero
		}
	}
	return s
}
