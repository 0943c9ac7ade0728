package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/jsonl"
	openai "github.com/sashabaranov/go-openai"
)

// sender is what a worker of the send stage (see run) does with an
// admitted item, a line or a pack of them, chosen once for the run: send
// it (sendLine); with --schema, send it and ask again while its answer
// does not fit (sendChecked); with --cache, serve it from the cache or
// send it (serveItem). It returns the item's lines' results in input
// order, and settles every call it makes through settle.
func (r *runner) sender(ctx context.Context, settle chan<- budget.Settlement) func(*item) []*jsonl.Result {
	work := r.sendLine
	switch {
	case r.cache != nil:
		work = r.serveItem
	case r.cfg.Schema != nil:
		work = r.sendChecked
	}
	return func(it *item) []*jsonl.Result { return work(ctx, it, settle) }
}

// sendLine sends one admitted item to its endpoint, giving each attempt
// up after --timeout and retrying what is worth retrying, and returns its
// lines' results in input order: the line's, or each member's of a pack,
// whose failure (and the retries before it) is every member's. Every
// reservation is settled through settle. A line admitted is sent, even if
// the run stops sending meanwhile: admission was the decision, and its
// reservation is already charged. Only a second signal (abort) abandons
// it: the call in flight is cancelled.
func (r *runner) sendLine(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	if it.result != nil {
		return it.spread(it.result)
	}
	body := it.body
	if it.members != nil {
		body = it.packBody()
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
		// The attempt. Only the model goes through go-openai's structs:
		// they pick the URL and run go-openai's checks on it; the body
		// sent is the item's own (rawBodyDoer), and so is the answer read.
		var a attempt
		cctx, cancel := r.stop.callContext(w.trace(ctx), r.cfg.Timeout)
		cctx = context.WithValue(cctx, bodyKey, body)
		cctx = context.WithValue(cctx, replyKey, &a.reply)
		it.attempts = it.prior + n
		start := r.cfg.Clock.Now()
		a.err = it.ep.call(cctx, r.client, it.model)
		a.latency = r.cfg.Clock.Now().Sub(start)
		cancel()
		if a.err == nil {
			a.ans, a.err = resultFromBody(it, a.reply.status, a.reply.body)
		}
		if a.err == nil && it.awaited() {
			it.answer = a.reply.body // for the response cache (cache.go)
		}
		a.reply.body = nil // read: the results hold what is kept
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
			for _, res := range a.ans.results {
				res.LatencyMS = a.latency.Milliseconds()
			}
			it.results, it.answered = a.ans.results, a.ans
			return a.ans.results
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

// failed is the result of an item that failed with f: its lines'.
func (r *runner) failed(it *item, f retry.Failure) []*jsonl.Result {
	res := errorResult(it.req, f.Type, fmt.Sprintf("line %d: %s", it.req.Line, f.Msg), f.Status)
	res.Attempts = it.attempts
	return it.spread(res)
}

// attempt is the outcome of one API call, as sendLine makes it.
type attempt struct {
	ans     answer // what a successful call answered
	reply   reply
	err     error
	latency time.Duration
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

// resultFromBody reads body, the answer it.endpoint gave with HTTP status
// status to the request of it (a line, or a pack of them), into the
// lines' results, by the endpoint's decoder, and prices them: this route's
// part of a result. A status outside 2xx is the API's error, returned as an
// *openai.APIError (or *openai.RequestError for a body that is no error
// object) for retry.Classify; a 2xx body that cannot be read as an answer is an
// error too.
//
// A synchronous answer costs what the tier it says it was served on
// charges (flex, priority), at the price of the model it names (a dated
// snapshot, say: budget.Prices.AnswerPrice); a line whose price is unknown
// has cost_usd null. A pack's whole prompt decides a long-context price,
// and each member pays its share of it: the members' costs add up to the
// call's, exactly, as their shares add up to its prompt, the only tokens
// an embedding bills.
func resultFromBody(it *item, status int, body []byte) (answer, error) {
	if status < 200 || status >= 300 {
		return answer{}, retry.APIError(status, body)
	}
	d := endpointFor(it.endpoint)
	b := d.body()
	if err := gojson.Unmarshal(body, b); err != nil {
		return answer{}, fmt.Errorf("read %s: %w", d.what, err)
	}
	a, err := b.result(it)
	if err != nil {
		return a, err
	}
	if !it.priced {
		for _, res := range a.results {
			res.CostUSD = jsonl.UnknownCost()
		}
		return a, nil
	}
	p := it.prices.AnswerPrice(it.price, a.model, budget.TierOf(a.serviceTier), a.usage.PromptTokens)
	for _, res := range a.results {
		u := res.Usage
		c := p.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
		res.CostUSD = jsonl.CostOf(int64(c))
		a.cost += c
	}
	return a, nil
}

// settle applies the settlements of the calls to the gate, as many at a
// time as have queued, so that the shared file is written once per batch,
// not once per call. It takes every settlement until in is closed, even
// after a signal: what reached the API must reach the ledger. When the
// shared state cannot be written, the run stops sending (storeFailed) and
// the settler goes on trying each later batch, so that a passing failure
// loses as little as it can; it never ends the run itself, which would
// drop the answers in flight.
func (r *runner) settle(ctx context.Context, in <-chan budget.Settlement) error {
	batch := make([]budget.Settlement, 0, max(cap(in), 1))
	for s := range in {
		batch = drainReady(in, append(batch[:0], s), cap(batch))
		if err := r.cfg.Gate.Settle(ctx, r.cfg.Clock.Now(), batch); err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // the run failed already
			}
			// Not tried again: the state may have been written and
			// only the ledger not, and a second try would settle the
			// day's counters twice.
			r.storeFailed(err)
		} else if r.cfg.Settled != nil {
			r.cfg.Settled()
		}
		for _, s := range batch {
			if !s.DayOnly {
				r.unsettled.Add(-1)
			}
		}
		r.settled.signal()
	}
	return nil
}

// settlement is what one call settles: the ledger gets a line and the
// budget moves from the estimate to what the API counted; an answer's
// usage and cost also go to the run's counters. A call that
// never left the process (wrote false) gives its whole reservation back
// and has no ledger line. A call the server took and never answered (a
// timeout, a dropped connection, an answer cut short, a call abandoned on
// a second signal) is settled at its estimate: the API usually bills it,
// and the ledger says so with the estimate's tokens.
func (r *runner) settlement(it *item, a attempt, f retry.Failure, wrote bool) budget.Settlement {
	if a.err == nil {
		u := a.ans.usage
		r.stats.PromptTokens.Add(u.PromptTokens)
		r.stats.CompletionTokens.Add(u.CompletionTokens)
		r.stats.CachedTokens.Add(u.CachedTokens)
		if it.priced {
			r.stats.Cost.Add(int64(a.ans.cost))
		} else {
			r.stats.Unpriced.Add(1)
		}
	}
	if !wrote {
		return budget.Settlement{Est: it.est}
	}
	e := &budget.LedgerEntry{
		Endpoint:  it.endpoint,
		Time:      r.cfg.Clock.Now(),
		ID:        it.req.ID,
		Line:      it.req.Line,
		Model:     it.model,
		Status:    a.reply.status,
		LatencyMS: a.latency.Milliseconds(),
		Attempt:   it.attempts,
		Error:     f.Type,
	}
	s := budget.Settlement{Est: it.est, Sent: true, Entry: e}
	switch {
	case a.err == nil:
		u := a.ans.usage
		if a.ans.model != "" {
			e.Model = a.ans.model
		}
		e.PromptTokens, e.CompletionTokens, e.CachedTokens = u.PromptTokens, u.CompletionTokens, u.CachedTokens
		s.Tokens = u.TotalTokens
		if it.priced {
			c := a.ans.cost
			e.CostUSD, s.Cost = &c, c
		}
	case a.reply.status == 0 || a.reply.status < http.StatusMultipleChoices:
		// Taken and not answered, or answered 2xx with a body that did
		// not parse: presumed billed.
		e.PromptTokens, e.CompletionTokens = it.prompt, it.maxOut
		s.Tokens, s.Cost = it.est.Tokens, it.est.Cost
		if it.priced {
			c := it.est.Cost
			e.CostUSD = &c
		}
	default:
		// The API refused it: nothing billed.
		if it.priced {
			var zero budget.Cost
			e.CostUSD = &zero
		}
	}
	return s
}

// observe reads a response's x-ratelimit-* headers. A server limit lower
// than the configured one replaces it, said once on stderr. A limit the
// server says is used up pauses every worker for the time one more request
// needs to refill (the reset header is the time to refill all of it, which
// would be far too long for a bucket), or until the reset if sooner.
func (r *runner) observe(ctx context.Context, h http.Header) {
	if h == nil {
		return
	}
	r.limitsMu.Lock()
	defer r.limitsMu.Unlock()
	lim := r.cfg.Gate.Limits()
	changed := false
	for _, k := range []struct {
		kind, flag string
		cur        *int64
	}{{"requests", "--rpm", &lim.RPM}, {"tokens", "--tpm", &lim.TPM}} {
		n, err := strconv.ParseInt(h.Get("x-ratelimit-limit-"+k.kind), 10, 64)
		if err != nil || n <= 0 || (*k.cur > 0 && n >= *k.cur) {
			continue
		}
		r.cfg.Log.Warn("the server allows fewer "+k.kind+" per minute than "+k.flag+": using its limit", "server", n, "configured", *k.cur)
		*k.cur = n
		changed = true
	}
	if changed {
		r.cfg.Gate.SetLimits(lim)
	}
	var pause time.Duration
	if h.Get("x-ratelimit-remaining-requests") == "0" && lim.RPM > 0 {
		if d, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests")); err == nil {
			pause = min(d, time.Minute/time.Duration(lim.RPM))
		}
	}
	if pause > 0 {
		now := r.cfg.Clock.Now()
		// Only a pause: at the limit's own pace the server is at zero after
		// nearly every request, and the gate's bucket already agrees.
		if err := r.cfg.Gate.Pause(ctx, now, now.Add(pause)); err == nil {
			r.cfg.Log.Debug("server limit used up", "pause", pause)
		}
	}
}

