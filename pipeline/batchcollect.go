// batchcollect.go is one file of more than 500 lines because collecting an
// ended batch is one protocol on one collector's state: the batch's
// outcome, its two files streamed in order, each line's settlement, retry
// or result, and the journal record that closes it. Split, the order its
// steps must keep (a file's lines in order, settled before journalled)
// would be spread over files.

package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/jsonl"
)

// errStoreLost stops collecting a batch when the shared state cannot be
// written: see collector.storeLost.
var errStoreLost = errors.New(storeFailedMsg)

// collected is what collecting a batch sends back to the submitter.
type collected struct {
	b          *tbatch
	retry      []bline // lines to submit again
	tokenLimit string  // the API's message, if it refused b for the enqueued-token limit
}

// collectBatches is the collect stage of --via batch: it collects each
// ended batch from in, one at a time, sends its lines' results to the
// ordered writer on results, and what is to be submitted again back to
// the submitter, which takes it until back is closed. It closes back and
// results once in is closed.
func (r *runner) collectBatches(ctx context.Context, br *batchRun, in <-chan *tbatch, back chan<- collected, results chan<- []done) error {
	defer close(results)
	defer close(back)
	api, j := br.api, br.journal
	for {
		var b *tbatch
		select {
		case b = <-in:
			if b == nil {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		c := newCollector(r, br, b, results)
		res, err := c.collect(ctx, j)
		if err != nil {
			return err
		}
		again := len(res.retry) > 0
		select {
		case back <- res:
		case <-ctx.Done():
			return ctx.Err()
		}
		// Collected and journalled, the batch needs its input file no
		// more, unless it was refused for the enqueued-token limit: then
		// it is created again from it, here or by --resume. One whose
		// lines go again keeps it until their follow-up is made (the
		// submitter deletes it): a lost journal is rebuilt from it.
		if res.tokenLimit == "" && b.lost == nil && c.broken == nil && !again {
			r.deleteInput(ctx, api, b)
		}
	}
}

// deleteInput deletes the input file of b, which has ended and been
// collected: it only fills the user's file storage now. The output and
// error files hold what was paid for, and stay. It is one try, best
// effort: a failure leaves the file, and says so with --verbose.
func (r *runner) deleteInput(ctx context.Context, api *batchapi.Client, b *tbatch) {
	if b.inputFile == "" {
		return
	}
	err := api.DeleteFile(ctx, b.inputFile)
	if err == nil {
		return
	}
	f := api.Failure(err)
	if f.Status == http.StatusNotFound {
		return // deleted when a run before collected the batch
	}
	r.cfg.Log.Info("input file not deleted", "file", b.inputFile, "batch", b.id, "error", f.Msg)
}

// collector collects one batch.
type collector struct {
	r        *runner
	api      *batchapi.Client
	br       *batchRun
	b        *tbatch
	endpoint string             // b's: every line of a batch goes to its one endpoint
	price    *budget.ModelPrice // of b's model, which every line of b asks; nil: unknown
	retry    []bline
	settle   []budget.Settlement
	// pending are the answers whose settlements wait in settle, by their
	// line in b.lines: written only once those reach the ledger, so that
	// an answer on stdout (which --resume counts as done) is always paid
	// for there.
	pending []pendingAnswer
	// done are the results for the ordered writer, sent to it on results
	// by deliver.
	done    []done
	results chan<- []done
	lines   int   // results read
	broken  error // a file could not be read to its end
	// seen are the lines an answer or a failure was read for, this run's
	// by their index in b.lines and others by custom_id: the first counts,
	// and the repeats (an output file that gives a line twice) are only
	// counted.
	seen        []bool
	seenForeign map[string]bool
	repeats     int
	// foreign counts the lines whose custom_id gptbatch did not write,
	// firstForeign the first of them: said once, when the batch is
	// collected, however many lines a foreign file has.
	foreign      int
	firstForeign string
	// lost is the failure of the shared state that stopped collecting:
	// what was not settled is left to --resume.
	lost    error
	skipped int // settlements an earlier run made (b.settled) and this one skipped
	started time.Time
	kr      cache.Keyer // keys the answers kept in the response cache
}

// pendingAnswer is an answer whose settlement waits: its line in b.lines
// and its result.
type pendingAnswer struct {
	i   int32
	res *jsonl.Result
}

// newCollector is the collector of batch b, which sends its results on
// results.
func newCollector(r *runner, br *batchRun, b *tbatch, results chan<- []done) *collector {
	b.byLine = nil
	if !slices.IsSortedFunc(b.lines, func(x, y bline) int { return cmp.Compare(x.line, y.line) }) {
		b.byLine = make([]int32, len(b.lines))
		for i := range b.byLine {
			b.byLine[i] = int32(i)
		}
		slices.SortFunc(b.byLine, func(x, y int32) int { return cmp.Compare(b.lines[x].line, b.lines[y].line) })
	}
	price, _ := r.cfg.Prices.Lookup(b.model)
	return &collector{
		r: r, api: br.api, br: br, b: b, endpoint: endpointOf(b.endpoint), price: price, results: results,
		seen: make([]bool, len(b.lines)), seenForeign: map[string]bool{},
	}
}

// collect turns an ended batch into its lines' results: the answers and
// errors of its output and error files, or the reason it failed. It
// settles each answer in the day's budget and the ledger, once: a batch
// the journal says was collected already counts nothing again.
func (c *collector) collect(ctx context.Context, j *batchapi.Journal) (collected, error) {
	r, b := c.r, c.b
	c.started = time.Now()
	out := collected{b: b}
	fb := b.final
	switch {
	case b.lost != nil:
		for i := range b.lines {
			if err := c.again(int32(i), jsonl.ErrAPI, "batch "+b.id+" could not be retrieved: "+b.lost.Error(), 0); err != nil {
				return out, err
			}
		}
	case fb.Status == "failed":
		if msg, ok := tokenLimit(fb); ok {
			// It ran nothing: it is over, and gives back its
			// reservation (journalled first: a crash between the two
			// keeps the reservation to the day's end, never gives it
			// back twice). Submitting its file again reserves again.
			if !b.collected {
				jerr := c.journalCollected(j)
				b.collected = true
				if jerr != nil {
					// Not journalled, it keeps its reservation:
					// --resume gives it back when it records it.
					r.journalFailed(fmt.Errorf("batch %s was refused and could not be journalled as over: %w", b.id, jerr))
				} else if err := releaseDay(ctx, r, b.est, b.day, b.submitted); err != nil {
					return out, err
				}
			}
			out.tokenLimit = msg
			return out, nil
		}
		if err := c.failedValidation(); err != nil {
			return out, err
		}
	default:
		for _, f := range []*string{fb.OutputFileID, fb.ErrorFileID} {
			if f != nil && *f != "" {
				if err := c.readFile(ctx, *f); errors.Is(err, errStoreLost) {
					break
				} else if err != nil {
					return out, err
				}
			}
		}
		// Lines in neither file: submitted again, unless someone
		// cancelled the batch on purpose, or the files could not be read.
		for i := range b.lines {
			seq := int32(i)
			// A line read in a file has its result, is pending or goes
			// again.
			if c.seen[seq] {
				continue
			}
			if c.lost != nil {
				if err := c.fail(seq, jsonl.ErrInterrupted, "not collected: "+storeFailedMsg+"; the same command with --resume collects it", 0); err != nil {
					return out, err
				}
				continue
			}
			if c.broken != nil {
				if err := c.fail(seq, jsonl.ErrNetwork, "not collected: "+c.broken.Error()+"; run the same command again with --resume to collect it", 0); err != nil {
					return out, err
				}
				continue
			}
			if fb.Status == "cancelled" && !b.claimed {
				if err := c.fail(seq, jsonl.ErrInterrupted, "not answered: batch "+b.id+" was cancelled", 0); err != nil {
					return out, err
				}
				continue
			}
			if err := c.again(seq, jsonl.ErrServer, "missing from the output of batch "+b.id+" ("+fb.Status+")", 0); err != nil {
				return out, err
			}
		}
	}
	if !b.collected && c.broken == nil && c.lost == nil {
		// The reservation goes back in the same update as the batch's
		// last results (add keeps the last back), so that a run stopped
		// between two updates has either settled both or neither.
		if rel, ok := release(r, b.est, b.day, b.submitted); ok {
			c.settle = append(c.settle, rel)
		}
	}
	if err := c.flush(ctx); err != nil && !errors.Is(err, errStoreLost) {
		return out, err
	}
	if !b.collected && c.broken == nil && c.lost == nil {
		if err := c.journalCollected(j); err != nil {
			// Its results are settled and written: --resume, which
			// counts the ledger's entries of it, settles none twice.
			r.journalFailed(fmt.Errorf("batch %s was collected and could not be journalled as collected: %w", b.id, err))
		}
	}
	if c.foreign > 0 {
		others := ""
		if c.foreign > 1 {
			others = ", and others"
		}
		r.cfg.Log.Warn(fmt.Sprintf("batch %s: %s of its results answer none of its lines: custom_id %q, which gptbatch did not write%s",
			b.id, Count(c.foreign, "line", "lines"), c.firstForeign, others))
	}
	if c.repeats > 0 {
		r.cfg.Log.Warn(fmt.Sprintf("batch %s: its output and error files gave %d more answers for lines answered already; the first answer of each line counts, the others are neither charged nor written", b.id, c.repeats))
	}
	if c.lines > 0 {
		secs := time.Since(c.started).Seconds()
		r.cfg.Log.Info("batch collected", "batch", b.id, "results", c.lines, "seconds", strconv.FormatFloat(secs, 'f', 3, 64))
	}
	out.retry = c.retry
	return out, nil
}

// journalCollected records that b's results are settled.
func (c *collector) journalCollected(j *batchapi.Journal) error {
	fb := c.b.final
	rec := batchapi.JournalRecord{Event: batchapi.EventCollected, Time: c.r.cfg.Clock.Now(), BatchID: c.b.id, Status: fb.Status}
	if c.b.lost != nil {
		rec.Status = "lost"
	}
	if fb.OutputFileID != nil {
		rec.OutputFileID = *fb.OutputFileID
	}
	if fb.ErrorFileID != nil {
		rec.ErrorFileID = *fb.ErrorFileID
	}
	return j.Append(rec)
}

// tokenLimit reports whether a failed batch was refused for the enqueued
// token limit, and the API's message.
func tokenLimit(fb openai.Batch) (string, bool) {
	if fb.Errors == nil {
		return "", false
	}
	for _, e := range fb.Errors.Data {
		if e.Code == "token_limit_exceeded" {
			return e.Message, true
		}
	}
	return "", false
}

// failedValidation gives the lines of a batch that failed validation
// their errors: a line the API names gets its own; the others, if some
// line was named, are submitted again without it, else they get the
// batch's reason.
func (c *collector) failedValidation() error {
	b, fb := c.b, c.b.final
	byLine := map[int]string{}
	var general []string
	if fb.Errors != nil {
		for _, e := range fb.Errors.Data {
			msg := e.Code + ": " + e.Message
			if e.Line != nil && b.byCustom == nil {
				byLine[*e.Line] = msg
			} else {
				general = append(general, msg)
			}
		}
	}
	if len(byLine) == 0 && len(general) == 0 {
		general = append(general, "no reason given")
	}
	for i := range b.lines {
		seq := int32(i)
		if msg, ok := byLine[i+1]; ok {
			if err := c.fail(seq, jsonl.ErrAPI, fmt.Sprintf("batch %s failed validation: line %d of its file: %s", b.id, i+1, msg), http.StatusBadRequest); err != nil {
				return err
			}
			continue
		}
		if len(general) == 0 {
			if err := c.again(seq, jsonl.ErrAPI, "batch "+b.id+" failed validation for other lines", http.StatusBadRequest); err != nil {
				return err
			}
			continue
		}
		if err := c.fail(seq, jsonl.ErrAPI, "batch "+b.id+" failed validation: "+strings.Join(general, "; "), http.StatusBadRequest); err != nil {
			return err
		}
	}
	return nil
}

// readFile streams one output or error file. Its lines are read in
// blocks, parsed on every core and applied in the file's order. A download
// that breaks off goes on where it broke (batchapi.Client.Download); one
// that fails for good leaves the rest of the batch to --resume.
func (c *collector) readFile(ctx context.Context, id string) error {
	// The collect stage fans out inside itself, so it has a group of its
	// own: parsing is most of collecting's time and runs on every core,
	// while applying (settling, in the file's order) is one goroutine's.
	g, gctx := errgroup.WithContext(ctx)
	body, err := c.api.Download(gctx, id)
	if err != nil {
		c.readFailed(id, 0, err)
		return nil
	}
	defer body.Close()
	n := runtime.GOMAXPROCS(0)
	// Parsed blocks on their way to be applied: one a worker.
	parsed := make(chan []lineOutcome, n)
	g.Go(func() error {
		defer close(parsed)
		// Two blocks a worker in the window keep every core busy while
		// the head block is applied.
		return orderedMap(gctx, n, 2*n, body.Blocks, parsed, c.parseBlock, nil)
	})
	done := 0
	var local error // gptbatch's own failure: the batch cannot go on
	g.Go(func() error {
		for outs := range parsed {
			for i := range outs {
				if local = c.apply(gctx, &outs[i]); local != nil {
					return local
				}
				done++
			}
		}
		return nil
	})
	err = g.Wait()
	if local != nil {
		return local
	}
	if err == nil {
		err = body.Err()
	}
	if err != nil {
		c.readFailed(id, done, err)
	}
	return nil
}

// readFailed says that reading the file id failed for good with err after
// done lines: the rest of the batch is left to --resume.
func (c *collector) readFailed(id string, done int, err error) {
	c.broken = fmt.Errorf("reading file %s of batch %s failed after %s: %s", id, c.b.id, Count(done, "line", "lines"), c.api.Failure(err).Msg)
	c.r.cfg.Log.Warn(c.broken.Error())
}

// lineOutcome is what one line of an output or error file comes to.
type lineOutcome struct {
	id      string // its custom_id's line id (batchapi.LineOf), or all of one gptbatch did not write
	seq     int32  // its index in the batch's lines, or -1 for a line not of this run
	foreign bool   // gptbatch did not write its custom_id
	st      budget.Settlement
	res     *jsonl.Result // the line's result; nil if it goes again
	again   bool          // submit it again
	bad     error         // the line is not JSON
	// --schema: how the line is held, and its answer's cost; reask, when
	// the answer did not fit, is what goes in the follow-up instead.
	held  held
	cost  budget.Cost
	reask *batchReask
	// keep is the answer's body as received, for the response cache: set
	// when there is one and the answer is complete (see complete).
	keep      []byte
	keepModel string
	keepCost  int64 // picodollars; negative when its price is unknown
}

// parseBlock parses a block of lines: it may run on any goroutine.
func (c *collector) parseBlock(block []byte) []lineOutcome {
	outs := make([]lineOutcome, 0, bytes.Count(block, []byte{'\n'})+1)
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			block = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		outs = append(outs, c.parseLine(line))
	}
	return outs
}

// apply applies one line's outcome, in the file's order: its settlement,
// its result or its retry.
func (c *collector) apply(ctx context.Context, o *lineOutcome) error {
	c.lines++
	if o.bad != nil {
		c.r.cfg.Log.Warn(fmt.Sprintf("batch %s: a line of its results is not JSON: %v", c.b.id, o.bad))
		return nil
	}
	if c.repeated(o) {
		c.repeats++
		return nil
	}
	if o.foreign {
		if c.foreign == 0 {
			c.firstForeign = o.id
		}
		c.foreign++
	}
	queued, err := c.add(ctx, o.st)
	if err != nil {
		return err
	}
	if o.seq >= 0 && o.held.kind != heldNone && o.st.Entry != nil && o.st.Entry.Status == http.StatusOK {
		c.r.countBatch(o.held, o.reask != nil, queued, o.cost)
	}
	switch {
	case o.seq < 0:
	case o.reask != nil:
		// The re-ask's record, and the result of the answer it follows,
		// which is the line's should the re-ask fail, go on disk.
		last, err := c.br.records.append(o.reask.last, nil)
		if err != nil {
			return err
		}
		o.reask.rec.Held.lastAt = last + 1
		off, err := c.br.records.append(appendRecord(nil, &o.reask.rec), o.reask.body)
		if err != nil {
			return err
		}
		l := c.b.lines[o.seq]
		l.rec = off
		c.retry = append(c.retry, l)
	case o.again:
		c.retry = append(c.retry, c.b.lines[o.seq])
		c.r.stats.Retries.Add(1)
	case queued:
		c.pending = append(c.pending, pendingAnswer{o.seq, o.res})
		return c.keep(ctx, o)
	default:
		if err := c.keep(ctx, o); err != nil {
			return err
		}
		if c.done = append(c.done, done{c.b.lines[o.seq].seq, o.res}); len(c.done) >= 1024 {
			return c.deliver(ctx)
		}
	}
	return nil
}

// repeated reports whether the line of o was answered, or failed, in a
// line read before: the first answer of a line counts. It is decided in
// the files' order, so a run that collects the batch again skips the
// same repeats, and its count of the ledger's entries still matches.
func (c *collector) repeated(o *lineOutcome) bool {
	if o.seq >= 0 {
		if c.seen[o.seq] {
			return true
		}
		c.seen[o.seq] = true
		return false
	}
	if c.seenForeign[o.id] {
		return true
	}
	c.seenForeign[o.id] = true
	return false
}

// parseLine parses one line of an output or error file into the line's
// result, or a retry, and its settlement.
func (c *collector) parseLine(raw []byte) (o lineOutcome) {
	r, b := c.r, c.b
	// Read in one pass, its answer with it, by the decoder that reads the
	// synchronous answers: collection is bound by it.
	endpoint := c.endpoint
	ol, err := readOutputLine(endpoint, raw)
	if err != nil {
		return lineOutcome{seq: -1, bad: err}
	}
	// Then the line its custom_id names, and the line's record, which
	// its item, and so its result, is made of. An answer to none of this
	// run's lines (its input changed since, or gptbatch did not write the
	// custom_id) was paid for all the same: the ledger has it.
	id, n, ours := batchapi.LineOf(ol.customID)
	var rec lineRecord
	if o.seq, rec, err = b.find(c.br, id, n); err != nil {
		return lineOutcome{seq: -1, bad: err}
	}
	o.id, o.foreign = id, !ours
	tries := 1
	if o.seq >= 0 {
		tries = int(b.lines[o.seq].tries)
	}
	it := rec.item(endpoint, tries, r.cfg.Prices, c.price)
	entry := &budget.LedgerEntry{
		Time: r.cfg.Clock.Now(), ID: rec.ID, Line: rec.Line, Model: rec.Model, Attempt: tries,
		Endpoint: endpoint, Via: "batch", BatchID: b.id,
	}
	o.st = budget.Settlement{Sent: true, DayOnly: true, Entry: entry}
	if it.priced {
		var zero budget.Cost
		entry.CostUSD = &zero
	}

	var typ, msg string
	status := 0
	retryable := false
	switch {
	case ol.status == http.StatusOK:
		status = http.StatusOK
		h := rec.Held
		var origOff int64
		orig := func() ([]byte, error) {
			_, body, err := c.br.records.read(origOff, true)
			return body, err
		}
		if o.seq >= 0 && h.kind != heldNone {
			if origOff = h.origAt - 1; h.origAt == 0 {
				origOff = c.b.lines[o.seq].rec
			}
			if it.schema, err = r.heldSchema(h, it.endpoint, orig); err != nil {
				return lineOutcome{seq: -1, bad: err}
			}
		}
		var ans answer
		if ol.answer != nil {
			ans, err = ol.answer.result(it)
		}
		if ol.answer == nil || err != nil || len(ans.results) == 0 {
			typ, msg = jsonl.ErrServer, "unreadable answer in the batch's output"
			break
		}
		res, u, model := ans.results[0], ans.usage, ans.model
		res.Attempts = tries
		// The Batch API bills at its own prices, whatever tier the answer
		// names (budget.Prices.AnswerPrice: the model it names).
		res.CostUSD = jsonl.UnknownCost()
		if it.priced {
			ans.cost = it.prices.AnswerPrice(it.price, model, budget.TierBatch, u.PromptTokens).Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
			res.CostUSD = jsonl.CostOf(int64(ans.cost))
		}
		cost := ans.cost
		if model != "" {
			entry.Model = model
		}
		entry.Status = status
		entry.PromptTokens, entry.CompletionTokens, entry.CachedTokens = u.PromptTokens, u.CompletionTokens, u.CachedTokens
		o.st.Tokens = u.TotalTokens
		if it.priced {
			entry.CostUSD, o.st.Cost = &cost, cost
		}
		if o.seq >= 0 {
			res.BatchID = b.id
			if it.schema != nil {
				o.held, o.cost = h, cost
				if o.reask = r.checkBatch(it, rec, h, origOff, orig, ans, res); o.reask != nil {
					o.again = true
					return o
				}
			}
			o.res = res
			// Kept only as the answer to the line's request as the input
			// gave it: a follow-up's (--schema) is to another request.
			if r.cache != nil && ans.invalid == nil && h.origAt == 0 {
				if body := responseBody(raw); body != nil && complete(endpoint, body) {
					o.keep, o.keepModel, o.keepCost = body, res.Model, costOf(res.CostUSD)
				}
			}
		}
		return o
	case ol.status != 0:
		status = ol.status
		f := retry.Classify(retry.APIError(status, ol.body), 0, nil, r.cfg.Key, r.cfg.Clock.Now())
		typ, msg, retryable = f.Type, f.Msg, f.Verdict == retry.Retry
	case ol.err != nil && ol.err.Code == "batch_expired":
		typ, msg, retryable = jsonl.ErrServer, "not answered before batch "+b.id+" expired", true
	case ol.err != nil:
		typ, msg = jsonl.ErrAPI, ol.err.Code+": "+ol.err.Message
	default:
		typ, msg, retryable = jsonl.ErrServer, "an empty line in the batch's results", true
	}
	entry.Status, entry.Error = status, typ
	if o.seq < 0 {
		return o
	}
	// Retries count the batches the line failed in, not those that
	// asked an invalid answer again.
	if retryable && tries-rec.Held.reasks <= r.cfg.Retries {
		o.again = true
		return o
	}
	res := errorResult(&jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, typ, fmt.Sprintf("line %d: %s", rec.Line, msg), status)
	res.Attempts = tries
	res.BatchID = b.id
	if last := lastAnswer(c.br.records, rec, tries, typ, "asking again failed: "+msg); last != nil {
		res = last
	}
	o.res = res
	return o
}

// add queues a settlement, and applies the queue when it is long; it
// reports whether st was queued. The last one queued always waits for
// the final flush, with the release of the batch's reservation. Results
// an earlier run settled (the ledger's entries of this batch; they come
// first, as a file does not change) are not settled again.
func (c *collector) add(ctx context.Context, st budget.Settlement) (bool, error) {
	if c.b.collected {
		return false, nil // settled when it was first collected
	}
	if c.skipped < c.b.settled {
		c.skipped++
		return false, nil
	}
	if len(c.settle) >= 1024 {
		if err := c.flush(ctx); err != nil {
			return false, err
		}
	}
	c.settle = append(c.settle, st)
	return true, nil
}

// flush applies the queued settlements, the day's budget and the ledger,
// then hands their answers to the writer. When the shared state cannot
// be written it stops collecting: see storeLost.
func (c *collector) flush(ctx context.Context) error {
	var lost error
	if len(c.settle) > 0 {
		if err := c.r.cfg.Gate.Settle(ctx, c.r.cfg.Clock.Now(), c.settle); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lost = c.storeLost(err)
		} else {
			c.r.counted(c.settle)
			c.settle = c.settle[:0]
		}
	}
	for _, p := range c.pending {
		c.done = append(c.done, done{c.b.lines[p.i].seq, p.res})
	}
	c.pending = c.pending[:0]
	if err := c.deliver(ctx); err != nil {
		return err
	}
	return lost
}

