package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/jsonl"
)

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

// verdict is what to do about a failed call.
type verdict int

const (
	retry  verdict = iota // try again after a back-off
	record                // give the line this error
	halt                  // give the line this error and send nothing more: every request would fail the same way
)

// failure is a classified failed call.
type failure struct {
	typ     string // a jsonl.Err* type
	status  int
	msg     string
	verdict verdict
	after   time.Duration // how long the server asked us to wait, 0 if it did not say
}

// classify sorts a failed call into retry, record or halt, by status and
// error type. It is the one place that decides.
func classify(a attempt, key string) failure {
	f := failure{status: a.reply.status, after: retryAfter(a.reply.header)}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(a.err, &apiErr):
		f.status = apiErr.HTTPStatusCode
		f.msg = apiErr.Message
		if code, ok := apiErr.Code.(string); ok && code == "insufficient_quota" {
			f.typ, f.verdict = jsonl.ErrRateLimit, halt
			return f.redact(key)
		}
		if f.status == http.StatusTooManyRequests && strings.HasPrefix(apiErr.Message, "Request too large") {
			// It would be refused on every retry.
			f.typ, f.verdict = jsonl.ErrRateLimit, record
			return f.redact(key)
		}
	case errors.As(a.err, &reqErr):
		f.status = reqErr.HTTPStatusCode
		f.msg = fmt.Sprintf("%s with an unreadable error body", reqErr.HTTPStatus)
	case errors.Is(a.err, context.DeadlineExceeded):
		f.typ, f.msg, f.verdict = jsonl.ErrNetwork, "timed out", retry
		return f
	case f.status >= 200 && f.status < 300:
		// The server said yes and then sent something that is not an answer.
		f.typ, f.msg, f.verdict = jsonl.ErrServer, "unreadable response: "+a.err.Error(), retry
		return f.redact(key)
	default:
		f.typ, f.msg, f.verdict = jsonl.ErrNetwork, a.err.Error(), retry
		return f.redact(key)
	}
	switch s := f.status; {
	case s == http.StatusTooManyRequests:
		f.typ, f.verdict = jsonl.ErrRateLimit, retry
	case s >= 500:
		f.typ, f.verdict = jsonl.ErrServer, retry
	case s == http.StatusRequestTimeout || s == http.StatusConflict:
		f.typ, f.verdict = jsonl.ErrServer, retry
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		f.typ, f.verdict = jsonl.ErrAPI, halt
	default:
		f.typ, f.verdict = jsonl.ErrAPI, record
	}
	return f.redact(key)
}

// keyPattern matches API keys, whole or masked, as error messages quote
// them ("Incorrect API key provided: sk-ab***yz").
var keyPattern = regexp.MustCompile(`\b(sk|sess|rk)-[A-Za-z0-9_*\-.]{3,}`)

// redact removes the key, and anything shaped like one, from the message.
func (f failure) redact(key string) failure {
	if key != "" {
		f.msg = strings.ReplaceAll(f.msg, key, "[redacted]")
	}
	f.msg = keyPattern.ReplaceAllString(f.msg, "[redacted]")
	return f
}

// retryAfter is how long the response headers ask the client to wait:
// retry-after-ms, else retry-after, else the later of the x-ratelimit
// resets whose remaining count is zero.
func retryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := h.Get("retry-after"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, time.Until(t))
		}
	}
	var d time.Duration
	for _, kind := range []string{"requests", "tokens"} {
		if h.Get("x-ratelimit-remaining-"+kind) != "0" {
			continue
		}
		if r, err := time.ParseDuration(h.Get("x-ratelimit-reset-" + kind)); err == nil {
			d = max(d, r)
		}
	}
	return d
}

// Back-off bounds for retries the server gave no time for.
const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
)

// backoff is how long to wait before retry number n (1-based): exponential
// with full jitter, never shorter than what the server asked for.
func backoff(n int, after time.Duration) time.Duration {
	d := backoffBase << min(n-1, 16)
	d = min(d, backoffMax)
	j := rand.N(d) //nolint:gosec // jitter, not a secret
	if after > 0 {
		// Spread the workers that all got the same reset time a little.
		return after + rand.N(min(after/4, time.Second)+time.Millisecond)
	}
	return j
}

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
