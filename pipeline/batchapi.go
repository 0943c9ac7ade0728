package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/internal/retry"
)

// BatchAPI is the part of OpenAI's Files and Batch APIs that --via batch
// and `gptbatch batches` use. Its calls are single attempts; the caller
// decides about retries. Safe for concurrent use.
type BatchAPI struct {
	base, key string
	hc        *http.Client
	oa        *openai.Client
	// timeout bounds a call that moves nothing: a whole small call, or a
	// pause of an upload or a download (which may take long, but never
	// stall that long). 0 = none.
	timeout time.Duration
}

// NewBatchAPI is a client of the API at baseURL with key, whose calls
// give up after timeout without progress (0: never): a server that hangs
// must not hang a cron job.
func NewBatchAPI(baseURL, key string, timeout time.Duration) *BatchAPI {
	base := strings.TrimRight(baseURL, "/")
	return &BatchAPI{base: base, key: key, hc: &http.Client{}, oa: newClient(base, key, 4), timeout: timeout}
}

// bounded is ctx for a small call: ended after the timeout.
func (a *BatchAPI) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, a.timeout, a.timedOut())
}

// timedOut is the error of a call that moved nothing for the timeout: a
// deadline, so that it is a network failure, retried.
func (a *BatchAPI) timedOut() error {
	return fmt.Errorf("nothing moved for %s: %w", a.timeout, context.DeadlineExceeded)
}

// watchdog is a context that ends when it has not been fed for the
// timeout: streams feed it as they move.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	t      *time.Timer
	d      time.Duration
}

// watch is a watchdog over ctx; stop releases it.
func (a *BatchAPI) watch(ctx context.Context) *watchdog {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{ctx: ctx, cancel: cancel, d: a.timeout}
	if a.timeout > 0 {
		w.t = time.AfterFunc(a.timeout, func() { cancel(a.timedOut()) })
	}
	return w
}

// feed says the stream moved.
func (w *watchdog) feed() {
	if w.t != nil {
		w.t.Reset(w.d)
	}
}

// stop releases the watchdog.
func (w *watchdog) stop() {
	if w.t != nil {
		w.t.Stop()
	}
	w.cancel(nil)
}

// err is why the watchdog's context ended, if it ended for the timeout:
// an error retry.Classify takes for a network failure.
func (w *watchdog) err(err error) error {
	if cause := context.Cause(w.ctx); err != nil && errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	return err
}

// fedReader feeds a watchdog as it reads.
type fedReader struct {
	r io.Reader
	w *watchdog
}

func (f fedReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 {
		f.w.feed()
	}
	return n, err
}

// watchedBody is a download's body, its watchdog stopped when it is
// closed.
type watchedBody struct {
	fedReader
	c io.Closer
}

func (b watchedBody) Read(p []byte) (int, error) {
	n, err := b.fedReader.Read(p)
	return n, b.w.err(err)
}

func (b watchedBody) Close() error {
	err := b.c.Close()
	b.w.stop()
	return err
}