// refused tells the gate of a 429 after which every process sharing the
// budget pauses for pause, and when the gate finds the server stricter
// than its minute limit it paces that limit per second, which is said
// once.
func (r *runner) refused(ctx context.Context, f retry.Failure, h http.Header, pause time.Duration) error {
	now := r.cfg.Clock.Now()
	newly, err := r.cfg.Gate.Refused(ctx, now, budget.Refusal{Limit: f.Limit, Used: serverUsage(h), Until: now.Add(pause)})
	if err != nil || newly == "" {
		return err
	}
	lim := r.cfg.Gate.Limits()
	kind, perMin, said := "request", lim.RPM, &r.pacingSaid[0]
	if newly == budget.PacedTokens {
		kind, perMin, said = "token", lim.TPM, &r.pacingSaid[1]
	}
	if said.CompareAndSwap(false, true) {
		r.cfg.Log.Warn(fmt.Sprintf("the server enforces its %s limit per second: pacing at %s a second", kind, paceFigure(budget.PaceRate(perMin))))
	}
	return nil
}

// paceFigure writes a rate with one decimal below 100 a second.
func paceFigure(rate float64) string {
	if rate < 100 {
		return strconv.FormatFloat(rate, 'f', 1, 64)
	}
	return strconv.FormatFloat(rate, 'f', 0, 64)
}

// serverUsage is what the headers say is used of the server's limits.
func serverUsage(h http.Header) budget.ServerUsage {
	used := func(kind string) float64 {
		l, err1 := strconv.ParseFloat(h.Get("x-ratelimit-limit-"+kind), 64)
		r, err2 := strconv.ParseFloat(h.Get("x-ratelimit-remaining-"+kind), 64)
		if err1 != nil || err2 != nil {
			return -1
		}
		return l - r
	}
	return budget.ServerUsage{Requests: used("requests"), Tokens: used("tokens")}
}
