package batchapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/internal/retry"
)

// Failure is the failure of a call that returned err, as retry.Classify
// sorts it.
func (c *Client) Failure(err error) retry.Failure {
	return retry.Classify(err, 0, nil, c.cfg.Key, c.cfg.Clock.Now())
}

// Retry runs call, and runs it again while it fails for a reason worth a
// retry (429, 5xx, the network) and the policy allows, after its back-off.
// It gives up early when ctx ends or stop is closed (nil: never). It
// reports how the last try failed, or ok.
func (c *Client) Retry(ctx context.Context, what string, stop <-chan struct{}, call func(ctx context.Context) error) (f retry.Failure, ok bool) {
	t := tries{c: c, what: what, stop: stop}
	for {
		err := call(ctx)
		if err == nil {
			return retry.Failure{}, true
		}
		if f, ok := t.again(ctx, err); !ok {
			return f, false
		}
	}
}

// tries are the failed tries of one call Retry makes, or of one Download.
type tries struct {
	c    *Client
	what string
	stop <-chan struct{}
	n    int           // the tries that failed
	wait time.Duration // the last back-off, for the next one's jitter
}

// again says whether the call is tried again after a try that failed with
// err: the policy allows it, and its back-off ended before ctx did or stop
// was closed. f is how the try failed.
func (t *tries) again(ctx context.Context, err error) (f retry.Failure, ok bool) {
	t.n++
	f = t.c.Failure(err)
	var again bool
	if t.wait, again = t.c.cfg.Retry.Next(t.n, f, t.wait); !again || ctx.Err() != nil {
		return f, false
	}
	t.c.cfg.Log.Debug("retry", "call", t.what, "attempt", t.n, "error", f.Type, "status", f.Status, "wait", t.wait.Round(time.Millisecond))
	select {
	case <-t.c.cfg.Clock.After(t.wait):
		return f, true
	case <-t.stop:
	case <-ctx.Done():
	}
	return f, false
}

// An upload or a create may be made by the API and its answer lost (a
// dropped connection, a timeout): trying again blind would make a second
// file, or a second batch that runs its lines, and bills them, twice. So
// before each retry, the newest files or batches are searched for what an
// earlier try made: a file by its name (unique to the run and its chunk)
// and size, a batch by its input file and tags (Tags).

// Upload is a batch input file to upload: the file at Path, of Size
// bytes, stored as Name (unique to the run and its chunk).
type Upload struct {
	Path, Name string
	Size       int64
}

// Creation is what Submit did.
type Creation struct {
	// InputFileID is the batch's input file: the one Submit uploaded, or
	// head's. "" when the upload failed: then Failure says why.
	InputFileID string
	// Batch is the batch made, or found made by an earlier try whose
	// answer was lost; its ID is "" when none was (stop was closed before
	// its create, or Failure says why).
	Batch openai.Batch
	// Time is when it was made, as its submitted record says.
	Time time.Time
	// Failure is why no batch was made, or, with Unknown, why it is not
	// known whether one was.
	Failure retry.Failure
	// Unknown: the answer to the create was lost, and the batches could
	// not be listed to tell whether it made one. The batch may run, and
	// bill: its creating record stays open, for --resume and `gptbatch
	// batches recover` to look again.
	Unknown bool
	// Unwritten is why the creating record could not be written: then no
	// batch was created.
	Unwritten error
	// Unjournalled is why the submitted record of the batch made could
	// not be written: it runs on, paid for, and the journal does not know
	// of it.
	Unjournalled error
}

