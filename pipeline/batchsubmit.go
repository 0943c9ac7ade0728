// batchsubmit.go is one file of more than 500 lines because the submitter
// is one goroutine's state: lines into batch files, files uploaded and
// made into batches, refused and failed lines coming back to be submitted
// again. Every method here runs on that goroutine and changes that state
// without a lock; in one file, which code may is plain. --resume's claims,
// which also run on it, are a concern of their own (batchresume.go).

package pipeline

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/jsonl"
)

// batchURL is the url of it's line in a batch file; an item with no
// endpoint is a chat completion.
func (it *item) batchURL() string {
	return jsonl.URL(cmp.Or(it.endpoint, jsonl.EndpointChat))
}

// endpointOf is the endpoint of a batch line's url; an unknown one is chat.
func endpointOf(url string) string {
	if e, ok := jsonl.EndpointOf(url); ok {
		return e
	}
	return jsonl.EndpointChat
}

// chunkKey is what every line of one batch file shares: the API takes one
// endpoint and one model a batch.
type chunkKey struct{ url, model string }

// chunk is a batch file being written, or written and waiting to go.
type chunk struct {
	key     chunkKey
	f       *os.File
	w       *bufio.Writer
	lines   []bline
	heads   []byte // the lines' heads (bline.hs)
	journal journalled
	bytes   int64
	tokens  int64 // input tokens, as the API counts what it enqueues
	est     budget.Estimate
	day     string // the day est was reserved in
	// after is the collected batch whose lines this file asks again:
	// its input file is kept until every file of them is a batch.
	after *tbatch
}

// journalled is what the journal records of a file's lines, kept with it
// until its batch is journalled: their content hashes, one after the
// other, and the earlier tries of the few that have any.
type journalled struct {
	hashes []byte
	tries  map[int]json.RawMessage // by index in the file
}

// add adds what the journal records of the next line of the file.
func (j *journalled) add(hash string, tries json.RawMessage) {
	if tries != nil {
		if j.tries == nil {
			j.tries = map[int]json.RawMessage{}
		}
		j.tries[len(j.hashes)/batchapi.LineHashLen] = tries
	}
	j.hashes = append(j.hashes, hash...)
}

// refused is a batch the API refused for the enqueued-token limit, waiting
// to be created again from the same file.
type refused struct {
	b       *tbatch
	msg     string
	retryAt time.Time // zero: once none of this run's batches of its model runs
}

// submitter turns lines into batches: it writes each line's record and
// puts it in a batch file of its endpoint and model, submits each file
// when it is full (or the input ends), journals each batch before anyone
// waits for it, and submits again what collecting sends back.
type submitter struct {
	r       *runner
	br      *batchRun
	api     *batchapi.Client
	journal *batchapi.Journal
	claims  *claims
	claimed map[int32]*tbatch    // tracked batches by their index in claims
	checked map[int32]batchCheck // what the API said of journalled batches, by their index in claims

	runID  string
	chunks int
	lines  int32 // the lines taken so far: the next one's seq
	// batches are the run's batches, created or claimed, in that order;
	// those not over when the submitter ends are still running.
	batches []*tbatch
	heads   int // bytes of heads in memory (bline.hs)
	open    map[chunkKey]*chunk
	ready   []*chunk   // written, to be submitted in order
	held    []*refused // refused for the enqueued-token limit
	// running is the input tokens of this run's batches of each model
	// not yet collected: what they may have enqueued.
	running     map[string]int64
	outstanding int // batches handed to the poller, not yet back
	// followUps are, for a collected batch some of whose lines go again,
	// the files of them not yet made batches: until none is left, its
	// input file is what `batches recover` rebuilds it from, should the
	// run be killed and the journal lost.
	followUps map[*tbatch]int
	inDone    bool
	timer     <-chan time.Time // a wait for the day's budget or a back-off
	waitUntil time.Time
	warned    budget.Reason
	toPoll    chan<- *tbatch
	unsent    chan<- []done
}

func newSubmitter(r *runner, br *batchRun) *submitter {
	return &submitter{
		r: r, br: br, api: br.api, journal: br.journal, claims: br.claims, claimed: map[int32]*tbatch{}, checked: map[int32]batchCheck{},
		runID: batchapi.NewRunID(r.cfg.Clock.Now()), open: map[chunkKey]*chunk{}, running: map[string]int64{},
		followUps: map[*tbatch]int{},
	}
}

