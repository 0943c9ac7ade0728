// batch.go is one file of more than 500 lines because everything in it
// works on the tracker, under its one lock: the table of a --via batch
// run's lines and of the batches they are in, the sender that fills it and
// the ordered writer that drains it. The lock's rules read in one place.

package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/jsonl"
)

// --via batch replaces the send stage (admit.go, fetch.go, settle.go) as a
// unit. Its files, in the order a line goes through them:
//
//	batch.go         the sender's wiring, the lines' table and the ordered writer's source
//	batchsubmit.go   lines → batch files, split by endpoint and model, uploaded and submitted
//	batchpoll.go     every submitted batch polled, politely, until it ends
//	batchcollect.go  output and error files streamed into results, settled, retried
//	spool.go         the temporary files that keep memory bounded

// Via is the way lines reach the API.
type Via string

// The --via choices.
const (
	ViaSync  Via = "sync"  // one request a line (the default)
	ViaBatch Via = "batch" // OpenAI's Batch API, at half price
)

// Batch API limits: the most lines and bytes of one batch input file.
const (
	DefaultBatchLines = 50_000
	DefaultBatchBytes = 200 << 20
)

// BatchOptions configure --via batch. The zero value splits at the API's
// own limits and polls from once a second to once a minute; Journal must
// be set.
type BatchOptions struct {
	Lines int   // most lines a batch file (--batch-lines); 0 = DefaultBatchLines
	Bytes int64 // most bytes a batch file; 0 = DefaultBatchBytes
	// QueueTokens is the most input tokens of one model this run keeps
	// enqueued at once, and so the most a batch file holds
	// (--batch-queue-tokens); 0 = no limit.
	QueueTokens int64
	Journal     string // the journal file, beside usage.md
	Resume      bool   // collect journalled batches instead of submitting their lines again
	// ResubmitUnknown submits again, with --resume, the lines of a
	// journalled batch the API does not know (made with another key or
	// base URL), instead of stopping the run.
	ResubmitUnknown bool
	// Poll is the first interval between polls of a batch, MaxPoll the
	// longest; 0 means 1 s and 60 s. A batch is never polled more than
	// once a second, whatever they say.
	Poll, MaxPoll time.Duration
	TempDir       string // for the spools; "" = the system's
}

func (o BatchOptions) lines() int {
	if o.Lines > 0 {
		return min(o.Lines, DefaultBatchLines)
	}
	return DefaultBatchLines
}

func (o BatchOptions) bytes() int64 {
	if o.Bytes > 0 {
		return min(o.Bytes, DefaultBatchBytes)
	}
	return DefaultBatchBytes
}

func (o BatchOptions) poll() time.Duration { return max(o.Poll, time.Second) }
func (o BatchOptions) maxPoll() time.Duration {
	if o.MaxPoll <= 0 {
		return max(time.Minute, o.poll())
	}
	return max(o.MaxPoll, o.poll())
}

// batchGCPercent is the GC's target while a --via batch run collects.
const batchGCPercent = 60

// slot is one line of a --via batch run, by its place in the input.
type slot struct {
	rec   int64 // its record in the records spool; -1: it had its result at once
	res   int64 // its result in the results spool, or noResult, or written
	batch int32 // the batch it is in, in tracker.batches; -1: none
	tries uint8 // the batches it was submitted in
}

// What slot.res holds besides a result's place in the spool.
const (
	noResult = -1 // no result yet
	written  = -2 // --unordered: its result is written, and out of the spool's way
)

// hasResult reports whether the line has its result, written or not.
func (s slot) hasResult() bool { return s.res != noResult }

// tracker is the table of a --via batch run's lines: where each line's
// record and result are spooled, and which batch holds it. Memory is a few
// words a line; everything else is on disk. Safe for concurrent use.
type tracker struct {
	records *spool // a line's record: lineRecord, then its body
	results *spool // a line's result, as JSON

	mu      sync.Mutex
	slots   []slot
	lineOf  []int32 // the input line number of each slot, ascending
	batches []*tbatch
	ready   []int32 // --unordered: slots whose result is not yet written
	ended   bool    // every line is in slots
	final   bool    // no more results will come
	wake    chan struct{}
}

// lineRecord is what a line's result needs besides the answer, and what
// submitting it again needs: spooled when it is read (appendRecord), read
// back when its answer is collected.
type lineRecord struct {
	ID        string
	Line      int
	Model     string
	URL       string
	Metadata  json.RawMessage
	Prompt    int64 // prompt tokens: what it enqueues
	EstTokens int64
	EstCost   budget.Cost
	Priced    bool
	Single    bool   // embeddings: one input, so the result has "embedding"
	Floats    bool   // embeddings: base64 on the wire, floats in the result
	Hash      string // lineHash of URL and body
}