// Submit makes the batch head describes (its run, chunk, creation,
// endpoint, model and input file, and what it reserved), of the lines
// items, each step made once however its answers are lost: it uploads
// file, if not nil, as its input file (uploadOnce; nil: head names a file
// uploaded before, as for a batch created again); then, unless stop was
// closed meanwhile, it creates the batch (createOnce), journalled in j
// around the call: a creating record before it, so that a run killed
// while it is in flight leaves word of the batch it may have made
// (openCreates), which --resume and recovery look for; then the submitted
// record, with items, of the batch made, or a not_created record of none.
// No batch is created unless its creating record is on disk. stop, once
// closed, ends the retries (nil: never).
func (c *Client) Submit(ctx context.Context, stop <-chan struct{}, j *Journal, file *Upload, head JournalRecord, items []JournalItem) Creation {
	if file != nil {
		id, f, ok := c.uploadOnce(ctx, stop, file.Path, file.Name, file.Size)
		if !ok {
			return Creation{Failure: f}
		}
		head.InputFileID = id
	}
	select {
	case <-stop:
		return Creation{InputFileID: head.InputFileID}
	default:
	}
	tags := Tags(head, j.tag)
	intent := head
	intent.Event, intent.Time = EventCreating, c.cfg.Clock.Now()
	if err := j.Append(intent); err != nil {
		return Creation{InputFileID: head.InputFileID, Unwritten: err}
	}
	b, f, ok, unknown := c.createOnce(ctx, stop, head.InputFileID, head.Endpoint, tags)
	if unknown != nil {
		return Creation{InputFileID: head.InputFileID, Failure: *unknown, Unknown: true}
	}
	if !ok {
		notMade := head
		notMade.Event, notMade.Time = EventNotMade, c.cfg.Clock.Now()
		// Best effort: without it, --resume looks for the batch in vain.
		_ = j.Append(notMade)
		return Creation{InputFileID: head.InputFileID, Failure: f}
	}
	rec := head
	rec.Event, rec.Time, rec.BatchID, rec.Items = EventSubmitted, c.cfg.Clock.Now(), b.ID, items
	return Creation{InputFileID: head.InputFileID, Batch: b, Time: rec.Time, Unjournalled: j.Append(rec)}
}

// uploadOnce uploads the file at path, of size bytes, as the batch input
// file named name (unique to the run and chunk), with Retry's retries,
// never storing it twice. Files that cannot be listed are uploaded again
// all the same: a second copy costs storage, not money, and a failed
// upload far more often stored nothing. stop, once closed, ends the
// retries (nil: never).
func (c *Client) uploadOnce(ctx context.Context, stop <-chan struct{}, path, name string, size int64) (id string, f retry.Failure, ok bool) {
	f, ok, _ = c.makeOnce(ctx, stop, "upload", func(ctx context.Context) (err error) {
		id, err = c.Upload(ctx, path, name)
		return err
	}, func(ctx context.Context) (bool, *retry.Failure) {
		fi, found, _ := newest(ctx, c, stop, "files", func(ctx context.Context, after string) ([]FileInfo, string, bool, error) {
			page, err := c.ListFiles(ctx, "batch", after, 100)
			return page.Data, page.LastID, page.HasMore, err
		}, func(fi FileInfo) bool {
			return fi.Filename == name && fi.Purpose == "batch" && fi.Bytes == size
		})
		if found {
			id = fi.ID
			c.cfg.Log.Info("found the file an upload whose answer was lost stored", "file", fi.ID, "name", name)
		}
		return found, nil
	})
	return id, f, ok
}

// createOnce creates a batch of the input file fileID at endpoint, tagged
// with meta (Tags), with Retry's retries, never making two: a batch a lost
// answer made is found by its file and tags and taken for the call's
// answer. When the batches cannot be listed to tell whether a lost answer
// made one, it stops rather than create one blind, and unknown says why:
// the batch may run, and bill. stop, once closed, ends the retries (nil:
// never). Submit journals it.
func (c *Client) createOnce(ctx context.Context, stop <-chan struct{}, fileID, endpoint string, meta map[string]any) (b openai.Batch, f retry.Failure, ok bool, unknown *retry.Failure) {
	f, ok, unknown = c.makeOnce(ctx, stop, "create batch", func(ctx context.Context) (err error) {
		b, err = c.Create(ctx, fileID, endpoint, meta)
		return err
	}, func(ctx context.Context) (found bool, failed *retry.Failure) {
		b, found, failed = newest(ctx, c, stop, "batches", func(ctx context.Context, after string) ([]openai.Batch, string, bool, error) {
			page, err := c.List(ctx, after, 100)
			return page.Data, page.LastID, page.HasMore, err
		}, func(bo openai.Batch) bool { return tagged(bo, fileID, meta) })
		if found {
			c.cfg.Log.Info("found the batch a create whose answer was lost made", "batch", b.ID, "chunk", meta["gptbatch_chunk"])
		}
		return found, failed
	})
	return b, f, ok, unknown
}

// makeOnce runs do, a call that makes something (a file, a batch), with
// Retry's retries, and never makes it twice: the API may make it and
// lose the answer, so before each retry, and once more when the retries
// end on a failure worth retrying or a signal cuts them short, find looks
// for what an earlier try made. What find finds is the call's result.
// When find cannot look (a listing that failed past its retries), it is
// not known whether the thing was made: makeOnce stops there rather than
// make it blind, and says why in unknown.
func (c *Client) makeOnce(ctx context.Context, stop <-chan struct{}, what string, do func(context.Context) error, find func(context.Context) (bool, *retry.Failure)) (f retry.Failure, ok bool, unknown *retry.Failure) {
	tries := 0
	f, ok = c.Retry(ctx, what, stop, func(ctx context.Context) error {
		if tries++; tries > 1 {
			found, lf := find(ctx)
			if lf != nil {
				unknown = lf
				return nil // ends the retries
			}
			if found {
				return nil
			}
		}
		return do(ctx)
	})
	if unknown != nil {
		return *unknown, false, unknown
	}
	if !ok && f.Verdict == retry.Retry && ctx.Err() == nil {
		found, lf := find(ctx)
		if lf != nil {
			return *lf, false, lf
		}
		ok = found
	}
	return f, ok, nil
}

