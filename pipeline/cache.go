package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	gojson "github.com/goccy/go-json"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/jsonl"
)

// The response cache (Config.Cache) in a run:
//
//   - lookup, a stage between prepare and hold, keys each line's wire
//     body and looks the keys up in blocks. A line whose answer is stored
//     is a hit; the first line of a run to send a request is its flight;
//     an identical line after it is its twin and waits for its answer.
//     Hits and twins take no reservation, no room in the minute buckets
//     and no ledger charge: hold does not count them, admission passes
//     them on, and the fetch stage's workers serve them (serveItem).
//   - serveItem builds a hit's or a twin's result from the answer body by
//     resultFromBody, the decoder of a live answer: the same result but
//     for cached, cost_usd 0, attempts 0 and the latency. It hands a
//     flight's answer to its twins, and a complete one to the writer.
//   - storeAnswers, the writer, stores what it is handed a transaction at
//     a time, then lets the flights go: a line looked up after that finds
//     the answer stored. At the end it records the run's hits with the
//     store and, as ledger entries of no cost, with the budget.
//
// A store that fails mid-run is one warning, and the run goes on without
// it: every line is then a miss, and twins are still sent once while
// their flight is in the air.

// lookupBlock is the most lines one lookup asks the store for: what prepare
// has ready, up to the store's own block (cache.File reads 256 keys a
// statement).
const lookupBlock = 256

// putBlock is the most answers one Put stores: one transaction, or one
// round trip to Redis.
const putBlock = 256

// lineCache is what the response cache knows of a line.
type lineCache struct {
	key    cache.Key // the request's key; zero when the line is not keyed
	cached *cached   // set when the line is answered without a call of its own
	flight *flight   // set on the line that sends a request its twins wait for
	// answer is the body of the answer to the item's call, as received,
	// kept for the flights it answers (a line's, or a pack's members').
	answer []byte
}

// cached is how a line is answered without a call of its own.
type cached struct {
	entry *cache.Entry // an answer from the store
	twin  *flight      // or the answer of the identical line this run sends
}

// flight is the call of the first line of a run to send a request: the
// identical lines after it, its twins, wait for its answer rather than
// send the request again.
type flight struct {
	key      cache.Key
	endpoint string        // jsonl.Endpoint*
	done     chan struct{} // closed once the fields below are set
	line     int           // the line sent, for its twins' errors
	body     []byte        // the answer as received (a pack member's, its own); nil if the call failed
	model    string        // the model the answer names
	cost     int64         // what the answer cost, in picodollars; negative when its price is unknown
	err      *jsonl.Error  // why the call failed, when it did
}

// cacheRun is a run's use of the cache: the store, the flights in the
// air, and the hits to record. Safe for concurrent use.
type cacheRun struct {
	store cache.Store
	off   atomic.Bool // the store failed: the run goes on without it
	// puts are the answers for the writer; the fetch stage's wiring closes
	// it once every worker is done. Sized so that workers rarely wait for
	// a transaction: a block of answers a worker.
	puts chan *flight

	mu      sync.Mutex
	flights map[cache.Key]*flight // guarded by mu: the flights not yet let go
	hits    map[hitKind]*hitCount // guarded by mu: hits to record in the ledger
}

// hitKind is what the ledger tells hits apart by.
type hitKind struct{ model, endpoint string }

// hitCount is the hits of one kind and what they saved, in picodollars.
type hitCount struct{ n, saved int64 }

func newCacheRun(store cache.Store, parallel int) *cacheRun {
	return &cacheRun{
		store:   store,
		puts:    make(chan *flight, parallel),
		flights: make(map[cache.Key]*flight),
		hits:    make(map[hitKind]*hitCount),
	}
}

// cacheFailed turns the store off for the rest of the run, saying so once.
func (r *runner) cacheFailed(err error) {
	if r.cache.off.CompareAndSwap(false, true) {
		r.cfg.Log.Warn(fmt.Sprintf("%v: going on without the response cache", err))
	}
}

// lookup is the cache's stage: it keys the lines from in and looks them up
// in blocks, marking hits, flights and twins, and sends every line on in
// input order.
func (r *runner) lookup(ctx context.Context, in <-chan *item, out chan<- *item) error {
	defer close(out)
	var kr cache.Keyer
	block := make([]*item, 0, lookupBlock)
	for {
		select {
		case it, ok := <-in:
			if !ok {
				return nil
			}
			block = drainReady(in, append(block[:0], it), lookupBlock)
		case <-ctx.Done():
			return ctx.Err()
		}
		r.look(ctx, &kr, block)
		for _, it := range block {
			if err := send(ctx, out, it); err != nil {
				return err
			}
		}
	}
}