// tbatch is a batch this run waits for.
type tbatch struct {
	idx       int32
	id        string
	inputFile string
	endpoint  string
	model     string
	chunk     int
	seqs      []int32          // its lines, in the order of its file
	byCustom  map[string]int32 // a claimed batch's custom_ids → slots
	est       budget.Estimate  // what its submission reserved of the day
	day       string           // the day (budget.State.Date) est was reserved in
	tokens    int64            // its input tokens, enqueued while it runs
	submitted time.Time
	claimed   bool // from the journal (--resume)
	collected bool // the journal says it was collected: its results are in the ledger, and it holds no reservation
	// settled are the entries the ledger holds of it already: an earlier
	// run collected that many of its results before it was stopped.
	settled   int
	limitWait int // times it was refused for the enqueued-token limit with nothing of ours running
	creates   int // batches created of its file: a refused one is created again

	// The poller's.
	status   string
	answered int // completed + failed, as request_counts say
	next     time.Time
	interval time.Duration
	lost     error // retrieving it failed for good
	final    openai.Batch
}

func newTracker(dir string) (*tracker, error) {
	recs, err := newSpool(dir, "lines")
	if err != nil {
		return nil, err
	}
	res, err := newSpool(dir, "results")
	if err != nil {
		recs.close()
		return nil, err
	}
	return &tracker{records: recs, results: res, wake: make(chan struct{}, 1)}, nil
}

func (t *tracker) close() {
	t.records.close()
	t.results.close()
}

// poke wakes the writer.
func (t *tracker) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// add makes the slot of the next line and returns it.
func (t *tracker) add(line int, rec int64) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slots = append(t.slots, slot{rec: rec, res: noResult, batch: -1})
	t.lineOf = append(t.lineOf, int32(line))
	return int32(len(t.slots) - 1)
}

