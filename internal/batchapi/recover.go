package batchapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// A lost journal is rebuilt from the API: every batch gptbatch creates is
// tagged with its run and chunk (Tags), and its input file holds each
// line's custom_id, url and exact body, from which the journal's items are
// computed again as submission computed them (LineHash). A line asked
// again (--schema's follow-ups) sends another body than its input line's:
// its custom_id carries the rest of its item (CustomID).

// ErrInputDeleted says that a batch's input file no longer exists: the
// lines it holds cannot be known, so --resume cannot claim them.
var ErrInputDeleted = errors.New("its input file was deleted")

// Recovered is a batch gptbatch made that the API lists and the journal
// does not record.
type Recovered struct {
	// Batch is the batch as the API listed it.
	Batch openai.Batch
	// Record is its submitted record as rebuilt, without its items.
	Record JournalRecord
	// Err says why it could not be rebuilt (ErrInputDeleted, or a
	// download or its lines failed); nil if it was.
	Err error
}

// RecoverJournal rebuilds what the journal at path lost: each batch the
// API lists as created since since, tagged by gptbatch's runs of this
// journal (JournalTag; with all, of any journal; a batch of a version that
// did not tag its journal counts as this one's) and not in the journal,
// gets its submitted record again from its input file, so that
// --resume collects it instead of submitting its lines again. With write
// false it only says what it would append. The records are appended
// oldest first, as they were submitted: --resume claims a line from the
// batch journalled last, the one a line submitted again was answered in.
// Lines of the journal that are not records are skipped, and skipped
// says so, a message a line: a batch recorded on a torn line is taken
// back as if the journal had lost it. A journal that cannot be read or
// opened is a *JournalError.
func RecoverJournal(ctx context.Context, c *Client, path string, since time.Time, write, all bool) (out []Recovered, skipped []string, err error) {
	bs, skipped, err := ReadJournal(path, time.Time{}, false)
	if err != nil {
		return nil, skipped, err
	}
	known := make(map[string]bool, len(bs))
	for _, b := range bs {
		known[b.BatchID] = true
	}
	tag := JournalTag(path)
	if all {
		tag = ""
	}
	lost, err := c.untracked(ctx, since, known, tag)
	if err != nil {
		return nil, skipped, err
	}
	var j *Journal
	defer func() {
		if j != nil {
			j.Close()
		}
	}()
	out = make([]Recovered, 0, len(lost))
	for i := len(lost) - 1; i >= 0; i-- {
		bo := lost[i]
		rec, rerr := c.rebuild(ctx, bo)
		if err := ctx.Err(); err != nil {
			return out, skipped, err
		}
		if rerr == nil && write {
			if j == nil {
				if j, err = OpenJournal(path); err != nil {
					return out, skipped, err
				}
			}
			if err := j.Append(rec); err != nil {
				return out, skipped, err
			}
		}
		// A batch of 50,000 lines has 50,000 items: keep none of them.
		rec.Items = nil
		out = append(out, Recovered{Batch: bo, Record: rec, Err: rerr})
	}
	return out, skipped, nil
}

// untracked are the batches created since since, newest first, that
// gptbatch tagged and known does not hold; with journal, only those of
// that journal's runs (or of no journal's tag).
func (c *Client) untracked(ctx context.Context, since time.Time, known map[string]bool, journal string) ([]openai.Batch, error) {
	var out []openai.Batch
	after := ""
	for {
		var page openai.ListBatchResponse
		f, ok := c.Retry(ctx, "list batches", nil, func(ctx context.Context) (err error) {
			page, err = c.List(ctx, after, 100)
			return err
		})
		if !ok {
			return nil, fmt.Errorf("list the batches: %s", f.Msg)
		}
		for _, bo := range page.Data {
			// The list is newest first: the rest are older still.
			if time.Unix(int64(bo.CreatedAt), 0).Before(since) {
				return out, nil
			}
			run, _ := bo.Metadata["gptbatch_run"].(string)
			tag, tagged := bo.Metadata["gptbatch_journal"].(string)
			if run != "" && !known[bo.ID] && (journal == "" || !tagged || tag == journal) {
				out = append(out, bo)
			}
		}
		if !page.HasMore || page.LastID == "" {
			return out, nil
		}
		after = page.LastID
	}
}

