package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	gojson "github.com/goccy/go-json"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/jsonl"
)

// The response cache in the fetch stage's workers (see cache.go): the lines
// it answers served, the answers of flights handed to their twins, the
// complete ones stored by the writer.

// serveItem is what the fetch stage's workers do with an admitted item
// under --cache: a line the cache answers is served, any other sent
// (sendChecked), and the answer of a flight handed to its twins and to the
// writer.
func (r *runner) serveItem(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	rs := r.serveOne(ctx, it, settle)
	if len(it.riders) == 0 {
		return rs
	}
	// A pack's riders, served once its answer is in (a twin of one of its
	// inputs waits for it), go out among its results in input order.
	out := make([]*jsonl.Result, 0, len(rs)+len(it.riders))
	for _, rider := range it.riders {
		res := r.serveOne(ctx, rider, settle)[0]
		for len(rs) > 0 && rs[0].Line < res.Line {
			out, rs = append(out, rs[0]), rs[1:]
		}
		out = append(out, res)
	}
	out = append(out, rs...)
	r.cache.mu.Lock()
	r.cache.lastRider[out[len(out)-1]] = len(it.riders)
	r.cache.mu.Unlock()
	it.riders = nil
	return out
}

// serveOne serves or sends one item: a line, or a pack without its
// riders.
func (r *runner) serveOne(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	if it.cached != nil {
		if res := r.serve(ctx, it); res != nil {
			return []*jsonl.Result{res}
		}
		// A stored answer that cannot be read (one this gptbatch's decoder
		// refuses) is a miss: sent, within the limits, like any other.
		it.cached = nil
		if !it.exact {
			r.recount(it) // not counted while it was to be served
		}
		if !r.preflight(it) {
			var err error
			if _, it.reserved, err = r.reserve(ctx, []budget.Estimate{it.est}); err != nil {
				it.result = r.notSent(it)
			}
		}
	}
	rs := r.sendChecked(ctx, it, settle)
	r.land(ctx, it, rs)
	return rs
}

// notSent is the result of a line whose reservation was refused because
// the run stopped (or failed).
func (r *runner) notSent(it *item) *jsonl.Result {
	if why := r.stop.stopped(); why != nil {
		return why.result(it.req)
	}
	return errorResult(it.req, jsonl.ErrInterrupted, fmt.Sprintf("line %d: not sent: the run stopped", it.req.Line), 0)
}

// serve is the result of a line the cache answers: from its stored answer,
// or its twin's once that is in. It is nil when a stored answer cannot be
// read, or the twin's is not one to serve: the line is then sent.
func (r *runner) serve(ctx context.Context, it *item) *jsonl.Result {
	start := r.cfg.Clock.Now()
	var body []byte
	var saved int64
	twin := it.cached.twin
	if twin == nil {
		body, saved = it.cached.entry.Body, it.cached.entry.Cost
	} else {
		select {
		case <-twin.done:
		case <-ctx.Done():
			return r.notSent(it)
		}
		if twin.resend {
			return nil
		}
		if twin.err != nil {
			e := *twin.err
			e.Message = fmt.Sprintf("line %d: not sent: the same request as line %d, which failed: %s", it.req.Line, twin.line, trimLine(e.Message, twin.line))
			return &jsonl.Result{ID: it.req.ID, Line: it.req.Line, Metadata: it.req.Metadata, Error: &e}
		}
		body, saved = twin.body, twin.cost
	}
	ans, err := resultFromBody(it, http.StatusOK, body)
	if err != nil {
		if twin == nil {
			r.cfg.Log.Warn(fmt.Sprintf("line %d: the cached answer cannot be read (%v): sending the request", it.req.Line, err))
			return nil
		}
		// The twin's own answer was read by the same decoder: not seen.
		return errorResult(it.req, jsonl.ErrServer, fmt.Sprintf("line %d: the answer of line %d, the same request, cannot be read: %v", it.req.Line, twin.line, err), 0)
	}
	res := ans.results[0]
	res.Cached, res.CostUSD, res.Attempts = true, jsonl.CostOf(0), 0
	res.LatencyMS = r.cfg.Clock.Now().Sub(start).Milliseconds()
	r.stats.CacheHits.Add(1)
	saved = max(saved, 0) // unknown: nothing counted as saved
	r.stats.CacheSaved.Add(saved)
	c := r.cache
	c.mu.Lock()
	k := hitKind{ans.model, it.endpoint}
	h := c.hits[k]
	if h == nil {
		h = new(hitCount)
		c.hits[k] = h
	}
	h.n++
	h.saved += saved
	c.mu.Unlock()
	return res
}