// seqOfLine is the slot of input line n, or -1.
func (t *tracker) seqOfLine(n int) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	lo, hi := 0, len(t.lineOf)
	for lo < hi {
		m := (lo + hi) / 2
		if int(t.lineOf[m]) < n {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(t.lineOf) && int(t.lineOf[lo]) == n {
		return int32(lo)
	}
	return -1
}

// setResult spools the result of slot seq.
func (t *tracker) setResult(seq int32, res *jsonl.Result) error {
	return t.setResultBytes(seq, appendResult(nil, res))
}

// setResultBytes spools the result of slot seq, encoded by appendResult.
func (t *tracker) setResultBytes(seq int32, b []byte) error {
	off, err := t.results.append(b, nil)
	if err != nil {
		return err
	}
	t.publish(seq, off)
	return nil
}

// publish gives slot seq the result spooled at off, for the writer.
func (t *tracker) publish(seq int32, off int64) {
	t.mu.Lock()
	t.slots[seq].res = off
	t.ready = append(t.ready, seq)
	t.mu.Unlock()
	t.poke()
}

// record reads the record of slot seq, and its body if withBody.
func (t *tracker) record(seq int32, withBody bool) (lineRecord, []byte, error) {
	t.mu.Lock()
	off := t.slots[seq].rec
	t.mu.Unlock()
	head, body, err := t.records.read(off, withBody)
	if err != nil {
		return lineRecord{}, nil, err
	}
	rec, err := parseRecord(head)
	return rec, body, err
}

// heads is what collecting a batch needs of its lines, read in one pass
// before its files are: the record of every line and its tries. A read(2)
// for each answer was a fifth of collecting's time.
type heads struct {
	lines []int32 // input line numbers, ascending
	seqs  []int32
	tries []uint8
	ends  []int  // where each record ends in arena
	arena []byte // the records, one after the other
}

// headsMax bounds a batch's heads in memory: past it, the rest of its
// lines' records are read one at a time.
const headsMax = 32 << 20

// headsOf reads the records of b's lines.
func (t *tracker) headsOf(b *tbatch) (*heads, error) {
	n := len(b.seqs)
	h := &heads{lines: make([]int32, 0, n), seqs: make([]int32, 0, n), tries: make([]uint8, 0, n), ends: make([]int, 0, n)}
	offs := make([]int64, 0, n)
	t.mu.Lock()
	seqs := append([]int32(nil), b.seqs...)
	slices.Sort(seqs)
	for _, seq := range seqs {
		sl := t.slots[seq]
		if sl.rec < 0 || sl.batch != b.idx {
			continue
		}
		h.lines = append(h.lines, t.lineOf[seq])
		h.seqs = append(h.seqs, seq)
		h.tries = append(h.tries, sl.tries)
		offs = append(offs, sl.rec)
	}
	t.mu.Unlock()
	err := t.records.readHeads(offs, func(i int, head []byte) bool {
		if len(h.arena)+len(head) > headsMax {
			h.lines, h.seqs, h.tries = h.lines[:i], h.seqs[:i], h.tries[:i]
			return false
		}
		if i == 64 {
			// Room for the rest at the first heads' mean size and a
			// tenth more, rather than copies of a growing arena.
			want := min(len(h.arena)*len(offs)/64*11/10, headsMax)
			h.arena = append(make([]byte, 0, want), h.arena...)
		}
		h.arena = append(h.arena, head...)
		h.ends = append(h.ends, len(h.arena))
		return true
	})
	return h, err
}

// find returns the index of input line n in h, or -1.
func (h *heads) find(n int) int {
	if n < 0 || n > math.MaxInt32 {
		return -1
	}
	if i, ok := slices.BinarySearch(h.lines, int32(n)); ok {
		return i
	}
	return -1
}

// record decodes the record at index i.
func (h *heads) record(i int) (lineRecord, error) {
	start := 0
	if i > 0 {
		start = h.ends[i-1]
	}
	return parseRecord(h.arena[start:h.ends[i]])
}

// slot returns a copy of slot seq.
func (t *tracker) slot(seq int32) slot {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.slots[seq]
}

// register adds b to the run's batches.
func (t *tracker) register(b *tbatch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b.idx = int32(len(t.batches))
	t.batches = append(t.batches, b)
}

// put puts the slots seqs in batch b; try says it is one more submission
// of them, not the same one under a new batch id.
func (t *tracker) put(b *tbatch, try bool, seqs ...int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range seqs {
		t.slots[s].batch = b.idx
		if try && t.slots[s].tries < 255 {
			t.slots[s].tries++
		}
	}
}

// finish says that no more results will come.
func (t *tracker) finish() {
	t.mu.Lock()
	t.final = true
	t.mu.Unlock()
	t.poke()
}

// itemOf is the item a line's record describes, enough to build its result.
func itemOf(rec lineRecord, tries int, prices *budget.Prices) *item {
	it := &item{
		req: &jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, model: rec.Model, attempts: tries,
		endpoint: endpointOf(rec.URL), single: rec.Single, floats: rec.Floats,
	}
	it.prices = prices
	it.price, _ = prices.Lookup(rec.Model)
	it.setTier(budget.TierBatch)
	return it
}

// batchSender is the send stage of --via batch: it reads the admitted
// lines from in and writes one result a line to out, in input order
// unless --unordered, as send does for the synchronous API. It closes out.
func (r *runner) batchSender(ctx context.Context, in <-chan *item, out chan<- *jsonl.Result) (err error) {
	defer close(out)
	if r.cfg.Batch.Journal == "" {
		return &Error{Code: ExitConfig, Err: errNoJournal}
	}
	if os.Getenv("GOGC") == "" {
		// Collecting streams gigabytes of answers through a live heap of
		// a few tens of MB (the encoders, the lines' table): a heap goal
		// of 1.6 times the live heap instead of twice keeps the peak RSS
		// of 200,000 lines at about 90 MB, not 127.
		defer debug.SetGCPercent(debug.SetGCPercent(batchGCPercent))
	}
	journal, err := batchapi.OpenJournal(r.cfg.Batch.Journal)
	if err != nil {
		return &Error{Code: ExitConfig, Err: err}
	}
	defer journal.Close()
	api := batchapi.New(batchapi.Config{BaseURL: r.cfg.BaseURL, Key: r.cfg.Key, Timeout: r.cfg.Timeout, Retry: r.retry, Clock: r.cfg.Clock, Log: r.cfg.Log})
	var cl *claims
	if r.cfg.Batch.Resume {
		if err := api.ResolveCreates(ctx, r.stop.signal.Done(), journal, r.cfg.Clock.Now()); err != nil {
			return &Error{Code: ExitConfig, Err: err}
		}
		var skipped []string
		cl, skipped, err = loadClaims(journal.Path(), r.cfg.Clock.Now())
		for _, msg := range skipped {
			r.cfg.Log.Warn(msg)
		}
		if err != nil {
			return &Error{Code: ExitConfig, Err: err}
		}
	}
	t, err := newTracker(r.cfg.Batch.TempDir)
	if err != nil {
		return &Error{Code: ExitFailed, Err: err}
	}
	defer t.close()

	s := newSubmitter(r, t, api, journal, cl)
	// Submitted batches wait in the poller, which takes every batch
	// handed to it at once: the submitter never waits for it long.
	toPoll := make(chan *tbatch)
	// Ended batches, one at a time: the collector takes each in turn.
	toCollect := make(chan *tbatch)
	// What collecting a batch sends back to the submitter: lines to submit
	// again. The submitter reads it while it works.
	back := make(chan collected)
	subDone := make(chan struct{})

	g, gctx := errgroup.WithContext(ctx)
	var producers sync.WaitGroup
	producers.Add(3)
	g.Go(func() error {
		defer producers.Done()
		defer close(subDone)
		return s.run(gctx, in, toPoll, back)
	})
	g.Go(func() error {
		defer producers.Done()
		return r.pollBatches(gctx, api, toPoll, toCollect)
	})
	g.Go(func() error {
		defer producers.Done()
		return r.collectBatches(gctx, api, t, journal, toCollect, back, subDone)
	})
	g.Go(func() error {
		producers.Wait()
		t.finish()
		return nil
	})
	g.Go(func() error { return r.writeBatchResults(gctx, t, out) })
	err = g.Wait()
	if err == nil && r.stop.signal.Err() != nil {
		r.sayHowToCollect(t, journal.Path())
	}
	return err
}

// writeBatchResults sends each line's result to out once it has one, in
// input order unless --unordered. Once no more results will come, the
// lines without one get an interrupted result that names their batch.
func (r *runner) writeBatchResults(ctx context.Context, t *tracker, out chan<- *jsonl.Result) error {
	next := int32(0) // ordered: the slot whose result is written next
	var offs []int64
	var seqs []int32
	for {
		t.mu.Lock()
		offs, seqs = offs[:0], seqs[:0]
		if r.cfg.Unordered {
			for _, s := range t.ready {
				offs = append(offs, t.slots[s].res)
				seqs = append(seqs, s)
			}
			t.ready = t.ready[:0]
		} else {
			t.ready = t.ready[:0]
			for int(next) < len(t.slots) && t.slots[next].res >= 0 && len(offs) < 1024 {
				offs = append(offs, t.slots[next].res)
				seqs = append(seqs, next)
				next++
			}
		}
		final, n := t.final, int32(len(t.slots))
		t.mu.Unlock()
		for _, off := range offs {
			head, _, err := t.results.read(off, false)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			res, err := parseResult(head)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			if err := send(ctx, out, res); err != nil {
				return err
			}
		}
		if r.cfg.Unordered {
			for _, s := range seqs {
				t.mu.Lock()
				t.slots[s].res = written
				t.mu.Unlock()
			}
		}
		if len(offs) > 0 {
			continue
		}
		if final {
			return r.writeUnfinished(ctx, t, next, n, out)
		}
		select {
		case <-t.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writeUnfinished writes a result for each slot from next on that has none
// when no more will come: the run was interrupted, or stopped.
func (r *runner) writeUnfinished(ctx context.Context, t *tracker, next, n int32, out chan<- *jsonl.Result) error {
	if r.cfg.Unordered {
		next = 0
	}
	for s := next; s < n; s++ {
		sl := t.slot(s)
		if sl.res == written {
			continue
		}
		var res *jsonl.Result
		if sl.res >= 0 {
			head, _, err := t.results.read(sl.res, false)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			if res, err = parseResult(head); err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
		} else {
			rec, _, err := t.record(s, false)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			res = r.unfinishedResult(t, rec, sl)
		}
		if err := send(ctx, out, res); err != nil {
			return err
		}
	}
	return nil
}

// unfinishedResult is the result of a line whose batch was not collected.
func (r *runner) unfinishedResult(t *tracker, rec lineRecord, sl slot) *jsonl.Result {
	req := &jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}
	if sl.batch < 0 {
		why := r.stop.stopped()
		if why == nil {
			why = interrupted
		}
		res := errorResult(req, why.typ, fmt.Sprintf("line %d: %s", rec.Line, why.msg), why.status)
		return res
	}
	t.mu.Lock()
	b := t.batches[sl.batch]
	t.mu.Unlock()
	res := errorResult(req, jsonl.ErrInterrupted,
		fmt.Sprintf("line %d: not collected: batch %s is still running; run the same command again with --resume to collect it", rec.Line, b.id), 0)
	res.Attempts = int(sl.tries)
	res.BatchID = b.id
	return res
}

// sayHowToCollect tells, after an interrupt, which batches still run and
// how to collect them.
func (r *runner) sayHowToCollect(t *tracker, journal string) {
	t.mu.Lock()
	running := map[int32]bool{}
	lines := 0
	for _, sl := range t.slots {
		if !sl.hasResult() && sl.batch >= 0 {
			running[sl.batch] = true
			lines++
		}
	}
	var ids []string
	for i, b := range t.batches {
		if running[int32(i)] {
			ids = append(ids, b.id)
		}
	}
	t.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	shown := ids
	if len(shown) > 5 {
		shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(ids)-5))
	}
	r.cfg.Log.Warn(fmt.Sprintf("%d lines are in %d batches still running (%s): they are paid for and keep running, and are recorded in %s; "+
		"to collect them without submitting again, run the same command with --resume OUT (the file holding this run's results)",
		lines, len(ids), strings.Join(shown, ", "), journal))
}
