package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// fetch is the send stage: it pulls admitted lines from next as its
// workers come free, sends each with sendLine and passes the results to
// out, in input order unless --unordered. It is the only sender on out and
// on settle, and closes both. Another way of sending (the Batch API) would
// replace this stage as a whole.
func (r *runner) fetch(ctx context.Context, next source[*item], out chan<- *jsonl.Result, settle chan<- budget.Settlement) error {
	defer close(settle)
	defer close(out)
	p := r.cfg.Parallel
	send := func(it *item) *jsonl.Result { return r.sendLine(ctx, it, settle) }
	if r.cfg.Unordered {
		return unorderedMap(ctx, p, next, out, send)
	}
	// The window: lines taken in ahead of the one the writer waits for. A
	// slow line at the head holds back at most this many results.
	window := 4*p + 64
	return orderedMap(ctx, p, window, next, out, send, func(head *item) {
		r.cfg.Log.Debug("waiting for a slow line: the window ahead of it is full", "line", head.req.Line, "window", window)
	})
}

// sendLine sends one admitted line, retrying what is worth retrying, and
// returns its result. Every reservation is settled through settle. A line
// admitted is sent, even if the run stops sending meanwhile: admission was
// the decision, and its reservation is already charged. Only a second
// signal (abort) abandons it: the call in flight is cancelled.
func (r *runner) sendLine(ctx context.Context, it *item, settle chan<- budget.Settlement) *jsonl.Result {
	if it.result != nil {
		return it.result
	}
	var last failure
	var wait time.Duration // the last back-off, for the next one's jitter
	for n := 1; ; n++ {
		if n > 1 {
			if _, err := r.reserve(ctx, []budget.Estimate{it.est}); err != nil {
				return r.failed(it, last)
			}
			// Counted once it is sent again: a wait cut short by a signal
			// or by a failure of the run is no retry.
			r.stats.Retries.Add(1)
		}
		if r.stop.aborted() {
			// Reserved, never sent: the reservation goes back whole.
			_ = send(ctx, settle, budget.Settlement{Est: it.est})
			return r.failed(it, abandoned)
		}
		var w wire
		cctx, cancel := r.stop.callContext(w.trace(ctx))
		it.attempts = n
		a := r.call(cctx, it)
		cancel()
		wrote := w.wrote.Load()
		var f failure
		switch {
		case a.err == nil:
		case r.stop.aborted():
			f = abandoned
		case !w.tried.Load():
			// go-openai refused it before opening a connection (a model
			// it will not send, a URL it cannot build): nothing reached
			// the API and a retry would be refused the same way.
			it.attempts = n - 1
			f = failure{typ: jsonl.ErrInvalidInput, msg: "refused before sending: " + a.err.Error(), verdict: giveUp}.redact(r.cfg.Key)
		default:
			f = classify(a, r.cfg.Key, r.cfg.Clock.Now())
		}
		if wrote {
			r.stats.Requests.Add(1)
		}
		r.observe(ctx, a.reply.header)
		_ = send(ctx, settle, r.settlement(it, a, f, wrote))
		if a.err == nil {
			return r.succeeded(it, a)
		}
		last = f
		if f.status == http.StatusTooManyRequests {
			r.stats.RateLimited.Add(1)
		}
		if f.verdict == halt {
			r.stop.halt(&stopped{typ: f.typ, msg: "not sent: an earlier request was refused: " + f.msg, status: f.status})
		}
		if f.verdict != retry || n > r.cfg.Retries || r.stop.stopped() != nil {
			return r.failed(it, f)
		}
		wait = backoff(wait, f.after, r.cfg.Jitter)
		if f.status == http.StatusTooManyRequests {
			// Every worker, in every process sharing the budget, waits,
			// and a server stricter than its minute limit is paced.
			// The shared pause is the server's own time, not this
			// line's jittered wait: the others need not wait for it.
			if err := r.refused(ctx, f, a.reply.header, cmp.Or(f.after, backoffBase)); err != nil {
				if ctx.Err() == nil {
					r.storeFailed(err)
				}
				return r.failed(it, f)
			}
		}
		r.cfg.Log.Debug("retry", "line", it.req.Line, "id", it.req.ID, "attempt", n, "error", f.typ, "status", f.status, "wait", wait.Round(time.Millisecond))
		select {
		case <-r.cfg.Clock.After(wait):
		case <-r.stop.signal.Done():
			return r.failed(it, f)
		case <-ctx.Done():
			return r.failed(it, f)
		}
	}
}

// abandoned is the failure of a call cancelled by a second signal.
var abandoned = failure{typ: jsonl.ErrInterrupted, msg: "interrupted: abandoned in flight (second signal)", verdict: giveUp}

// wire is what one attempt did on the wire, from its HTTP trace: whether
// it asked for a connection at all, and whether the whole request was
// written, after which the API may have taken and billed it. Safe for
// concurrent use: the transport calls back from its own goroutines.
type wire struct{ tried, wrote atomic.Bool }

// trace is ctx with w's trace attached.
func (w *wire) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { w.tried.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				w.wrote.Store(true)
			}
		},
	})
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

// call sends it once, giving up after --timeout.
func (r *runner) call(ctx context.Context, it *item) attempt {
	var a attempt
	ctx = context.WithValue(ctx, bodyKey, it.body)
	ctx = context.WithValue(ctx, replyKey, &a.reply)
	if r.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	start := r.cfg.Clock.Now()
	// Only the model goes through go-openai's struct: it picks the URL and
	// runs go-openai's checks on it; the body sent is it.body.
	a.resp, a.err = r.client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: it.model})
	a.latency = r.cfg.Clock.Now().Sub(start)
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
