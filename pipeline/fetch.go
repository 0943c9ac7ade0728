package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/jsonl"
)

// fetch is the send stage: it pulls admitted lines (or packs of them) from
// next as its workers come free, sends each with sendItem and passes the
// results to out, one a line, in input order unless --unordered. It is the
// only sender on out and on settle, and closes both. Another way of
// sending (the Batch API) would replace this stage as a whole.
func (r *runner) fetch(ctx context.Context, next source[*item], out chan<- *jsonl.Result, settle chan<- budget.Settlement) error {
	defer close(settle)
	defer close(out)
	p := r.cfg.Parallel
	// Each item's results, a line's or a pack's, on their way to be
	// unpacked in order: sized as the results channel.
	groups := make(chan []*jsonl.Result, p)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(groups)
		send := func(it *item) []*jsonl.Result { return r.serveItem(ctx, it, settle) }
		if r.cfg.Unordered {
			return unorderedMap(gctx, p, next, groups, send)
		}
		// The window: items taken in ahead of the one the writer waits
		// for. A slow item at the head holds back at most this many. A
		// pack holds up to --pack lines' results, so the window of packs
		// is the window of lines over --pack, with a place for every
		// worker.
		window := 4*p + 64
		if r.cfg.Pack > 1 {
			window = p + max(1, window/r.cfg.Pack)
		}
		return orderedMap(gctx, p, window, next, groups, send, func(head *item) {
			r.cfg.Log.Debug("waiting for a slow line: the window ahead of it is full", "line", head.req.Line, "window", window)
		})
	})
	g.Go(func() error {
		for rs := range groups {
			for _, res := range rs {
				if err := send(gctx, out, res); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return g.Wait()
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
	var last retry.Failure
	var wait time.Duration // the last back-off, for the next one's jitter
	for n := 1; ; n++ {
		if n > 1 {
			var err error
			if _, it.reserved, err = r.reserve(ctx, []budget.Estimate{it.est}); err != nil {
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
		// The gate learns how long after its reservation the request went
		// out as it goes: a lag it must keep in hand (Gate.Lag).
		w := wire{written: func() {
			if !it.reserved.IsZero() {
				now := r.cfg.Clock.Now()
				r.cfg.Gate.Lag(now, now.Sub(it.reserved))
			}
		}}
		cctx, cancel := r.stop.callContext(w.trace(ctx))
		it.attempts = it.prior + n
		a := r.call(cctx, it)
		cancel()
		wrote := w.wrote.Load()
		var f retry.Failure
		switch {
		case a.err == nil:
		case r.stop.aborted():
			f = abandoned
		case !w.tried.Load():
			// go-openai refused it before opening a connection (a model
			// it will not send, a URL it cannot build): nothing reached
			// the API and a retry would be refused the same way.
			it.attempts = it.prior + n - 1
			f = retry.Failure{Type: jsonl.ErrInvalidInput, Msg: "refused before sending: " + a.err.Error(), Verdict: retry.GiveUp}.Redact(r.cfg.Key)
		default:
			f = retry.Classify(a.err, a.reply.status, a.reply.header, r.cfg.Key, r.cfg.Clock.Now())
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
		// A flex request refused for want of capacity is not over a rate
		// limit: it is retried, but slows no one else.
		rateLimited := f.Status == http.StatusTooManyRequests && !f.NoCapacity
		if rateLimited {
			r.stats.RateLimited.Add(1)
		}
		if f.Verdict == retry.Halt {
			r.stop.halt(&stopped{typ: f.Type, msg: "not sent: an earlier request was refused: " + f.Msg, status: f.Status})
		}
		var again bool
		if wait, again = r.retry.Next(n, f, wait); !again || r.stop.stopped() != nil {
			return r.failed(it, f)
		}
		if rateLimited {
			// Every worker, in every process sharing the budget, waits,
			// and a server stricter than its minute limit is paced.
			// The shared pause is the server's own time, not this
			// line's jittered wait: the others need not wait for it.
			if err := r.refused(ctx, f, a.reply.header, cmp.Or(f.After, retry.BackoffBase)); err != nil {
				if ctx.Err() == nil {
					r.storeFailed(err)
				}
				return r.failed(it, f)
			}
		}
		r.cfg.Log.Debug("retry", "line", it.req.Line, "id", it.req.ID, "attempt", n, "error", f.Type, "status", f.Status, "wait", wait.Round(time.Millisecond))
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
var abandoned = retry.Failure{Type: jsonl.ErrInterrupted, Msg: "interrupted: abandoned in flight (second signal)", Verdict: retry.GiveUp}

// wire is what one attempt did on the wire, from its HTTP trace: whether
// it asked for a connection at all, and whether the whole request was
// written, after which the API may have taken and billed it. Safe for
// concurrent use: the transport calls back from its own goroutines.
type wire struct {
	tried, wrote atomic.Bool
	written      func() // called once the request is written, from the HTTP client's goroutine
}

// trace is ctx with w's trace attached.
func (w *wire) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { w.tried.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				w.wrote.Store(true)
				w.written()
			}
		},
	})
}

// succeeded counts an answer and returns the line's result; a pack's
// results, one a line, are left in it.results.
func (r *runner) succeeded(it *item, a attempt) *jsonl.Result {
	r.count(it, a.ans)
	for _, res := range a.ans.results {
		res.LatencyMS = a.latency.Milliseconds()
	}
	it.results, it.answered = a.ans.results, a.ans
	return a.ans.results[0]
}

func (r *runner) failed(it *item, f retry.Failure) *jsonl.Result {
	res := errorResult(it.req, f.Type, fmt.Sprintf("line %d: %s", it.req.Line, f.Msg), f.Status)
	res.Attempts = it.attempts
	return res
}

type ctxKey int

const (
	bodyKey  ctxKey = iota // []byte: the exact request body to send
	replyKey               // *reply: filled with what the response said
)

// reply is what a call's HTTP response carried, which go-openai does not
// expose: the status and headers, for the retry logic, and a success's
// body, for resultFromBody.
type reply struct {
	status int
	header http.Header
	body   []byte // a 2xx answer's body
}

// rawBodyDoer sends the request body carried in the request's context in
// place of the one go-openai marshalled from its struct, which drops
// "temperature": 0 and every field it does not know. It also records the
// status and headers for the retry logic, and keeps a successful answer's
// body whole: go-openai's structs drop what gptbatch must not (logprobs,
// refusals) and cannot read base64 embeddings, so go-openai is given an
// empty object to decode and resultFromBody reads the answer.
type rawBodyDoer struct{ hc *http.Client }

func (d rawBodyDoer) Do(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if b, ok := ctx.Value(bodyKey).([]byte); ok {
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.ContentLength = int64(len(b))
	}
	resp, err := d.hc.Do(req)
	r, ok := ctx.Value(replyKey).(*reply)
	if !ok || resp == nil {
		return resp, err
	}
	r.status, r.header = resp.StatusCode, resp.Header
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		r.body = b
		resp.Body = io.NopCloser(strings.NewReader("{}"))
		resp.ContentLength = 2
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
	ans     answer // what a successful call answered
	reply   reply
	err     error
	latency time.Duration
}

// call sends it once, to its endpoint, giving up after --timeout.
func (r *runner) call(ctx context.Context, it *item) attempt {
	var a attempt
	ctx = context.WithValue(ctx, bodyKey, it.wireBody())
	ctx = context.WithValue(ctx, replyKey, &a.reply)
	if r.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	start := r.cfg.Clock.Now()
	// Only the model goes through go-openai's structs: they pick the URL
	// and run go-openai's checks on it; the body sent is the item's own.
	a.err = endpointFor(it.endpoint).call(ctx, r.client, it.model)
	a.latency = r.cfg.Clock.Now().Sub(start)
	if a.err == nil {
		a.ans, a.err = resultFromBody(it, a.reply.status, a.reply.body)
	}
	if a.err == nil && it.awaited() {
		it.answer = a.reply.body // for the response cache (cache.go)
	}
	a.reply.body = nil // read: the results hold what is kept
	return a
}

// sendItem sends an admitted item and returns its lines' results in input
// order: the line's, or each member's of a pack. A pack's failure (and the
// retries before it) is every member's.
func (r *runner) sendItem(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	res := r.sendChecked(ctx, it, settle)
	if it.members == nil {
		return []*jsonl.Result{res}
	}
	if res.Error == nil && len(it.results) == len(it.members) {
		return it.results
	}
	out := make([]*jsonl.Result, len(it.members))
	prefix := fmt.Sprintf("line %d: ", it.req.Line)
	for i, m := range it.members {
		e := *res.Error
		if rest, ok := strings.CutPrefix(e.Message, prefix); ok {
			e.Message = fmt.Sprintf("line %d: %s", m.req.Line, rest)
		}
		out[i] = &jsonl.Result{ID: m.req.ID, Line: m.req.Line, Metadata: m.req.Metadata, Attempts: res.Attempts, Error: &e}
	}
	return out
}
