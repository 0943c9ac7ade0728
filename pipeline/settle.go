package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/gptbatch/gptbatch/budget"
)

// settle applies the settlements of the calls to the gate, as many at a
// time as have queued, so that the shared file is written once per batch,
// not once per call. Once the store has failed, it stops the run (see
// storeLost) and drains the rest, so that the calls in flight still end
// with their results.
func (r *runner) settle(ctx context.Context, in <-chan budget.Settlement) error {
	batch := make([]budget.Settlement, 0, max(cap(in), 1))
	lost := false
	for s := range in {
		batch = drainReady(in, append(batch[:0], s), cap(batch))
		if lost {
			continue
		}
		if err := r.cfg.Gate.Settle(ctx, r.cfg.Clock.Now(), batch); err != nil {
			if ctx.Err() != nil {
				return &Error{Code: ExitConfig, Err: fmt.Errorf("settle usage: %w", err)}
			}
			r.storeLost(err)
			lost = true
		}
		if r.cfg.Settled != nil {
			r.cfg.Settled()
		}
	}
	return nil
}

// settlement is what one call settles: the ledger gets a line and the
// budget moves from the estimate to what the API counted.
func (r *runner) settlement(it *item, a attempt, f failure) budget.Settlement {
	e := &budget.LedgerEntry{
		Endpoint:  it.endpoint,
		Time:      r.cfg.Clock.Now(),
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
	} else if it.priced {
		var zero budget.Cost
		e.CostUSD = &zero
	}
	return s
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
