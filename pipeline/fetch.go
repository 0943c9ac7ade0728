package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
	"github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"
)

// job is an admitted line and where its result goes.
type job struct {
	it      *item
	deliver func(*jsonl.Result) error
}

// startFetch starts the gate, the workers, the settler and the writer in g.
// They stop on ctx; stop only ends the sending of new requests.
func (r *runner) startFetch(g *errgroup.Group, ctx, stop context.Context, in <-chan *item, out io.Writer) {
	p := r.cfg.Parallel
	// One job queued per worker, so the gate admits requests just ahead of
	// the workers that send them.
	jobs := make(chan job, p)
	// Settlements queue while the settler writes the last batch of them;
	// sized so that workers rarely wait for the file.
	settle := make(chan budget.Settlement, 4*p)
	// The window: results finished ahead of the writer. A slow line at the
	// head holds back at most this many.
	window := 4*p + 64

	var newSink func() (func(*jsonl.Result) error, error)
	var closeSink func()
	if r.cfg.Unordered {
		results := make(chan *jsonl.Result, window)
		newSink = func() (func(*jsonl.Result) error, error) {
			return func(res *jsonl.Result) error { return send(ctx, results, res) }, nil
		}
		closeSink = func() { close(results) }
		g.Go(func() error { return r.emitUnordered(ctx, results, out) })
	} else {
		order := make(chan chan *jsonl.Result, window)
		newSink = func() (func(*jsonl.Result) error, error) {
			slot := make(chan *jsonl.Result, 1) // filled once, never blocks the worker
			if err := send(ctx, order, slot); err != nil {
				return nil, err
			}
			return func(res *jsonl.Result) error { slot <- res; return nil }, nil
		}
		closeSink = func() { close(order) }
		g.Go(func() error { return r.emitOrdered(ctx, order, out) })
	}

	// The gate and the workers all deliver results; the last of them to
	// finish closes the sink and the settlements.
	var running atomic.Int32
	running.Store(int32(p) + 1)
	finish := func() {
		if running.Add(-1) == 0 {
			closeSink()
			close(settle)
		}
	}
	g.Go(func() error {
		defer finish()
		defer close(jobs)
		return r.gate(ctx, stop, in, jobs, newSink)
	})
	for range p {
		g.Go(func() error {
			defer finish()
			for j := range jobs {
				if err := j.deliver(r.fetch(ctx, stop, j.it, settle)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error { return r.settler(ctx, settle) })
}

// fetch sends one admitted line, retrying what is worth retrying, and
// returns its result. Every call is settled through settle.
func (r *runner) fetch(ctx, stop context.Context, it *item, settle chan<- budget.Settlement) *jsonl.Result {
	var last failure
	for n := 1; ; n++ {
		if n > 1 {
			if _, err := r.admit(ctx, stop, []budget.Estimate{it.est}); err != nil {
				return r.failed(it, last)
			}
		} else if stop.Err() != nil || r.halted.Load() != nil {
			r.unsent(ctx, it, settle)
			if res := r.preflight(it, stop); res != nil {
				return res
			}
		}
		it.attempts = n
		a := call(ctx, r.client, it, r.cfg.Timeout)
		r.stats.Requests.Add(1)
		r.observe(ctx, a.reply.header)
		var f failure
		if a.err != nil {
			f = classify(a, r.cfg.Key)
		}
		r.record(ctx, it, a, f, settle)
		if a.err == nil {
			return r.succeeded(it, a)
		}
		last = f
		if f.status == 429 {
			r.stats.RateLimited.Add(1)
		}
		if f.verdict == halt {
			r.halted.CompareAndSwap(nil, &f)
		}
		if f.verdict != retry || n > r.cfg.Retries || stop.Err() != nil {
			return r.failed(it, f)
		}
		wait := backoff(n, f.after)
		if f.status == 429 {
			// Every worker, in every process sharing the budget, waits.
			if err := r.cfg.Gate.Sync(ctx, r.cfg.Now(), r.cfg.Now().Add(wait), serverUsage(a.reply.header)); err != nil {
				return r.failed(it, f)
			}
		}
		r.stats.Retries.Add(1)
		r.cfg.Log.Debug("retry", "line", it.req.Line, "id", it.req.ID, "attempt", n, "error", f.typ, "status", f.status, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-stop.Done():
			t.Stop()
			return r.failed(it, f)
		case <-ctx.Done():
			t.Stop()
			return r.failed(it, f)
		}
	}
}

func (r *runner) succeeded(it *item, a attempt) *jsonl.Result {
	res := successResult(it, a)
	u := res.Usage
	r.stats.PromptTokens.Add(u.PromptTokens)
	r.stats.CompletionTokens.Add(u.CompletionTokens)
	r.stats.CachedTokens.Add(u.CachedTokens)
	if it.priced {
		c := it.price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
		r.stats.Cost.Add(int64(c))
		res.CostUSD = mustJSON(c)
	} else {
		r.stats.Unpriced.Add(1)
		res.CostUSD = []byte("null")
	}
	return res
}

func (r *runner) failed(it *item, f failure) *jsonl.Result {
	res := errorResult(it.req, f.typ, fmt.Sprintf("line %d: %s", it.req.Line, f.msg), f.status)
	res.Attempts = it.attempts
	return res
}

// unsent settles the reservation of a line admitted but never sent.
func (r *runner) unsent(ctx context.Context, it *item, settle chan<- budget.Settlement) {
	_ = send(ctx, settle, budget.Settlement{Est: it.est})
}

type ctxKey int

const (
	bodyKey  ctxKey = iota // []byte: the exact request body to send
	replyKey               // *reply: filled with what the response said
)

// reply is what a call's HTTP response carried besides its body, which
// go-openai does not expose for failed calls.
type reply struct {
	status int
	header http.Header
}

// rawBodyDoer sends the request body carried in the request's context in
// place of the one go-openai marshalled from its struct, which drops
// "temperature": 0 and every field it does not know. It also records the
// status and headers for the retry logic.
type rawBodyDoer struct{ hc *http.Client }

func (d rawBodyDoer) Do(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if b, ok := ctx.Value(bodyKey).([]byte); ok {
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.ContentLength = int64(len(b))
	}
	resp, err := d.hc.Do(req)
	if r, ok := ctx.Value(replyKey).(*reply); ok && resp != nil {
		r.status, r.header = resp.StatusCode, resp.Header
	}
	return resp, err
}

// newClient is a go-openai client for baseURL whose connection pool keeps
// one idle connection per worker.
func newClient(baseURL, key string, parallel int) *openai.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = parallel + 8
	tr.MaxIdleConnsPerHost = parallel + 8
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = strings.TrimRight(baseURL, "/")
	cfg.HTTPClient = rawBodyDoer{hc: &http.Client{Transport: tr}}
	return openai.NewClientWithConfig(cfg)
}

// attempt is the outcome of one API call.
type attempt struct {
	resp    openai.ChatCompletionResponse
	reply   reply
	err     error
	latency time.Duration
}

// call sends it once, giving up after timeout.
func call(ctx context.Context, client *openai.Client, it *item, timeout time.Duration) attempt {
	var a attempt
	ctx = context.WithValue(ctx, bodyKey, it.body)
	ctx = context.WithValue(ctx, replyKey, &a.reply)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	// Only the model goes through go-openai's struct: it picks the URL and
	// runs go-openai's checks on it; the body sent is it.body.
	a.resp, a.err = client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: it.model})
	a.latency = time.Since(start)
	if a.err == nil && len(a.resp.Choices) == 0 {
		a.err = errNoChoices
	}
	return a
}

var errNoChoices = errors.New("response has no choices")

// successResult turns an answer into the line's result.
func successResult(it *item, a attempt) *jsonl.Result {
	r := &jsonl.Result{
		ID:        it.req.ID,
		Line:      it.req.Line,
		Model:     a.resp.Model,
		Attempts:  it.attempts,
		LatencyMS: a.latency.Milliseconds(),
		Metadata:  it.req.Metadata,
	}
	ch := a.resp.Choices[0]
	if ch.Message.Content != "" || len(ch.Message.ToolCalls) == 0 {
		c := ch.Message.Content
		r.Content = &c
	}
	r.FinishReason = string(ch.FinishReason)
	if len(ch.Message.ToolCalls) > 0 {
		r.ToolCalls = mustJSON(ch.Message.ToolCalls)
	}
	u := usageOf(a.resp)
	r.Usage = &u
	return r
}

func usageOf(resp openai.ChatCompletionResponse) jsonl.Usage {
	u := jsonl.Usage{
		PromptTokens:     int64(resp.Usage.PromptTokens),
		CompletionTokens: int64(resp.Usage.CompletionTokens),
		TotalTokens:      int64(resp.Usage.TotalTokens),
	}
	if d := resp.Usage.PromptTokensDetails; d != nil {
		u.CachedTokens = int64(d.CachedTokens)
	}
	return u
}