// look keys a block of lines and looks them up. A twin is found by the
// flights before the store is asked: a flight lets go only once its
// answer is stored, so a key neither knows has never been answered.
// A dry run only reads: it has hits, but neither flights nor twins.
func (r *runner) look(ctx context.Context, kr *cache.Keyer, block []*item) {
	c := r.cache
	var ask []*item
	var keys []cache.Key
	for _, it := range block {
		if it.result != nil {
			continue
		}
		k, err := kr.Key(jsonl.URL(it.endpoint), r.cfg.BaseURL, it.body)
		if err != nil {
			continue // a body the cache cannot key (not Unicode): sent without it
		}
		it.key = k
		c.mu.Lock()
		f := c.flights[k]
		c.mu.Unlock()
		if f != nil {
			it.cached = &cached{twin: f}
			continue
		}
		ask = append(ask, it)
		keys = append(keys, k)
	}
	var found []*cache.Entry
	if len(keys) > 0 && !c.off.Load() {
		es, err := c.store.GetMany(ctx, keys)
		switch {
		case err == nil:
			found = es
		case ctx.Err() == nil:
			r.cacheFailed(err)
		}
	}
	for i, it := range ask {
		if found != nil && found[i] != nil {
			it.cached = &cached{entry: found[i]}
			continue
		}
		if r.cfg.DryRun {
			continue
		}
		c.mu.Lock()
		if f := c.flights[it.key]; f != nil {
			it.cached = &cached{twin: f}
		} else {
			it.flight = &flight{key: it.key, endpoint: it.endpoint, done: make(chan struct{})}
			c.flights[it.key] = it.flight
		}
		c.mu.Unlock()
	}
}

// serveItem is what the fetch stage's workers do with an admitted item:
// a line the cache answers is served, any other sent (sendItem), and the
// answer of a flight handed to its twins and to the writer.
func (r *runner) serveItem(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	if r.cache == nil {
		return r.sendItem(ctx, it, settle)
	}
	if it.cached != nil {
		if res := r.serve(ctx, it); res != nil {
			return []*jsonl.Result{res}
		}
		// A stored answer that cannot be read (one this gptbatch's decoder
		// refuses) is a miss: sent, within the limits, like any other.
		it.cached = nil
		if !r.preflight(it) {
			if _, err := r.reserve(ctx, []budget.Estimate{it.est}); err != nil {
				it.result = r.notSent(it)
			}
		}
	}
	rs := r.sendItem(ctx, it, settle)
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
// read.
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
	res.Cached, res.CostUSD, res.Attempts = true, []byte("0"), 0
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
		if it.flight != nil {
			r.arrive(ctx, it.flight, it.req.Line, rs[0], answer)
		}
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
// (nil if the call failed): its twins are let in, and a complete answer
// goes to the writer, which lets the flight go once it is stored. Any
// other is let go at once: a twin read after that sends its request again.
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
	if f.err == nil && !c.off.Load() && complete(f.endpoint, body) {
		if send(ctx, c.puts, f) == nil {
			return
		}
	}
	c.forget(f)
}

// forget lets flights go: lines looked up after this are no longer their
// twins.
func (c *cacheRun) forget(fs ...*flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		if c.flights[f.key] == f {
			delete(c.flights, f.key)
		}
	}
}

// costOf reads a result's cost_usd as picodollars; null (an unknown
// price) is -1.
func costOf(raw json.RawMessage) int64 {
	c, err := budget.ParseCost(string(raw))
	if err != nil {
		return -1
	}
	return int64(c)
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

// awaited reports whether the answer to the item is awaited by flights:
// its own, or its members'.
func (it *item) awaited() bool {
	if it.flight != nil {
		return true
	}
	for _, m := range it.members {
		if m.flight != nil {
			return true
		}
	}
	return false
}

// recount prepares the line again with the exact count, keeping what the
// cache knows of it.
func (it *item) recount(cfg *Config) {
	lc := it.lineCache
	*it = *prepare(it.req, cfg, true)
	it.lineCache = lc
}