// rebuild is the submitted record of bo, from its tags and its input
// file, streamed: the file may be 200 MB.
func (c *Client) rebuild(ctx context.Context, bo openai.Batch) (JournalRecord, error) {
	run, _ := bo.Metadata["gptbatch_run"].(string)
	chunk, _ := bo.Metadata["gptbatch_chunk"].(string)
	// The estimate the batch reserved of the day's budget is not known,
	// so it is left 0 and --resume gives nothing back for the batch: a
	// reservation still held stays counted until its day ends (the
	// budget errs toward spending less), and one given back when the
	// batch was collected before the journal was lost is not given back
	// twice. The input tokens are left 0 too: counting them means
	// tokenizing the whole file.
	rec := JournalRecord{
		Event: EventSubmitted, Time: time.Unix(int64(bo.CreatedAt), 0), BatchID: bo.ID, Run: run,
		Endpoint: string(bo.Endpoint), InputFileID: bo.InputFileID,
	}
	rec.Chunk, _ = strconv.Atoi(chunk)
	create, _ := bo.Metadata["gptbatch_create"].(string)
	rec.Create, _ = strconv.Atoi(create)
	// Downloaded as a run's results are: a connection that drops goes on
	// where it broke off.
	body, err := c.Download(ctx, bo.InputFileID)
	if err != nil {
		f := c.Failure(err)
		if f.Status == http.StatusNotFound {
			return rec, ErrInputDeleted
		}
		return rec, fmt.Errorf("input file %s: %s", bo.InputFileID, f.Msg)
	}
	defer body.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(body, 256<<10))
	for n := 1; ; n++ {
		// Body is the exact bytes sent, as submission hashed them.
		var l struct {
			CustomID string          `json:"custom_id"`
			URL      string          `json:"url"`
			Body     json.RawMessage `json:"body"`
		}
		err := dec.Decode(&l)
		if err == io.EOF {
			break
		}
		if err != nil {
			return rec, fmt.Errorf("input file %s: line %d: %w", bo.InputFileID, n, err)
		}
		if l.CustomID == "" || l.URL == "" || len(l.Body) == 0 {
			return rec, fmt.Errorf("input file %s: line %d: not a batch request line", bo.InputFileID, n)
		}
		if n == 1 {
			// The API takes one endpoint and one model a file.
			var m struct {
				Model string `json:"model"`
			}
			if err := json.Unmarshal(l.Body, &m); err != nil {
				return rec, fmt.Errorf("input file %s: line %d: body: %w", bo.InputFileID, n, err)
			}
			rec.Endpoint, rec.Model = l.URL, m.Model
		}
		id, hash, tries, err := parseCustomID(l.CustomID)
		if err != nil {
			return rec, fmt.Errorf("input file %s: line %d: %w", bo.InputFileID, n, err)
		}
		if tries == nil {
			hash = LineHash(l.URL, l.Body)
		}
		rec.Items = append(rec.Items, JournalItem{CustomID: id, Hash: hash, Tries: tries})
	}
	if len(rec.Items) == 0 {
		return rec, fmt.Errorf("input file %s: no lines", bo.InputFileID)
	}
	rec.Lines = len(rec.Items)
	return rec, nil
}

// ResolveCreates settles what the journal's creating records left open:
// a run that ended while a create was in flight (kill -9) may have made a
// batch it never journalled. The batches the API lists are searched for
// each one's tags; a batch found is journalled as submitted, rebuilt from
// its input file with the estimate its run reserved, so that --resume
// collects it instead of submitting its lines again; none found is
// journalled as not created (its reservation stays counted until the
// day's end, as a killed run's do). A listing that cannot be read, or a
// batch found that cannot be read back, is an error: submitting blind
// could run the lines twice. now is the time; stop, once closed, ends the
// listing's retries.
func (c *Client) ResolveCreates(ctx context.Context, stop <-chan struct{}, j *Journal, now time.Time) error {
	open, err := openCreates(j.Path(), now.Add(-ClaimWindow))
	if err != nil {
		return err
	}
	if len(open) == 0 {
		return nil
	}
	// The API's clock is not ours: an hour's margin.
	oldest := open[0].Time.Add(-time.Hour)
	found := make([]*openai.Batch, len(open))
	left := len(open)
	after := ""
	for left > 0 {
		var page openai.ListBatchResponse
		f, ok := c.Retry(ctx, "list batches", stop, func(ctx context.Context) (err error) {
			page, err = c.List(ctx, after, 100)
			return err
		})
		if !ok {
			o := open[0]
			return fmt.Errorf("--resume: %s ended while it created a batch of its chunk %d, and the batches could not be listed to tell whether it made one: %s; nothing sent, try again",
				o.Run, o.Chunk, f.Msg)
		}
		for _, bo := range page.Data {
			for i, o := range open {
				if found[i] == nil && tagged(bo, o.InputFileID, Tags(o, j.tag)) {
					found[i] = &bo
					left--
				}
			}
		}
		n := len(page.Data)
		if !page.HasMore || page.LastID == "" || n == 0 || time.Unix(int64(page.Data[n-1].CreatedAt), 0).Before(oldest) {
			break
		}
		after = page.LastID
	}
	for i, o := range open {
		if found[i] == nil {
			o.Event, o.Time = EventNotMade, c.cfg.Clock.Now()
			if err := j.Append(o); err != nil {
				return err
			}
			continue
		}
		bo := *found[i]
		rec, err := c.rebuild(ctx, bo)
		if err != nil {
			return fmt.Errorf("--resume: batch %s, made by %s as it ended, cannot be read back to collect it: %w; nothing sent", bo.ID, o.Run, err)
		}
		rec.Create, rec.EstTokens, rec.EstCost, rec.Day, rec.InputTokens = o.Create, o.EstTokens, o.EstCost, o.Day, o.InputTokens
		if err := j.Append(rec); err != nil {
			return err
		}
		c.cfg.Log.Info("found the batch a run made as it ended, and journalled it", "batch", bo.ID, "run", o.Run, "chunk", o.Chunk)
	}
	return nil
}