// trimLine is msg without the "line N: " it starts with.
func trimLine(msg string, line int) string {
	prefix := "line " + strconv.Itoa(line) + ": "
	if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}

// land hands the answer of an item sent to the flights it carries, a
// line's or a pack's members': each member's answer is its own, as the
// single-input request it would have been (memberBody).
func (r *runner) land(ctx context.Context, it *item, rs []*jsonl.Result) {
	answer := it.answer
	it.answer = nil
	if it.members == nil {
		if it.flight == nil {
			return
		}
		if it.schema != nil && it.answered.invalid != nil {
			// The first answer did not fit the line's schema: served
			// again it would fail again (schema.go), so it is neither
			// stored nor handed on, and the twins ask for themselves.
			r.resend(it.flight, it.req.Line)
			return
		}
		r.arrive(ctx, it.flight, it.req.Line, rs[0], answer)
		return
	}
	var pack *packAnswer
	for i, m := range it.members {
		if m.flight == nil {
			continue
		}
		var body []byte
		if answer != nil && i < len(rs) && rs[i].Error == nil {
			if pack == nil {
				pack = readPackAnswer(answer)
			}
			body = pack.member(i, rs[i])
		}
		r.arrive(ctx, m.flight, m.req.Line, rs[i], body)
	}
}

// arrive ends flight f with the result res of line and the answer body
// (nil if the call failed): its twins are let in. A complete answer goes
// to the writer, which lets the flight go once it is stored; a failure or
// an answer not kept (cut off, filtered) stays for the lines read later
// (keep), so that every line of the run identical to it gets what it got.
// Without the store (it failed) the flight is let go at once: a line read
// after that sends its request again.
func (r *runner) arrive(ctx context.Context, f *flight, line int, res *jsonl.Result, body []byte) {
	c := r.cache
	f.line = line
	if res.Error != nil || body == nil {
		e := jsonl.Error{Type: jsonl.ErrServer, Message: "no answer"}
		if res.Error != nil {
			e = *res.Error
		}
		f.err = &e
	} else {
		f.body, f.model, f.cost = body, res.Model, costOf(res.CostUSD)
	}
	close(f.done)
	switch {
	case c.off.Load():
		c.forget(f)
	case f.err == nil && complete(f.endpoint, body):
		if send(ctx, c.puts, f) != nil {
			c.forget(f)
		}
	default:
		c.keep(f)
	}
}

// resend ends flight f, sent by line, with no answer to serve: its twins
// send their own requests, and a line read later is a flight of its own.
func (r *runner) resend(f *flight, line int) {
	f.line, f.resend = line, true
	close(f.done)
	r.cache.forget(f)
}

// costOf is a result's cost_usd in picodollars; null (an unknown price)
// is -1.
func costOf(c jsonl.Cost) int64 {
	if pico, ok := c.Picodollars(); ok {
		return pico
	}
	return -1
}