// deliver sends the results so far to the ordered writer.
func (c *collector) deliver(ctx context.Context) error {
	if len(c.done) == 0 {
		return nil
	}
	done := c.done
	c.done = nil // the writer's now
	return send(ctx, c.results, done)
}

// counted adds the answers of settlements that reached the ledger to the
// run's figures: the summary says what was settled, not what was read,
// as a line may be read more than once (a download started over, a batch
// collected before, an output that repeats a line).
func (r *runner) counted(sts []budget.Settlement) {
	for _, st := range sts {
		e := st.Entry
		if e == nil || e.Status != http.StatusOK {
			continue
		}
		r.stats.PromptTokens.Add(e.PromptTokens)
		r.stats.CompletionTokens.Add(e.CompletionTokens)
		r.stats.CachedTokens.Add(e.CachedTokens)
		if e.CostUSD != nil {
			r.stats.Cost.Add(int64(*e.CostUSD))
		} else {
			r.stats.Unpriced.Add(1)
		}
	}
}

// storeLost stops collecting because the shared state failed: the run
// stops sending and will exit 1, and the answers whose settlements did
// not reach the ledger are withheld. Their lines, and the lines not yet
// read, are interrupted, so that --resume, which counts the ledger's
// entries of the batch, collects them again and settles the rest. Not
// tried again: the state may have been written and only the ledger not.
func (c *collector) storeLost(err error) error {
	c.r.storeFailed(err)
	c.lost = err
	c.settle = c.settle[:0]
	for _, p := range c.pending {
		if err := c.fail(p.i, jsonl.ErrInterrupted, "answered in batch "+c.b.id+", but not recorded: "+storeFailedMsg+"; the same command with --resume collects it again", 0); err != nil {
			return err
		}
	}
	c.pending = c.pending[:0]
	return errStoreLost
}

