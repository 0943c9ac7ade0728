// Package batchapi is gptbatch's side of OpenAI's Batch API, for --via
// batch and the `batches` command:
//
//	client.go   the client, and the calls that read or delete, each a single attempt that a server
//	            that hangs cannot hang
//	once.go     the one retry loop every call goes through; and the calls that make something, an
//	            upload and a create: their single attempts, and how a batch is submitted (Submit),
//	            each made once however its answer is lost, the create journalled around the call
//	download.go a file's download: its single attempt, and the stream that starts it again where
//	            it broke off, read as bytes or in blocks of whole lines
//	journal.go  the journal of the batches a usage file's runs made: where it lives, how it is written
//	            and read
//	line.go     a line of a batch input file, and what names it: the hash the journal's items
//	            record, and its custom_id, written and read back
//	recover.go  what a lost journal, or a run killed mid-create, left: rebuilt from the API
package batchapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/internal/retry"
)

// Config is what a Client needs. BaseURL and Key must be set; the other
// fields have usable zero values.
type Config struct {
	BaseURL string
	Key     string
	// Timeout bounds a call that moves nothing: a whole small call, or a
	// pause of an upload or a download (which may take long, but never
	// stall that long). 0 = none.
	Timeout time.Duration
	// Retry is how Retry, and the calls made once, try a failed call
	// again; the zero value tries once.
	Retry retry.Policy
	// Clock is the time Retry waits by; nil is the wall clock.
	Clock Clock
	// Log hears of retries (debug) and of what a lost answer made (info);
	// nil discards.
	Log *slog.Logger
}

// Clock is the time a Client waits by. A run passes its pipeline.Clock,
// which has these methods: declared where it is used (pipeline imports
// this package), it cannot drift from that one unnoticed, as pipeline
// does not build unless its clock is one of these.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Client calls the part of OpenAI's Files and Batch APIs that --via batch
// and `gptbatch batches` use. Its methods named for a call are single
// attempts; Retry, Download and Submit try again. Safe for
// concurrent use.
type Client struct {
	cfg Config
	hc  *http.Client
	oa  *openai.Client
}

// New is a client of the API at cfg.BaseURL: a server that hangs does not
// hang it past cfg.Timeout.
func New(cfg Config) *Client {
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	oc := openai.DefaultConfig(cfg.Key)
	oc.BaseURL = cfg.BaseURL
	return &Client{cfg: cfg, hc: &http.Client{}, oa: openai.NewClientWithConfig(oc)}
}

// bounded is ctx for a small call: ended after the timeout.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, c.cfg.Timeout, c.timedOut())
}

// timedOut is the error of a call that moved nothing for the timeout: a
// deadline, so that it is a network failure, retried.
func (c *Client) timedOut() error {
	return fmt.Errorf("nothing moved for %s: %w", c.cfg.Timeout, context.DeadlineExceeded)
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
func (c *Client) watch(ctx context.Context) *watchdog {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{ctx: ctx, cancel: cancel, d: c.cfg.Timeout}
	if c.cfg.Timeout > 0 {
		w.t = time.AfterFunc(c.cfg.Timeout, func() { cancel(c.timedOut()) })
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

// List is a page of at most limit batches, newest first, after the batch
// id after ("" for the first page).
func (c *Client) List(ctx context.Context, after string, limit int) (openai.ListBatchResponse, error) {
	var from *string
	if after != "" {
		from = &after
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.oa.ListBatch(ctx, from, &limit)
}

// FileInfo is what ListFiles tells of a file.
type FileInfo struct {
	ID       string `json:"id"`
	Filename string `json:"filename"`
	Purpose  string `json:"purpose"`
	Bytes    int64  `json:"bytes"`
}

// FilePage is a page of files.
type FilePage struct {
	Data    []FileInfo `json:"data"`
	LastID  string     `json:"last_id"`
	HasMore bool       `json:"has_more"`
}

// ListFiles is a page of at most limit files of purpose, newest first,
// after the file id after ("" for the first page). go-openai's ListFiles
// takes no purpose, limit or cursor, and would read every file of the
// organisation.
func (c *Client) ListFiles(ctx context.Context, purpose, after string, limit int) (FilePage, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	q := url.Values{"purpose": {purpose}, "limit": {strconv.Itoa(limit)}, "order": {"desc"}}
	if after != "" {
		q.Set("after", after)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.BaseURL+"/files?"+q.Encode(), nil)
	if err != nil {
		return FilePage{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return FilePage{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return FilePage{}, err
	}
	if resp.StatusCode >= 300 {
		return FilePage{}, retry.APIError(resp.StatusCode, body)
	}
	var page FilePage
	if err := json.Unmarshal(body, &page); err != nil {
		return FilePage{}, &openai.RequestError{HTTPStatus: resp.Status, HTTPStatusCode: resp.StatusCode, Err: fmt.Errorf("list files: unreadable answer")}
	}
	return page, nil
}

// DeleteFile deletes the file id.
func (c *Client) DeleteFile(ctx context.Context, id string) error {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.oa.DeleteFile(ctx, id)
}

// Retrieve is the batch id as the API has it now.
func (c *Client) Retrieve(ctx context.Context, id string) (openai.Batch, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	b, err := c.oa.RetrieveBatch(ctx, id)
	return b.Batch, err
}

// Cancel asks the API to cancel the batch id.
func (c *Client) Cancel(ctx context.Context, id string) (openai.Batch, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	b, err := c.oa.CancelBatch(ctx, id)
	return b.Batch, err
}