// complete reports whether an answer body of endpoint is what the cache
// keeps: a whole answer, not one cut off at the output cap or by the
// content filter (chat: no choice's finish_reason is length or
// content_filter; responses: status completed). Errors never get here.
func complete(endpoint string, body []byte) bool {
	switch endpoint {
	case jsonl.EndpointEmbeddings:
		return true
	case jsonl.EndpointResponses:
		var r struct {
			Status string `json:"status"`
		}
		return gojson.Unmarshal(body, &r) == nil && r.Status == "completed"
	default:
		var c struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
		}
		if gojson.Unmarshal(body, &c) != nil || len(c.Choices) == 0 {
			return false
		}
		for _, ch := range c.Choices {
			if ch.FinishReason == "length" || ch.FinishReason == "content_filter" {
				return false
			}
		}
		return true
	}
}

// packAnswer is an embeddings answer to a pack, read for its members'
// own answers.
type packAnswer struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
}

func readPackAnswer(body []byte) *packAnswer {
	var p packAnswer
	if gojson.Unmarshal(body, &p) != nil {
		return &packAnswer{}
	}
	return &p
}

// member is the answer the pack's i-th input would have had as a request
// of its own: its vector as received, and its share of the usage (its
// own exact count, res's); nil if the answer has no vector i.
func (p *packAnswer) member(i int, res *jsonl.Result) []byte {
	for _, d := range p.Data {
		if d.Index != i || res.Usage == nil {
			continue
		}
		one := map[string]any{
			"object": "list",
			"model":  p.Model,
			"data": []map[string]any{{
				"object":    "embedding",
				"index":     0,
				"embedding": d.Embedding,
			}},
			"usage": map[string]int64{"prompt_tokens": res.Usage.PromptTokens, "total_tokens": res.Usage.TotalTokens},
		}
		b, err := json.Marshal(one)
		if err != nil {
			return nil
		}
		return b
	}
	return nil
}

// storeAnswers is the cache's writer: it stores the answers handed to it,
// what has queued in one Put, then lets their flights go. Once the fetch
// stage is done it records the run's hits: with the store, for `gptbatch
// cache`, and in the ledger, for `gptbatch usage`.
func (r *runner) storeAnswers(ctx context.Context) error {
	c := r.cache
	batch := make([]*flight, 0, putBlock)
	entries := make([]cache.Entry, 0, putBlock)
	for f := range c.puts {
		batch = drainReady(c.puts, append(batch[:0], f), putBlock)
		if !c.off.Load() {
			now := r.cfg.Clock.Now()
			entries = entries[:0]
			for _, f := range batch {
				entries = append(entries, cache.Entry{Key: f.key, Endpoint: jsonl.URL(f.endpoint), Model: f.model, Created: now, Cost: f.cost, Body: f.body})
			}
			if err := c.store.Put(ctx, entries...); err != nil && ctx.Err() == nil {
				r.cacheFailed(err)
			}
		}
		c.forget(batch...)
	}
	if ctx.Err() != nil {
		return nil // the run failed: its error says why
	}
	r.recordHits(ctx)
	return nil
}

// recordHits records the run's hits with the store and in the ledger, as
// entries of no cost: a failure is a warning, since nothing was spent.
func (r *runner) recordHits(ctx context.Context) {
	c := r.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	var n, saved int64
	var entries []budget.LedgerEntry
	now := r.cfg.Clock.Now()
	for k, h := range c.hits {
		n += h.n
		saved += h.saved
		zero, s := budget.Cost(0), budget.Cost(h.saved)
		entries = append(entries, budget.LedgerEntry{Time: now, Model: k.model, Endpoint: k.endpoint, CostUSD: &zero, CacheHits: h.n, SavedUSD: &s})
	}
	clear(c.hits)
	if n == 0 {
		return
	}
	if !c.off.Load() {
		if err := c.store.RecordHits(ctx, n, saved); err != nil {
			r.cacheFailed(err)
		}
	}
	if err := r.cfg.Gate.Record(ctx, now, entries); err != nil {
		r.cfg.Log.Warn(fmt.Sprintf("the ledger did not take the %d answers from the cache: %v", n, err))
	}
}
