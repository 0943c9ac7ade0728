// batch.go is one file of more than 500 lines because it holds what the
// batch stages share and none of them owns: the options, the batch and
// its lines, a line's record (its codec, and how a collected line finds
// its record again by the custom_id its output names), the run's client
// and journal, and the records spool. Split, a line's record would be
// apart from the batch whose heads hold it and the spool that holds the
// rest.

package pipeline

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/jsonl"
)

// --via batch stands in for admit, fetch and settle with four stages,
// wired in run (pipeline.go): submit (batchsubmit.go), poll
// (batchpoll.go), collect (batchcollect.go) and the ordered writer
// (batchorder.go); with --schema, collect checks the answers and sends
// the invalid ones back to submit (batchschema.go). A line travels with
// its batch (bline, tbatch): the submitter hands the poller each batch
// with its lines and their heads, the collector hands the ordered writer
// their results, and what goes again goes back to the submitter. This
// file holds what they share: the options, the line's record, the run's
// client, journal and records spool.

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

// bline is a line of a --via batch run in a batch, or on its way to one:
// what the batch stages carry of it. Its record, with the body it sends,
// is in the records spool at rec; its head, the part of the record its
// result needs, is in its batch's heads from hs to where the next line's
// begins, or, past headsMax, only in the record (hs < 0, and so for every
// line after it in its batch).
type bline struct {
	seq   int32 // its place among the run's lines: results are written in its order
	line  int32 // its input line number, which its custom_id names
	rec   int64
	hs    int32
	tries uint8 // the batches it was submitted in
}

// headsMax bounds the heads a run holds in memory: past it, the rest of
// its lines' heads are read from their records when they are collected.
// A variable so that a test reaches the bound with a few lines.
var headsMax = 32 << 20

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

// appendRecord encodes a line's record for the spool: integers as
// varints, strings with their length. It takes a tenth of JSON's time to
// read back. It begins with the line's head, which appendHead alone
// encodes: what a result needs, so that a batch may keep it in memory.
func appendRecord(b []byte, rec *lineRecord) []byte {
	return appendTail(appendHead(b, rec), rec)
}

// appendTail encodes the rest of a line's record after its head.
func appendTail(b []byte, rec *lineRecord) []byte {
	for _, v := range []int64{int64(rec.Line), rec.Prompt, rec.EstTokens, int64(rec.EstCost)} {
		b = binary.AppendVarint(b, v)
	}
	return appendStrings(b, rec.Model, rec.URL, rec.Hash)
}

// appendHead encodes the head of a line's record: its flags, id, metadata
// and --schema's hold.
func appendHead(b []byte, rec *lineRecord) []byte {
	// One byte of flags: priced, and for embeddings single and floats.
	var flags byte
	for i, f := range []bool{rec.Priced, rec.Single, rec.Floats} {
		if f {
			flags |= 1 << i
		}
	}
	b = appendStrings(append(b, flags), rec.ID, string(rec.Metadata))
	return appendHeld(b, &rec.Held)
}