// Upload sends the file at path as a batch input file named name,
// streaming it: the file may be 200 MB, and go-openai would build the
// whole request in memory. It returns the file's id.
func (c *Client) Upload(ctx context.Context, path, name string) (id string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Fed as the file is read onto the wire: a connection that takes no
	// more, or an answer that does not come, ends the call.
	w := c.watch(ctx)
	defer w.stop()
	defer func() { err = w.err(err) }()
	ctx = w.ctx
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		err := mw.WriteField("purpose", "batch")
		if err == nil {
			var part io.Writer
			if part, err = mw.CreateFormFile("file", name); err == nil {
				if _, err = io.Copy(part, fedReader{f, w}); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.BaseURL+"/files", pr)
	if err != nil {
		pr.Close()
		<-wrote
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.cfg.Key)
	resp, err := c.hc.Do(req)
	// The writer ends once the request body is read or closed.
	pr.CloseWithError(errors.New("upload ended"))
	<-wrote
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode >= 300 {
		return "", retry.APIError(resp.StatusCode, body)
	}
	var fo struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &fo); err != nil || fo.ID == "" {
		return "", &openai.RequestError{HTTPStatus: resp.Status, HTTPStatusCode: resp.StatusCode, Err: fmt.Errorf("upload: unreadable answer")}
	}
	return fo.ID, nil
}

// Create creates a batch of the input file fileID at endpoint (a URL,
// /v1/chat/completions), tagged with meta.
func (c *Client) Create(ctx context.Context, fileID, endpoint string, meta map[string]any) (openai.Batch, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	b, err := c.oa.CreateBatch(ctx, openai.CreateBatchRequest{
		InputFileID: fileID, Endpoint: openai.BatchEndpoint(endpoint), CompletionWindow: "24h", Metadata: meta,
	})
	return b.Batch, err
}

// newest looks for an item match accepts among the newest of a listing
// (list: a page after the item after, its last item, whether more
// follow): what a lost answer made moments ago is there, and two pages
// are enough. A page that cannot be read is asked for again as any call
// is; if it still cannot be, failed says why.
func newest[T any](ctx context.Context, c *Client, stop <-chan struct{}, what string, list func(ctx context.Context, after string) ([]T, string, bool, error), match func(T) bool) (it T, found bool, failed *retry.Failure) {
	after := ""
	for range 2 {
		var items []T
		var last string
		var more bool
		f, ok := c.Retry(ctx, "list "+what, stop, func(ctx context.Context) (err error) {
			items, last, more, err = list(ctx, after)
			return err
		})
		if !ok {
			c.cfg.Log.Debug("listing "+what+" failed", "error", f.Type, "status", f.Status)
			return it, false, &f
		}
		for _, it := range items {
			if match(it) {
				return it, true, nil
			}
		}
		if !more || last == "" {
			break
		}
		after = last
	}
	return it, false, nil
}

// Tags are the metadata of the batch that rec, a creating record of a
// journal whose JournalTag is journal, describes: they name this creation
// of the chunk's file (gptbatch_run, gptbatch_chunk, gptbatch_create) and
// the journal (gptbatch_journal), so that a lost answer's batch is found
// (tagged), and a lost journal rebuilt. A batch refused for the
// enqueued-token limit is created again from the same file: its tags, of
// an earlier creation, never match the new one's.
func Tags(rec JournalRecord, journal string) map[string]any {
	return map[string]any{
		"gptbatch_run": rec.Run, "gptbatch_chunk": strconv.Itoa(rec.Chunk), "gptbatch_create": strconv.Itoa(rec.Create),
		"gptbatch_journal": journal,
	}
}

// tagged reports whether bo is a batch of the file inputFile with every
// tag of meta.
func tagged(bo openai.Batch, inputFile string, meta map[string]any) bool {
	if bo.InputFileID != inputFile {
		return false
	}
	for k, v := range meta {
		if bo.Metadata[k] != v {
			return false
		}
	}
	return true
}