// again submits a line again, if it has tries left; else it gets the
// error.
func (c *collector) again(i int32, typ, msg string, status int) error {
	l := c.b.lines[i]
	if int(l.tries) <= c.r.cfg.Retries {
		c.retry = append(c.retry, l)
		c.r.stats.Retries.Add(1)
		return nil
	}
	return c.fail(i, typ, msg, status)
}

// fail gives line i of the batch its error result.
func (c *collector) fail(i int32, typ, msg string, status int) error {
	l := c.b.lines[i]
	rec, _, err := c.br.record(l.rec, false)
	if err != nil {
		return err
	}
	res := errorResult(&jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, typ, fmt.Sprintf("line %d: %s", rec.Line, msg), status)
	res.Attempts = int(l.tries)
	res.BatchID = c.b.id
	if last := lastAnswer(c.br.records, rec, res.Attempts, typ, "asking again failed: "+msg); last != nil {
		res = last
	}
	c.done = append(c.done, done{l.seq, res})
	return nil
}

// keep hands the answer of o, if it is one to keep, to the response
// cache's writer, under the key of the line's request as sent: the key a
// synchronous run of the same line looks up. A line whose request cannot
// be read back or keyed is not kept; the batch goes on.
func (c *collector) keep(ctx context.Context, o *lineOutcome) error {
	if o.keep == nil || c.r.cache.off.Load() {
		return nil
	}
	rec, body, err := c.br.record(c.b.lines[o.seq].rec, true)
	if err != nil {
		return nil
	}
	k, err := c.kr.Key(rec.URL, c.r.cfg.BaseURL, body)
	if err != nil {
		return nil
	}
	f := &flight{key: k, endpoint: endpointOf(rec.URL), body: o.keep, model: o.keepModel, cost: o.keepCost}
	o.keep = nil
	return send(ctx, c.r.cache.puts, f)
}

// responseBody is the response body of a line of a batch's output file, as
// received; nil when it has none.
func responseBody(line []byte) []byte {
	var l struct {
		Response *struct {
			Body json.RawMessage `json:"body"`
		} `json:"response"`
	}
	if gojson.Unmarshal(line, &l) != nil || l.Response == nil || len(l.Response.Body) == 0 {
		return nil
	}
	return bytes.Clone(l.Response.Body)
}