// upload sends the file at path as a batch input file, streaming it: the
// file may be 200 MB, and go-openai would build the whole request in
// memory.
func (a *BatchAPI) upload(ctx context.Context, path, name string) (id string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Fed as the file is read onto the wire: a connection that takes no
	// more, or an answer that does not come, ends the call.
	w := a.watch(ctx)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/files", pr)
	if err != nil {
		pr.Close()
		<-wrote
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+a.key)
	resp, err := a.hc.Do(req)
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

// create creates a batch of the input file at endpoint, tagged with meta.
func (a *BatchAPI) create(ctx context.Context, fileID, endpoint string, meta map[string]any) (openai.Batch, error) {
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	b, err := a.oa.CreateBatch(ctx, openai.CreateBatchRequest{
		InputFileID: fileID, Endpoint: openai.BatchEndpoint(endpoint), CompletionWindow: "24h", Metadata: meta,
	})
	return b.Batch, err
}

// list is a page of at most limit batches, newest first, after the batch
// id after ("" for the first page).
func (a *BatchAPI) list(ctx context.Context, after string, limit int) (openai.ListBatchResponse, error) {
	var from *string
	if after != "" {
		from = &after
	}
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	return a.oa.ListBatch(ctx, from, &limit)
}

// fileInfo is what listFiles tells of a file.
type fileInfo struct {
	ID       string `json:"id"`
	Filename string `json:"filename"`
	Purpose  string `json:"purpose"`
	Bytes    int64  `json:"bytes"`
}

// filePage is a page of files.
type filePage struct {
	Data    []fileInfo `json:"data"`
	LastID  string     `json:"last_id"`
	HasMore bool       `json:"has_more"`
}

// listFiles is a page of at most limit files of purpose, newest first,
// after the file id after ("" for the first page). go-openai's ListFiles
// takes no purpose, limit or cursor, and would read every file of the
// organisation.
func (a *BatchAPI) listFiles(ctx context.Context, purpose, after string, limit int) (filePage, error) {
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	q := url.Values{"purpose": {purpose}, "limit": {strconv.Itoa(limit)}, "order": {"desc"}}
	if after != "" {
		q.Set("after", after)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/files?"+q.Encode(), nil)
	if err != nil {
		return filePage{}, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	resp, err := a.hc.Do(req)
	if err != nil {
		return filePage{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return filePage{}, err
	}
	if resp.StatusCode >= 300 {
		return filePage{}, retry.APIError(resp.StatusCode, body)
	}
	var page filePage
	if err := json.Unmarshal(body, &page); err != nil {
		return filePage{}, &openai.RequestError{HTTPStatus: resp.Status, HTTPStatusCode: resp.StatusCode, Err: fmt.Errorf("list files: unreadable answer")}
	}
	return page, nil
}

// deleteFile deletes the file id.
func (a *BatchAPI) deleteFile(ctx context.Context, id string) error {
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	return a.oa.DeleteFile(ctx, id)
}

// Retrieve is the batch id as the API has it now.
func (a *BatchAPI) Retrieve(ctx context.Context, id string) (openai.Batch, error) {
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	b, err := a.oa.RetrieveBatch(ctx, id)
	return b.Batch, err
}

// Cancel asks the API to cancel the batch id.
func (a *BatchAPI) Cancel(ctx context.Context, id string) (openai.Batch, error) {
	ctx, cancel := a.bounded(ctx)
	defer cancel()
	b, err := a.oa.CancelBatch(ctx, id)
	return b.Batch, err
}

// content streams the file id. It may take long, but a pause of the
// timeout ends it (the body's Read returns a network failure).
func (a *BatchAPI) content(ctx context.Context, id string) (io.ReadCloser, error) {
	w := a.watch(ctx)
	raw, err := a.oa.GetFileContent(w.ctx, id)
	if err != nil {
		w.stop()
		return nil, w.err(err)
	}
	return watchedBody{fedReader{raw.ReadCloser, w}, raw.ReadCloser}, nil
}

// apiCall runs call, retrying what is worth retrying (429, 5xx, network)
// up to --retries times with back-off. It gives up early when the run is
// interrupted and stop is true.
func (r *runner) apiCall(ctx context.Context, what string, stop bool, call func(ctx context.Context) error) (retry.Failure, bool) {
	var wait time.Duration // the last back-off, for the next one's jitter
	for n := 1; ; n++ {
		err := call(ctx)
		if err == nil {
			return retry.Failure{}, true
		}
		f := retry.Classify(err, 0, nil, r.cfg.Key, r.cfg.Clock.Now())
		var again bool
		if wait, again = r.retry.Next(n, f, wait); !again || ctx.Err() != nil {
			return f, false
		}
		r.cfg.Log.Debug("retry", "call", what, "attempt", n, "error", f.Type, "status", f.Status, "wait", wait.Round(time.Millisecond))
		var signal <-chan struct{}
		if stop {
			signal = r.stop.signal.Done()
		}
		select {
		case <-r.cfg.Clock.After(wait):
		case <-signal:
			return f, false
		case <-ctx.Done():
			return f, false
		}
	}
}
