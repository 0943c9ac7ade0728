package pipeline

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
)

// --via batch stands in for admit, fetch and settle with four stages,
// wired in run (pipeline.go): submit (batchsubmit.go), poll
// (batchpoll.go), collect (batchcollect.go) and the ordered writer
// (batchorder.go); with --schema, collect checks the answers and sends
// the invalid ones back to submit (batchschema.go). This file holds what
// they share: the options, the lines' table and the run's client and
// journal.

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
	batch int32 // the batch it is in, in tracker.batches; -1: none
	tries uint8 // the batches it was submitted in
}

// tracker is the table of a --via batch run's lines: where each line's
// record is spooled, which batch holds it, and the spool of their results.
// Memory is a few words a line; everything else is on disk. The submitter
// adds the lines and puts them in batches; the collector and the ordered
// writer read it. Which lines have their result is not here: results go
// to the ordered writer on channels (batchorder.go), and it alone keeps
// that. Safe for concurrent use.
type tracker struct {
	records *spool // a line's record: lineRecord, then its body
	results *spool // a line's result, as appendResult encodes it

	mu      sync.Mutex
	slots   []slot
	lineOf  []int32 // the input line number of each slot, ascending
	batches []*tbatch
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
	Hash      string // lineHash of URL and body (a re-ask's: of its line's original request)
	Held      held   // --schema: what the answer is held to, and the line's tries so far
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
	return &tracker{records: recs, results: res}, nil
}

func (t *tracker) close() {
	t.records.close()
	t.results.close()
}

// add makes the slot of the next line and returns it.
func (t *tracker) add(line int, rec int64) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slots = append(t.slots, slot{rec: rec, batch: -1})
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

// count is how many lines the table holds.
func (t *tracker) count() int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int32(len(t.slots))
}

// spool spools a result of slot seq, encoded by appendResult, for the
// ordered writer.
func (t *tracker) spool(seq int32, res []byte) (spooled, error) {
	off, err := t.results.append(res, nil)
	if err != nil {
		return spooled{}, &Error{Code: ExitFailed, Err: err}
	}
	return spooled{seq, off}, nil
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

// addTries counts n more batches slot seq was in.
func (t *tracker) addTries(seq int32, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slots[seq].tries = uint8(min(int(t.slots[seq].tries)+n, 255))
}

// setRecord makes the record spooled at off slot seq's: a re-ask's, to go
// in a follow-up batch.
func (t *tracker) setRecord(seq int32, off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slots[seq].rec = off
}

// slot returns a copy of slot seq.
func (t *tracker) slot(seq int32) slot {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.slots[seq]
}

// batch is batch idx of the run's batches.
func (t *tracker) batch(idx int32) *tbatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.batches[idx]
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

// batchRun is what the stages of a --via batch run share: the Batch API's
// client, the journal, the journalled lines --resume may claim, and the
// lines' table.
type batchRun struct {
	api     *batchapi.Client
	journal *batchapi.Journal
	claims  *claims // nil unless --resume
	lines   *tracker
	gc      int // the GC target before the run, restored by close; -1: unchanged
}

// openBatch readies a --via batch run before any stage starts: it opens
// the journal and, with --resume, settles what the journal left open and
// reads the batches it may collect. Its errors end the run with nothing
// sent.
func (r *runner) openBatch(ctx context.Context) (_ *batchRun, err error) {
	if r.cfg.Batch.Journal == "" {
		return nil, &Error{Code: ExitConfig, Err: errNoJournal}
	}
	br := &batchRun{gc: -1}
	defer func() {
		if err != nil {
			br.close()
		}
	}()
	if br.journal, err = batchapi.OpenJournal(r.cfg.Batch.Journal); err != nil {
		return nil, &Error{Code: ExitConfig, Err: err}
	}
	br.api = batchapi.New(batchapi.Config{BaseURL: r.cfg.BaseURL, Key: r.cfg.Key, Timeout: r.cfg.Timeout, Retry: r.retry, Clock: r.cfg.Clock, Log: r.cfg.Log})
	if r.cfg.Batch.Resume {
		if err := br.api.ResolveCreates(ctx, r.stop.signal.Done(), br.journal, r.cfg.Clock.Now()); err != nil {
			return nil, &Error{Code: ExitConfig, Err: err}
		}
		var skipped []string
		br.claims, skipped, err = loadClaims(br.journal.Path(), r.cfg.Clock.Now())
		for _, msg := range skipped {
			r.cfg.Log.Warn(msg)
		}
		if err != nil {
			return nil, &Error{Code: ExitConfig, Err: err}
		}
	}
	if br.lines, err = newTracker(r.cfg.Batch.TempDir); err != nil {
		return nil, &Error{Code: ExitFailed, Err: err}
	}
	if os.Getenv("GOGC") == "" {
		// Collecting streams gigabytes of answers through a live heap of
		// a few tens of MB (the encoders, the lines' table): a heap goal
		// of 1.6 times the live heap instead of twice keeps the peak RSS
		// of 200,000 lines at about 90 MB, not 127.
		br.gc = debug.SetGCPercent(batchGCPercent)
	}
	return br, nil
}

// close ends the run's use of the journal and the spools, and restores
// the GC's target.
func (br *batchRun) close() {
	if br.lines != nil {
		br.lines.close()
	}
	if br.journal != nil {
		br.journal.Close()
	}
	if br.gc >= 0 {
		debug.SetGCPercent(br.gc)
	}
}