// submitBatches is the submit stage of --via batch: it reads the lines
// from in, submits them in batches, and hands each batch to the poller on
// toPoll; lines no batch will answer (invalid, refused by a limit, not
// sent) get their result on unsent. What collecting a batch sends back on
// back (lines to submit again, a batch refused for the enqueued-token
// limit) it submits again. It closes toPoll once every line is in a
// batch that was collected, or has its result; on a signal at once,
// leaving the submitted batches running, and then gives the lines still
// coming their interrupted results. Once in and back are both closed, it
// gives the lines of the batches not collected their result, which says
// how to collect them, and closes unsent.
func (r *runner) submitBatches(ctx context.Context, br *batchRun, in <-chan *item, toPoll chan<- *tbatch, unsent chan<- []done, back <-chan collected) error {
	defer close(unsent)
	s := newSubmitter(r, br)
	s.toPoll, s.unsent = toPoll, unsent
	err := s.run(ctx, in, back)
	s.discard()
	close(toPoll)
	if err != nil {
		return err
	}
	// The lines read after a signal, and what the batches being collected
	// send back, which is not submitted again.
	owed := map[*tbatch][]bline{}
	for in != nil || back != nil {
		select {
		case it, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			if err := s.add(ctx, it); err != nil {
				return err
			}
		case c, ok := <-back:
			if !ok {
				back = nil
				continue
			}
			c.b.over = true
			if c.tokenLimit != "" {
				owed[c.b] = c.b.lines
			} else if len(c.retry) > 0 {
				owed[c.b] = c.retry
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, b := range s.batches {
		if !b.over {
			owed[b] = b.lines
		}
	}
	return s.stillRunning(ctx, owed)
}

// stillRunning gives the lines owed, which no more results will come
// for, their result: not collected, as their batch is still running, and
// how to collect it; after an interrupt, it says which batches still run.
func (s *submitter) stillRunning(ctx context.Context, owed map[*tbatch][]bline) error {
	var ids []string
	n := 0
	for _, b := range s.batches {
		lines := owed[b]
		if len(lines) == 0 {
			continue
		}
		ids = append(ids, b.id)
		n += len(lines)
		res := make([]done, 0, len(lines))
		for _, l := range lines {
			rec, _, err := s.br.record(l.rec, false)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			r := errorResult(&jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, jsonl.ErrInterrupted,
				fmt.Sprintf("line %d: not collected: batch %s is still running; run the same command again with --resume to collect it", rec.Line, b.id), 0)
			r.Attempts = int(l.tries)
			r.BatchID = b.id
			res = append(res, done{l.seq, r})
		}
		if err := send(ctx, s.unsent, res); err != nil {
			return err
		}
	}
	if len(ids) > 0 && s.r.stop.signal.Err() != nil {
		shown := ids
		if len(shown) > 5 {
			shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(ids)-5))
		}
		s.r.cfg.Log.Warn(fmt.Sprintf("%s in %s still running (%s): they are paid for and keep running, and are recorded in %s; "+
			"to collect them without submitting again, run the same command with --resume OUT (the file holding this run's results)",
			Count(n, "line is", "lines are"), Count(len(ids), "batch", "batches"), strings.Join(shown, ", "), s.r.cfg.Batch.Journal))
	}
	return nil
}

// run is the submitter's loop. It ends when every line is in a batch that
// was collected, or has its result; on a signal it ends at once, leaving
// the submitted batches running.
func (s *submitter) run(ctx context.Context, in <-chan *item, back <-chan collected) error {
	for {
		if err := s.submitReady(ctx); err != nil {
			return err
		}
		if s.r.stop.signal.Err() != nil {
			return s.abandon(ctx)
		}
		if s.inDone && s.outstanding == 0 && len(s.ready) == 0 && len(s.held) == 0 {
			return nil
		}
		// While files wait to be submitted, read no more lines.
		inC := in
		if s.inDone || len(s.ready) > 0 {
			inC = nil
		}
		select {
		case it, ok := <-inC:
			if !ok {
				if err := s.endInput(ctx); err != nil {
					return err
				}
				continue
			}
			if err := s.add(ctx, it); err != nil {
				return err
			}
		case c, ok := <-back:
			if !ok {
				// The collect stage ended first: it failed, or the run
				// is ending, and ctx ends with it (its error is the
				// run's).
				back = nil
				continue
			}
			s.outstanding--
			if err := s.collected(ctx, c); err != nil {
				return err
			}
		case <-s.timer:
			s.timer, s.waitUntil = nil, time.Time{}
		case <-s.r.stop.signal.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add takes one line: its result if it has one already, else its line
// of a batch file and its hash, from batchapi in one call (FirstLine),
// its record spooled (recordOf, addRecord), and its place in a claimed
// batch or in a batch file.
func (s *submitter) add(ctx context.Context, it *item) error {
	r := s.r
	seq := s.lines
	s.lines++
	if it.result == nil && it.cached != nil && r.stop.stopped() == nil {
		// The response cache answers it: it goes in no batch.
		if res := r.serve(ctx, it); res != nil {
			return s.result(ctx, seq, res)
		}
		it.cached = nil // a stored answer that cannot be read: sent
	}
	if it.result == nil {
		if why := r.stop.stopped(); why != nil {
			it.result = why.result(it.req)
		} else if err := dayCheck(r.cfg.Gate.Limits(), it.est); err != nil {
			it.result = errorResult(it.req, jsonl.ErrBudget, refusal(it, "not sent", err), 0)
		}
	}
	if it.result != nil {
		return s.result(ctx, seq, it.result)
	}
	url := it.batchURL()
	line, hash := batchapi.FirstLine(it.req.Line, url, it.body)
	if max := r.cfg.Batch.bytes(); int64(len(line)) > max {
		msg := fmt.Sprintf("line %d: %d bytes as a batch line, more than a batch file may hold (%d)", it.req.Line, len(line), max)
		return s.result(ctx, seq, errorResult(it.req, jsonl.ErrInvalidInput, msg, 0))
	}
	var cl claim
	claimed := false
	if s.claims != nil {
		if c, ok := s.claims.take(hash); ok {
			switch s.check(ctx, c.batch) {
			case batchKnown:
				cl, claimed = c, true
			case batchRefused:
				return s.result(ctx, seq, r.stop.stopped().result(it.req))
			}
			// batchResubmit: as a line never sent.
		}
	}
	rec := recordOf(it, url, hash, &r.cfg)
	before := 0 // batches the line was in before the one claimed
	if claimed {
		before = rec.Held.resume(cl.tries)
	}
	off, head, err := s.br.addRecord(&rec, it.body)
	if err != nil {
		return &Error{Code: ExitFailed, Err: err}
	}
	l := bline{seq: seq, line: int32(it.req.Line), rec: off}
	if claimed {
		s.claim(l, head, cl, before)
		return nil
	}
	return s.toChunk(chunkKey{url, it.model}, l, &rec, head, line, s.open, nil)
}

// head adds h, line l's head (appendHead), to heads, the heads of the
// lines before l in its batch, unless the run holds headsMax of them, or
// the line before l has none: then l's is read from its record.
func (s *submitter) head(heads []byte, lines []bline, l *bline, h []byte) []byte {
	l.hs = -1
	if n := len(lines); n > 0 && lines[n-1].hs < 0 || s.heads+len(h) > headsMax || len(heads)+len(h) > math.MaxInt32 {
		return heads
	}
	s.heads += len(h)
	l.hs = int32(len(heads))
	return append(heads, h...)
}

// dayCheck says whether e can ever be admitted by the day's limits: the
// Batch API's lines do not count against the minute limits.
func dayCheck(l budget.Limits, e budget.Estimate) error {
	return budget.CheckLimits(budget.Limits{TPD: l.TPD, DailyCost: l.DailyCost}, e)
}

// toChunk adds line l, of record rec and head h, to the open file of its
// key in open, as line, first closing that file if the line would take it
// past a limit: lines, bytes, the enqueued-token limit, or what the day
// allows. A file it opens for the lines of a collected batch asked again
// (after; nil for new lines) is counted in followUps as it is opened, so
// that after's input file outlives every file of them, however many they
// fill.
func (s *submitter) toChunk(key chunkKey, l bline, rec *lineRecord, h, line []byte, open map[chunkKey]*chunk, after *tbatch) error {
	o := s.r.cfg.Batch
	day := s.r.cfg.Gate.Limits()
	prompt := rec.Prompt
	est := budget.Estimate{Tokens: rec.EstTokens, Cost: rec.EstCost, CostUnknown: !rec.Priced}
	c := open[key]
	if c != nil && (len(c.lines)+1 > o.lines() || c.bytes+int64(len(line)) > o.bytes() ||
		(o.QueueTokens > 0 && c.tokens+prompt > o.QueueTokens) ||
		(day.TPD > 0 && c.est.Tokens+est.Tokens > day.TPD) ||
		(day.DailyCost > 0 && c.est.Cost+est.Cost > day.DailyCost)) {
		if err := s.closeChunk(c, open); err != nil {
			return err
		}
		c = nil
	}
	if c == nil {
		f, err := os.CreateTemp(o.TempDir, "gptbatch-batch-*.jsonl")
		if err != nil {
			return &Error{Code: ExitFailed, Err: fmt.Errorf("batch file: %w", err)}
		}
		c = &chunk{key: key, f: f, w: bufio.NewWriterSize(f, 256<<10), after: after}
		open[key] = c
		if after != nil {
			s.followUps[after]++
		}
	}
	if _, err := c.w.Write(line); err != nil {
		return &Error{Code: ExitFailed, Err: fmt.Errorf("batch file: %w", err)}
	}
	c.heads = s.head(c.heads, c.lines, &l, h)
	c.lines = append(c.lines, l)
	c.journal.add(rec.Hash, rec.Held.journal(int(l.tries)).JSON())
	c.bytes += int64(len(line))
	c.tokens += prompt
	c.est.Tokens += est.Tokens
	c.est.Cost += est.Cost
	c.est.CostUnknown = c.est.CostUnknown || est.CostUnknown
	return nil
}

// closeChunk finishes a file and queues it to be submitted.
func (s *submitter) closeChunk(c *chunk, open map[chunkKey]*chunk) error {
	delete(open, c.key)
	if err := c.w.Flush(); err != nil {
		return &Error{Code: ExitFailed, Err: fmt.Errorf("batch file: %w", err)}
	}
	s.ready = append(s.ready, c)
	return nil
}

// endInput closes every open file, and hands the claimed batches to the
// poller: only now is every line they hold for this run known.
func (s *submitter) endInput(ctx context.Context) error {
	s.inDone = true
	for _, c := range sortedChunks(s.open) {
		if err := s.closeChunk(c, s.open); err != nil {
			return err
		}
	}
	if err := s.settledBefore(ctx); err != nil {
		return err
	}
	for i := range s.claims.count() {
		b := s.claimed[int32(i)]
		if b == nil {
			continue
		}
		s.running[b.model] += b.tokens
		if err := s.hand(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// sortedChunks are the open files in the order they were opened, so that
// a run submits the same way every time.
func sortedChunks(open map[chunkKey]*chunk) []*chunk {
	cs := make([]*chunk, 0, len(open))
	for _, c := range open {
		cs = append(cs, c)
	}
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].lines[0].seq < cs[j-1].lines[0].seq; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
	return cs
}

// register adds b to the run's batches.
func (s *submitter) register(b *tbatch) {
	s.batches = append(s.batches, b)
}

// submitReady submits what waits, oldest first, as far as the limits let
// it: batches refused for the enqueued-token limit, then files.
func (s *submitter) submitReady(ctx context.Context) error {
	r := s.r
	if !s.waitUntil.IsZero() || r.stop.signal.Err() != nil {
		return nil // a wait is under way, or abandon's turn
	}
	now := r.cfg.Clock.Now()
	for i := 0; i < len(s.held); i++ {
		h := s.held[i]
		if why := r.stop.stopped(); why != nil {
			s.held = append(s.held[:i], s.held[i+1:]...)
			i--
			if err := s.giveUp(ctx, h.b, h.b.lines, why.typ, "not sent: "+h.msg, why.status); err != nil {
				return err
			}
			continue
		}
		if s.running[h.b.model] > 0 || now.Before(h.retryAt) {
			continue
		}
		// The refused batch gave back its reservation: the new one
		// holds one of its own, which its collection settles.
		day, ok, err := s.reserve(ctx, h.b.est, len(h.b.lines))
		if err != nil {
			return err
		}
		if !ok {
			if r.stop.stopped() != nil {
				i-- // given up on at once, above
				continue
			}
			return nil // a wait is set
		}
		s.held = append(s.held[:i], s.held[i+1:]...)
		i--
		nb := *h.b
		nb.status, nb.answered, nb.final, nb.lost = "", 0, openai.Batch{}, nil
		nb.claimed, nb.collected, nb.over, nb.settled, nb.day = false, false, false, 0, day
		if err := s.create(ctx, &nb, nil, false); err != nil {
			return err
		}
	}
	for len(s.ready) > 0 {
		c := s.ready[0]
		if why := r.stop.stopped(); why != nil {
			s.ready = s.ready[1:]
			if err := s.failChunk(ctx, c, why.typ, why.msg, why.status); err != nil {
				return err
			}
			continue
		}
		q := r.cfg.Batch.QueueTokens
		if q > 0 && s.running[c.key.model] > 0 && s.running[c.key.model]+c.tokens > q {
			return nil // until one of this run's batches of the model ends
		}
		day, ok, err := s.reserve(ctx, c.est, len(c.lines))
		if err != nil {
			return err
		}
		if !ok {
			if r.stop.stopped() != nil {
				continue // its lines get their result at once, above
			}
			return nil // a wait is set
		}
		c.day = day
		s.ready = s.ready[1:]
		if err := s.submit(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// reserve reserves the estimate est of a batch of lines lines of the
// day's tokens and dollars, and says the day it was reserved in. It
// reports false when the day's limits hold it back: then a wait is set,
// or with --on-limit fail the run stops sending.
func (s *submitter) reserve(ctx context.Context, est budget.Estimate, lines int) (string, bool, error) {
	r := s.r
	now := r.cfg.Clock.Now()
	n, day, wait, why, err := r.cfg.Gate.ReserveDay(ctx, now, []budget.Estimate{est})
	if err != nil {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		// The lines not submitted get their result, as on the
		// synchronous route.
		r.storeFailed(err)
		return "", false, nil
	}
	if n == 1 {
		s.warned = ""
		return day, true, nil
	}
	if r.cfg.OnLimit == Fail {
		msg := fmt.Sprintf("stopped by the %s (--on-limit fail)", why)
		r.stop.halt(&stopped{typ: jsonl.ErrBudget, msg: "not sent: " + msg, err: &Error{Code: ExitLimit, Err: errors.New(msg)}})
		return "", false, nil
	}
	if s.warned != why {
		s.warned = why
		r.cfg.Log.Warn(fmt.Sprintf("waiting %s for the %s before submitting a batch of %s (--on-limit wait)", wait.Round(time.Second), why, Count(lines, "line", "lines")))
	}
	// Other processes settle meanwhile: look again within a minute.
	s.wait(min(wait, time.Minute))
	return "", false, nil
}

// wait sets the submitter's timer.
func (s *submitter) wait(d time.Duration) {
	s.waitUntil = s.r.cfg.Clock.Now().Add(d)
	s.timer = s.r.cfg.Clock.After(d)
}

// submit makes a batch of a file: uploaded, created and journalled
// (create).
func (s *submitter) submit(ctx context.Context, c *chunk) error {
	s.chunks++
	j := c.journal
	b := &tbatch{endpoint: c.key.url, model: c.key.model, chunk: s.chunks, lines: c.lines, heads: c.heads, journal: &j, est: c.est, day: c.day, tokens: c.tokens}
	file := &batchapi.Upload{Path: c.f.Name(), Name: fmt.Sprintf("gptbatch-%s-%d.jsonl", s.runID, b.chunk), Size: c.bytes}
	err := s.create(ctx, b, file, true)
	c.f.Close()
	os.Remove(c.f.Name())
	if err != nil {
		return err
	}
	if c.after != nil && b.id != "" {
		s.followedUp(ctx, c.after)
	}
	return nil
}

// followedUp notes that one more file of the lines of collected batch
// after going again is a batch, and deletes after's input file once all
// are. One not made (a failure, a signal) keeps it: --resume collects
// after again and makes the follow-up.
func (s *submitter) followedUp(ctx context.Context, after *tbatch) {
	s.followUps[after]--
	if s.followUps[after] > 0 {
		return
	}
	delete(s.followUps, after)
	if ctx.Err() == nil {
		s.r.deleteInput(ctx, s.api, after)
	}
}

// create makes batch b of file, uploaded first, or, if file is nil, of
// b's input file, uploaded before: created once and journalled
// (batchapi.Client.Submit). It hands the batch to the poller. A failure
// that retries do not cure gives b's lines their error, and gives back
// what they reserved. try says its lines are submitted once more, not
// merely again after a refusal.
func (s *submitter) create(ctx context.Context, b *tbatch, file *batchapi.Upload, try bool) error {
	r := s.r
	items, err := s.items(b, !try)
	if err != nil {
		return err
	}
	b.creates++
	head := batchapi.JournalRecord{
		Run: s.runID, Chunk: b.chunk, Create: b.creates, Endpoint: b.endpoint, Model: b.model, InputFileID: b.inputFile,
		Lines: len(b.lines), EstTokens: b.est.Tokens, EstCost: b.est.Cost, Day: b.day, InputTokens: b.tokens,
	}
	// A second batch would run its lines, and be paid for, twice; one a
	// lost answer made runs, and is journalled.
	cr := s.api.Submit(ctx, r.stop.signal.Done(), s.journal, file, head, items)
	b.inputFile = cr.InputFileID
	switch {
	case cr.Unwritten != nil:
		r.journalFailed(fmt.Errorf("no batch was created of chunk %d: %w", b.chunk, cr.Unwritten))
		if err := releaseDay(ctx, r, b.est, b.day, r.cfg.Clock.Now()); err != nil {
			return err
		}
		s.unused(ctx, b, b.creates-1)
		return s.failSeqs(ctx, b.lines, jsonl.ErrInterrupted, "not sent: the run stopped: the batch journal cannot be written", 0, "")
	case cr.Unknown:
		// The batch may run, and bill: its creating record stays open,
		// for --resume to look again; the file and the reservation stay
		// with it.
		return s.failSeqs(ctx, b.lines, jsonl.ErrInterrupted, "not known to be sent: the answer to creating its batch was lost, and the batches could not be listed to tell whether it was made ("+
			cr.Failure.Msg+"); the same command with --resume looks for it again, and collects it if it was", cr.Failure.Status, "")
	case cr.Batch.ID == "":
		if err := releaseDay(ctx, r, b.est, b.day, r.cfg.Clock.Now()); err != nil {
			return err
		}
		s.unused(ctx, b, b.creates-1)
		if r.stop.signal.Err() != nil {
			return s.failSeqs(ctx, b.lines, interrupted.typ, interrupted.msg, 0, "")
		}
		if b.inputFile == "" {
			return s.failSeqs(ctx, b.lines, cr.Failure.Type, "not sent: the batch file could not be uploaded: "+cr.Failure.Msg, cr.Failure.Status, "")
		}
		return s.failSeqs(ctx, b.lines, cr.Failure.Type, "not sent: the batch could not be created: "+cr.Failure.Msg, cr.Failure.Status, "")
	}
	b.id, b.status, b.submitted = cr.Batch.ID, cr.Batch.Status, cr.Time
	r.cfg.Log.Info("batch submitted", "batch", b.id, "lines", len(b.lines), "model", b.model, "chunk", b.chunk)
	s.register(b)
	b.journal = nil
	if try {
		for i := range b.lines {
			b.lines[i].tries = uint8(min(int(b.lines[i].tries)+1, 255))
		}
	}
	r.stats.BatchLines.Add(int64(len(b.lines)))
	if cr.Unjournalled != nil {
		return s.unjournalled(ctx, b, cr.Unjournalled)
	}
	s.running[b.model] += b.tokens
	return s.hand(ctx, b)
}

// unjournalled deals with batch b, created when the journal could not
// record it (a full disk, a file size limit): the run stops submitting,
// as --resume could not know of what it submits, and b runs on without
// it, paid for and keeping its reservation. Its lines get an interrupted
// result that names it and says how to collect it.
func (s *submitter) unjournalled(ctx context.Context, b *tbatch, err error) error {
	b.over = true
	s.r.journalFailed(fmt.Errorf("batch %s was submitted and could not be journalled: it runs on, paid for; "+
		"once the journal can be written, `gptbatch batches recover` records it and the same command with --resume collects it: %w", b.id, err))
	return s.failSeqs(ctx, b.lines, jsonl.ErrInterrupted, "not collected: batch "+b.id+" was submitted, but the batch journal could not record it; "+
		"once it can, `gptbatch batches recover` records the batch and the same command with --resume collects it", 0, b.id)
}

// unused deletes the input file of b, of which no batch is made, unless
// one was made of it before (made > 0): that one was refused for the
// enqueued-token limit, and its journal record lets --resume create it
// again from the file.
func (s *submitter) unused(ctx context.Context, b *tbatch, made int) {
	if made == 0 && ctx.Err() == nil {
		s.r.deleteInput(ctx, s.api, b)
	}
}

// hand gives a batch to the poller, unless a signal came: then the poller
// has stopped, and the batch runs on without us.
func (s *submitter) hand(ctx context.Context, b *tbatch) error {
	select {
	case s.toPoll <- b:
		s.outstanding++
		return nil
	case <-s.r.stop.signal.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// items are what the journal records of a batch's lines: kept with its
// file, or, for a batch created again, read from their records. Again
// says b is made again of a batch refused for the enqueued-token limit:
// its lines' tries count that batch already, and the journal records the
// batches before it, as the file's custom_ids do.
func (s *submitter) items(b *tbatch, again bool) ([]batchapi.JournalItem, error) {
	items := make([]batchapi.JournalItem, 0, len(b.lines))
	for i, l := range b.lines {
		id := batchapi.LineID(int(l.line))
		if j := b.journal; j != nil {
			items = append(items, batchapi.JournalItem{CustomID: id, Hash: string(j.hashes[i*batchapi.LineHashLen : (i+1)*batchapi.LineHashLen]), Tries: j.tries[i]})
			continue
		}
		rec, _, err := s.br.record(l.rec, false)
		if err != nil {
			return nil, &Error{Code: ExitFailed, Err: err}
		}
		before := int(l.tries)
		if again {
			before = max(before-1, 0)
		}
		items = append(items, batchapi.JournalItem{CustomID: id, Hash: rec.Hash, Tries: rec.Held.journal(before).JSON()})
	}
	return items, nil
}

// collected takes what collecting a batch sent back: lines to submit in a
// follow-up batch, or a batch refused for the enqueued-token limit.
func (s *submitter) collected(ctx context.Context, c collected) error {
	r := s.r
	b := c.b
	b.over = true
	s.running[b.model] -= b.tokens
	if c.tokenLimit != "" {
		// Its lines go again as they are, heads and all.
		return s.refusedBatch(ctx, b, c.tokenLimit)
	}
	s.heads -= len(b.heads)
	if len(c.retry) == 0 {
		return nil
	}
	r.cfg.Log.Info("submitting again in a follow-up batch", "lines", len(c.retry), "after", b.id)
	open := map[chunkKey]*chunk{}
	for _, l := range c.retry {
		rec, body, err := s.br.record(l.rec, true)
		if err != nil {
			return &Error{Code: ExitFailed, Err: err}
		}
		// A line asked again carries its journal item in its custom_id,
		// so that a lost journal is rebuilt with it.
		id := batchapi.CustomID(rec.Line, rec.Hash, rec.Held.journal(int(l.tries)))
		if err := s.toChunk(chunkKey{rec.URL, rec.Model}, l, &rec, appendHead(nil, &rec), batchapi.InputLine(id, rec.URL, body), open, b); err != nil {
			return err
		}
	}
	for _, ch := range sortedChunks(open) {
		if err := s.closeChunk(ch, open); err != nil {
			return err
		}
	}
	return nil
}

// refusedBatch deals with a batch the API refused for the enqueued-token
// limit. While batches of this run of its model run, it waits for them;
// else it backs off and says so, or with --on-limit fail stops the run.
func (s *submitter) refusedBatch(ctx context.Context, b *tbatch, msg string) error {
	r := s.r
	if s.running[b.model] > 0 {
		r.cfg.Log.Warn(fmt.Sprintf("batch %s was refused: %s; submitting it again once this run's earlier batches of %s end", b.id, msg, b.model))
		s.held = append(s.held, &refused{b: b, msg: msg})
		return nil
	}
	if r.cfg.OnLimit == Fail {
		why := fmt.Sprintf("stopped by the Batch API's enqueued token limit (--on-limit fail): %s", msg)
		r.stop.halt(&stopped{typ: jsonl.ErrRateLimit, msg: "not sent: " + why, err: &Error{Code: ExitLimit, Err: errors.New(why)}})
		return s.giveUp(ctx, b, b.lines, jsonl.ErrRateLimit, "not answered: batch "+b.id+" was refused: "+msg+" (--on-limit fail)", 0)
	}
	b.limitWait++
	if b.limitWait > r.cfg.Retries {
		return s.giveUp(ctx, b, b.lines, jsonl.ErrRateLimit, fmt.Sprintf("not answered: batch %s was refused %d times: %s; a smaller --batch-queue-tokens splits the batch", b.id, b.limitWait, msg), 0)
	}
	d := min(time.Minute<<(b.limitWait-1), 30*time.Minute)
	r.cfg.Log.Warn(fmt.Sprintf("batch %s was refused: %s; none of this run's batches of %s is running, so waiting %s before submitting it again (--on-limit wait)", b.id, msg, b.model, d))
	s.held = append(s.held, &refused{b: b, msg: msg, retryAt: r.cfg.Clock.Now().Add(d)})
	if s.waitUntil.IsZero() || s.waitUntil.After(r.cfg.Clock.Now().Add(d)) {
		s.wait(d)
	}
	return nil
}

// giveUp gives lines of batch b their error and gives back what b
// reserved.
func (s *submitter) giveUp(ctx context.Context, b *tbatch, lines []bline, typ, msg string, status int) error {
	if !b.collected {
		if err := releaseDay(ctx, s.r, b.est, b.day, b.submitted); err != nil {
			return err
		}
	}
	return s.failSeqs(ctx, lines, typ, msg, status, b.id)
}

// releaseDay gives back a reservation of the day's budget made on day at
// reserved, unless the day it was made in has ended, and its counters
// with it. A shared state that cannot be written stops the run
// (storeFailed); the reservation then stays counted until the day ends.
func releaseDay(ctx context.Context, r *runner, est budget.Estimate, day string, reserved time.Time) error {
	st, ok := release(r, est, day, reserved)
	if !ok {
		return nil
	}
	if err := r.cfg.Gate.Settle(ctx, r.cfg.Clock.Now(), []budget.Settlement{st}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.storeFailed(err)
	}
	return nil
}

// release is the settlement that gives back a reservation of the day's
// budget made on day at reserved, if there is one to give back: the
// budget gives it back only while its counters are that day's, as every
// process sharing it reckons the day (GPTBATCH_DAY_TZ). A journal from
// before days were recorded has none: then the local date decides.
func release(r *runner, est budget.Estimate, day string, reserved time.Time) (budget.Settlement, bool) {
	if est == (budget.Estimate{}) || day == "" && !sameDay(reserved, r.cfg.Clock.Now()) {
		return budget.Settlement{}, false
	}
	return budget.Settlement{Est: est, DayOnly: true, Day: day}, true
}

// sameDay reports whether a and b fall on the same local day.
func sameDay(a, b time.Time) bool {
	return a.IsZero() || a.Local().Format(time.DateOnly) == b.Local().Format(time.DateOnly)
}

// failSeqs gives lines an error result.
func (s *submitter) failSeqs(ctx context.Context, lines []bline, typ, msg string, status int, batchID string) error {
	out := make([]done, 0, len(lines))
	for _, l := range lines {
		rec, _, err := s.br.record(l.rec, false)
		if err != nil {
			return &Error{Code: ExitFailed, Err: err}
		}
		res := errorResult(&jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, typ, fmt.Sprintf("line %d: %s", rec.Line, msg), status)
		res.Attempts = int(l.tries)
		res.BatchID = batchID
		if last := lastAnswer(s.br.records, rec, res.Attempts, typ, "not asked again: "+msg); last != nil {
			res = last
		}
		out = append(out, done{l.seq, res})
	}
	if len(out) == 0 {
		return nil
	}
	return send(ctx, s.unsent, out)
}

// result gives line seq its result: sent to the ordered writer.
func (s *submitter) result(ctx context.Context, seq int32, res *jsonl.Result) error {
	return send(ctx, s.unsent, []done{{seq, res}})
}

// failChunk gives the lines of a file not submitted their error.
func (s *submitter) failChunk(ctx context.Context, c *chunk, typ, msg string, status int) error {
	c.f.Close()
	os.Remove(c.f.Name())
	return s.failSeqs(ctx, c.lines, typ, msg, status, "")
}

// abandon ends the submitter on a signal: the lines not submitted get
// interrupted results; the batches submitted run on.
func (s *submitter) abandon(ctx context.Context) error {
	for _, c := range sortedChunks(s.open) {
		delete(s.open, c.key)
		s.ready = append(s.ready, c)
	}
	for _, c := range s.ready {
		c.w.Flush()
		if err := s.failChunk(ctx, c, interrupted.typ, interrupted.msg, 0); err != nil {
			return err
		}
	}
	s.ready = nil
	for _, h := range s.held {
		if err := s.giveUp(ctx, h.b, h.b.lines, interrupted.typ, "not sent: interrupted while batch "+h.b.id+" waited to be submitted again", 0); err != nil {
			return err
		}
	}
	s.held = nil
	return nil
}

// discard removes the files of chunks never submitted.
func (s *submitter) discard() {
	for _, c := range s.open {
		c.f.Close()
		os.Remove(c.f.Name())
	}
	for _, c := range s.ready {
		c.f.Close()
		os.Remove(c.f.Name())
	}
}

// errNoJournal says --via batch was asked for without a journal.
var errNoJournal = errors.New("--via batch needs a journal file beside the usage file")
