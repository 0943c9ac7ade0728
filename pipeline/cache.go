package pipeline

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

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
	// riders are the lines the cache answers that a pack carries (see
	// pack): their results go out among its members', in input order.
	riders []*item
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
	resend   bool          // the answer is not one to serve (see land): the twins send their own
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

	// riderRoom has a place for each line packs may carry (pack), taken
	// when the pack stage adds one and given back once its result is
	// written: a pack of new inputs spread among answered lines holds
	// every line from its first input to its last, and this bounds them.
	riderRoom places
	riding    atomic.Int64 // riders taken and not yet written

	mu      sync.Mutex
	flights map[cache.Key]*flight // guarded by mu: the flights not yet let go
	hits    map[hitKind]*hitCount // guarded by mu: hits to record in the ledger
	// lastRider maps the last result of a pack that carries riders to
	// how many it carries. Guarded by mu.
	lastRider map[*jsonl.Result]int
	// kept are the flights whose answers the store does not keep, kept for
	// their twins (see arrive): a ring of up to maxKept, whose oldest is
	// at keptNext once it is full. Guarded by mu.
	kept     []*flight
	keptNext int
}

// maxKept is the most flights kept whose answers the store does not keep:
// a failure holds its error, a cut-off answer its body. Past it the
// oldest is let go, and a line identical to it read later is sent again.
const maxKept = 10000

// keep keeps f for its twins read later, letting the oldest kept go when
// there are maxKept.
func (c *cacheRun) keep(f *flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.kept) < maxKept {
		c.kept = append(c.kept, f)
		return
	}
	if old := c.kept[c.keptNext]; c.flights[old.key] == old {
		delete(c.flights, old.key)
	}
	c.kept[c.keptNext] = f
	c.keptNext = (c.keptNext + 1) % maxKept
}

// riderRoomLines is the most lines packs carry at once: two packs' worth.
const riderRoomLines = 2 * maxRiders

// ride takes a place for a rider, and reports whether there was one.
func (c *cacheRun) ride() bool {
	select {
	case <-c.riderRoom:
		c.riding.Add(1)
		return true
	default:
		return false
	}
}

// wrote gives back the places of the riders of the pack whose last result
// res is, once it is written (emit).
func (c *cacheRun) wrote(res *jsonl.Result) {
	if c.riding.Load() == 0 {
		return
	}
	c.mu.Lock()
	n, ok := c.lastRider[res]
	delete(c.lastRider, res)
	c.mu.Unlock()
	if ok {
		c.riding.Add(-int64(n))
		c.riderRoom.put(n)
	}
}

// hitKind is what the ledger tells hits apart by.
type hitKind struct{ model, endpoint string }

// hitCount is the hits of one kind and what they saved, in picodollars.
type hitCount struct{ n, saved int64 }

func newCacheRun(store cache.Store, parallel int) *cacheRun {
	return &cacheRun{
		store:     store,
		puts:      make(chan *flight, parallel),
		flights:   make(map[cache.Key]*flight),
		hits:      make(map[hitKind]*hitCount),
		riderRoom: newPlaces(riderRoomLines),
		lastRider: make(map[*jsonl.Result]int),
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
// A dry run only reads, and the Batch API's route only reads here (its
// answers are stored as they are collected): they have hits, but neither
// flights nor twins.
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
	defer func() {
		// The lines to send, counted exactly before hold and admission
		// see them (Config.countLater): the cache answers the others.
		for _, it := range block {
			if it.result != nil || it.cached != nil || it.exact {
				continue
			}
			r.recount(it)
			if it.result != nil && it.flight != nil {
				// Refused once counted: its twins get its result.
				r.arrive(ctx, it.flight, it.req.Line, it.result, nil)
			}
		}
	}()
	for i, it := range ask {
		if found != nil && found[i] != nil {
			it.cached = &cached{entry: found[i]}
			continue
		}
		if r.cfg.DryRun || r.cfg.Via == ViaBatch {
			// A dry run only reads. A batch's answers come hours later,
			// in the collector: a twin would hold its line back that long.
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
func (r *runner) recount(it *item) {
	lc := it.lineCache
	*it = *r.prepare(it.req, true)
	it.lineCache = lc
}