func appendStrings(b []byte, strs ...string) []byte {
	for _, s := range strs {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// parseRecord decodes what appendRecord encoded, or only its head.
func parseRecord(b []byte) (lineRecord, error) {
	var rec lineRecord
	bad := fmt.Errorf("spool: a damaged line record")
	if len(b) == 0 {
		return rec, bad
	}
	rec.Priced, rec.Single, rec.Floats, b = b[0]&1 != 0, b[0]&2 != 0, b[0]&4 != 0, b[1:]
	var strs [5]string
	var err error
	if b, err = parseStrings(b, strs[:2]); err != nil {
		return rec, bad
	}
	rec.ID = strs[0]
	if strs[1] != "" {
		rec.Metadata = json.RawMessage(strs[1])
	}
	if rec.Held, b, err = parseHeld(b); err != nil || len(b) == 0 {
		return rec, err // a head
	}
	var ints [4]int64
	for i := range ints {
		v, n := binary.Varint(b)
		if n <= 0 {
			return rec, bad
		}
		ints[i], b = v, b[n:]
	}
	rec.Line, rec.Prompt, rec.EstTokens, rec.EstCost = int(ints[0]), ints[1], ints[2], budget.Cost(ints[3])
	if _, err = parseStrings(b, strs[2:]); err != nil {
		return rec, bad
	}
	rec.Model, rec.URL, rec.Hash = strs[2], strs[3], strs[4]
	return rec, nil
}

// parseStrings reads len(strs) strings that appendStrings wrote at the
// start of b, and returns the rest of b.
func parseStrings(b []byte, strs []string) ([]byte, error) {
	for i := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return nil, errors.New("damaged")
		}
		strs[i], b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	return b, nil
}

// record reads the record at off in the records spool, and its body if
// withBody.
func (br *batchRun) record(off int64, withBody bool) (lineRecord, []byte, error) {
	head, body, err := br.records.read(off, withBody)
	if err != nil {
		return lineRecord{}, nil, err
	}
	rec, err := parseRecord(head)
	return rec, body, err
}

// tbatch is a batch this run waits for.
type tbatch struct {
	id        string
	inputFile string
	endpoint  string
	model     string
	chunk     int
	lines     []bline          // its lines, in the order of its file
	heads     []byte           // its lines' heads (bline.hs): their records without model, url and hash
	byCustom  map[string]int32 // a claimed batch's custom_ids → its lines
	// journal is what the journal records of its lines, until it does;
	// nil: read from their records.
	journal   *journalled
	est       budget.Estimate // what its submission reserved of the day
	day       string          // the day (budget.State.Date) est was reserved in
	tokens    int64           // its input tokens, enqueued while it runs
	submitted time.Time
	claimed   bool // from the journal (--resume)
	// over says the submitter owes its lines nothing more: it came back
	// collected, or its lines have their results.
	over      bool
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

	// The collector's: its lines (their index in lines) by input line,
	// for index, when lines are not in that order (a follow-up's); nil:
	// they are.
	byLine []int32
}

// find is the line of b that a custom_id of its output names by its id
// and input line n (batchapi.LineOf; n is 0 for a custom_id gptbatch did
// not write): its index in b.lines and its record, enough for its result
// (record); or, for none of this run's, -1 and a record of b's model
// under id.
func (b *tbatch) find(br *batchRun, id string, n int) (int32, lineRecord, error) {
	i := b.index(id, n)
	if i < 0 {
		return -1, lineRecord{ID: id, Model: b.model}, nil
	}
	rec, err := b.record(br, i)
	return i, rec, err
}

// index is the index in b.lines of the line whose custom_id's id and
// input line are id and n, or -1 for none.
func (b *tbatch) index(id string, n int) int32 {
	if n <= 0 {
		return -1 // a custom_id gptbatch did not write names no line
	}
	if b.byCustom != nil {
		if k, found := b.byCustom[id]; found {
			return k
		}
		return -1
	}
	ls := b.lines
	if len(ls) == 0 {
		return -1
	}
	// A batch's lines are most often the input's lines in a row.
	if k := n - int(ls[0].line); k >= 0 && k < len(ls) && int(ls[k].line) == n {
		return int32(k)
	}
	at := func(k int) int32 {
		if b.byLine != nil {
			return b.byLine[k]
		}
		return int32(k)
	}
	k, found := sort.Find(len(ls), func(k int) int { return cmp.Compare(n, int(ls[at(k)].line)) })
	if !found {
		return -1
	}
	return at(k)
}

// record is the record of line i of b, enough for its result: its head,
// from b's heads, with what b says of all its lines (model, url), or,
// past headsMax, its whole record from the records spool of br.
func (b *tbatch) record(br *batchRun, i int32) (lineRecord, error) {
	ls := b.lines
	l := &ls[i]
	if l.hs < 0 {
		rec, _, err := br.record(l.rec, false)
		return rec, err
	}
	end := len(b.heads)
	if int(i)+1 < len(ls) && ls[i+1].hs >= 0 {
		end = int(ls[i+1].hs)
	}
	rec, err := parseRecord(b.heads[l.hs:end])
	rec.Line, rec.Model, rec.URL = int(l.line), b.model, b.endpoint
	return rec, err
}

// recordOf is the record of it, a line of a run of cfg going to url in a
// batch file, whose request's batchapi.LineHash is hash: what the line's
// result needs, which item makes back into an item when its answer is
// collected.
func recordOf(it *item, url, hash string, cfg *Config) lineRecord {
	return lineRecord{
		ID: it.req.ID, Line: it.req.Line, Model: it.model, URL: url, Metadata: it.req.Metadata,
		Prompt: it.prompt, EstTokens: it.est.Tokens, EstCost: it.est.Cost, Priced: it.priced, Single: it.single, Floats: it.floats,
		Hash: hash, Held: it.heldOf(cfg),
	}
}

// addRecord puts rec, with body, the request it sends, in the records
// spool: off is where br.record reads it back, head its head
// (appendHead), which its batch may keep in memory.
func (br *batchRun) addRecord(rec *lineRecord, body []byte) (off int64, head []byte, err error) {
	enc := appendHead(nil, rec)
	n := len(enc)
	enc = appendTail(enc, rec)
	off, err = br.records.append(enc, body)
	return off, enc[:n], err
}

// item is the item of a batch line collected after tries batches, by its
// record: enough to read its answer into its result at the Batch API's
// prices of its model, price in prices (nil: unknown, and the result
// unpriced). Its estimate is not needed: its batch's reservation is
// released whole when the batch is collected.
func (rec *lineRecord) item(endpoint string, tries int, prices *budget.Prices, price *budget.ModelPrice) *item {
	return &item{
		req: &jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}, model: rec.Model, attempts: tries,
		endpoint: endpoint, single: rec.Single, floats: rec.Floats,
		prices: prices, price: price, priced: price != nil, tier: budget.TierBatch,
	}
}

// batchRun is what the stages of a --via batch run share: the Batch API's
// client, the journal, the journalled lines --resume may claim, and the
// records spool: each line's record and the body it sends, written by the
// submitter, read back by the collector for what goes again. Memory is a
// few words a line and its head; everything else is on disk.
type batchRun struct {
	api     *batchapi.Client
	journal *batchapi.Journal
	claims  *claims // nil unless --resume
	records *spool
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
	if br.records, err = newSpool(r.cfg.Batch.TempDir, "lines"); err != nil {
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

// close ends the run's use of the journal and the spool, and restores
// the GC's target.
func (br *batchRun) close() {
	if br.records != nil {
		br.records.close()
	}
	if br.journal != nil {
		br.journal.Close()
	}
	if br.gc >= 0 {
		debug.SetGCPercent(br.gc)
	}
}

// spool is an append-only temporary file of records, each a pair of byte
// strings (a head and a body), read back at the offset append returned.
// It lets --via batch keep what it knows of each line on disk, not in
// memory, from the time it is read until its result is written: its
// request, and what its result needs. The file is unlinked as soon as it
// is made (tempFile), so nothing is left behind however the process ends.
// Safe for concurrent use.
type spool struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	size    int64 // bytes appended, buffered ones included
	flushed int64 // bytes in the file
}

// spoolHeader is the two lengths before each record.
const spoolHeader = 8

// newSpool makes a spool in dir ("" for the temporary directory).
func newSpool(dir, name string) (*spool, error) {
	f, err := tempFile(dir, name)
	if err != nil {
		return nil, err
	}
	return &spool{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

// tempFile makes a temporary file for --via batch in dir ("" for the
// temporary directory), and unlinks it at once; removeTemp closes it.
func tempFile(dir, name string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "gptbatch-"+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Where an open file cannot be removed, removeTemp removes it.
	_ = os.Remove(f.Name())
	return f, nil
}

// removeTemp closes a file tempFile made, and removes it where it could
// not be removed while open.
func removeTemp(f *os.File) {
	f.Close()
	_ = os.Remove(f.Name())
}

// append adds a record and returns its offset.
func (s *spool) append(head, body []byte) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	off := s.size
	var h [spoolHeader]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(head)))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(body)))
	s.w.Write(h[:])
	s.w.Write(head)
	if _, err := s.w.Write(body); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	s.size += spoolHeader + int64(len(head)) + int64(len(body))
	return off, nil
}

// readable makes sure the bytes up to end are in the file, not the buffer.
func (s *spool) readable(end int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end <= s.flushed {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.flushed = s.size
	return nil
}

// guess is how much read reads at first: most records fit, and then one
// read(2) is enough.
const guess = 1024

// read returns the record at off: its head, and its body too if withBody.
func (s *spool) read(off int64, withBody bool) (head, body []byte, err error) {
	if err := s.readable(off + spoolHeader); err != nil {
		return nil, nil, err
	}
	b := make([]byte, guess)
	n, err := s.f.ReadAt(b, off)
	if n < spoolHeader {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	hl, bl := int(binary.LittleEndian.Uint32(b[:4])), int(binary.LittleEndian.Uint32(b[4:]))
	want := spoolHeader + hl
	if withBody {
		want += bl
	}
	if err := s.readable(off + int64(want)); err != nil {
		return nil, nil, err
	}
	if n < want {
		b = append(b[:n], make([]byte, want-n)...)
		if _, err := s.f.ReadAt(b[n:], off+int64(n)); err != nil {
			return nil, nil, fmt.Errorf("spool: %w", err)
		}
	}
	b = b[spoolHeader:want]
	if withBody {
		return b[:hl], b[hl:], nil
	}
	return b, nil, nil
}

// close removes the spool.
func (s *spool) close() { removeTemp(s.f) }
