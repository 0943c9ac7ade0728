package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
	"github.com/sashabaranov/go-openai"
)

// verdict is what to do about a failed call.
type verdict int

const (
	retry  verdict = iota // try again after a back-off
	giveUp                // give the line this error
	halt                  // give the line this error and send nothing more: every request would fail the same way
)

// failure is a classified failed call.
type failure struct {
	typ     string // a jsonl.Err* type
	status  int
	msg     string
	verdict verdict
	after   time.Duration // how long the server asked us to wait, 0 if it did not say
	limit   budget.Reason // for a 429: the per-minute limit the server said was used up, if it said
	// noCapacity marks a flex request's 429 resource_unavailable: retried
	// with back-off, but no sign that a rate limit is reached.
	noCapacity bool
}

// classify sorts a failed call into retry, give up or halt, by status and
// error type. It is the one place that decides. now is the time the
// answer came, for a retry-after given as a date.
func classify(a attempt, key string, now time.Time) failure {
	f := failure{status: a.reply.status, after: retryAfter(a.reply.header, now)}
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
		if f.status == http.StatusTooManyRequests && apiErr.Code == "resource_unavailable" {
			f.typ, f.verdict, f.noCapacity = jsonl.ErrRateLimit, retry, true
			return f.redact(key)
		}
		if f.status == http.StatusTooManyRequests && strings.HasPrefix(apiErr.Message, "Request too large") {
			// It would be refused on every retry.
			f.typ, f.verdict = jsonl.ErrRateLimit, giveUp
			return f.redact(key)
		}
	case errors.As(a.err, &reqErr):
		f.status = reqErr.HTTPStatusCode
		f.msg = fmt.Sprintf("%s with an unreadable error body", reqErr.HTTPStatus)
	case errors.Is(a.err, context.DeadlineExceeded):
		f.typ, f.msg, f.verdict = jsonl.ErrNetwork, "timed out", retry
		return f
	case f.status >= 200 && f.status < 300 && cutOff(a.err):
		// The server said yes and the connection broke before the answer
		// was whole: a transport failure, as a drop before it is.
		f.typ, f.msg, f.verdict = jsonl.ErrNetwork, "the answer was cut off: "+a.err.Error(), retry
		return f.redact(key)
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
		f.limit = refusedLimit(apiErr, a.reply.header)
	case s >= 500:
		f.typ, f.verdict = jsonl.ErrServer, retry
	case s == http.StatusRequestTimeout || s == http.StatusConflict:
		f.typ, f.verdict = jsonl.ErrServer, retry
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		f.typ, f.verdict = jsonl.ErrAPI, halt
	default:
		f.typ, f.verdict = jsonl.ErrAPI, giveUp
	}
	return f.redact(key)
}

// cutOff reports whether err is a body read that the connection ended
// early: fewer bytes than the server announced, or a reset or timeout.
func cutOff(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne)
}

// keyPattern matches API keys, whole or masked, as error messages quote
// them ("Incorrect API key provided: sk-ab***yz").
var keyPattern = regexp.MustCompile(`\b(sk|sess|rk)-[A-Za-z0-9_*\-.]{3,}`)

// maskedPattern matches a masked key as APIs quote one: some of its first
// characters, stars, some of its last ("gsk_a*****yz").
var maskedPattern = regexp.MustCompile(`[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*`)

// redact removes the key, whole or masked whatever its prefix, and anything
// shaped like a key, from the message.
func (f failure) redact(key string) failure {
	if key != "" {
		f.msg = strings.ReplaceAll(f.msg, key, "[redacted]")
		f.msg = maskedPattern.ReplaceAllStringFunc(f.msg, func(m string) string {
			head, tail := m[:strings.IndexByte(m, '*')], m[strings.LastIndexByte(m, '*')+1:]
			if head+tail != "" && len(head)+len(tail) < len(key) && strings.HasPrefix(key, head) && strings.HasSuffix(key, tail) {
				return "[redacted]"
			}
			return m
		})
	}
	f.msg = keyPattern.ReplaceAllString(f.msg, "[redacted]")
	return f
}

// retryAfter is how long the response headers ask the client to wait:
// retry-after-ms, else retry-after, else the later of the x-ratelimit
// resets whose remaining count is zero. now is the time the headers came.
func retryAfter(h http.Header, now time.Time) time.Duration {
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
			return max(0, t.Sub(now))
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

// refusedLimit is the per-minute limit a 429 names: the error's type
// ("requests" or "tokens", as the API sends it), else its message ("... on
// requests per min (RPM)"), else the x-ratelimit header whose remaining
// count is zero. "" when none says.
func refusedLimit(apiErr *openai.APIError, h http.Header) budget.Reason {
	var typ, msg string
	if apiErr != nil {
		typ, msg = apiErr.Type, apiErr.Message
	}
	switch {
	case typ == "requests" || strings.Contains(msg, "on requests per min"):
		return budget.MinuteRequests
	case typ == "tokens" || strings.Contains(msg, "on tokens per min"):
		return budget.MinuteTokens
	case h != nil && h.Get("x-ratelimit-remaining-requests") == "0":
		return budget.MinuteRequests
	case h != nil && h.Get("x-ratelimit-remaining-tokens") == "0":
		return budget.MinuteTokens
	}
	return ""
}

// Back-off bounds for retries the server gave no time for.
const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
)

// backoff is how long to wait before the next retry of a line whose last
// wait was prev (0 before its first retry): decorrelated jitter, a random
// wait between the floor and three times the last one, capped at
// backoffMax. The floor is what the server asked for, else backoffBase.
// Lines refused together therefore come back spread out and drift further
// apart with each refusal, instead of returning in step. jitter is a
// random duration in [0, n).
func backoff(prev, after time.Duration, jitter func(time.Duration) time.Duration) time.Duration {
	lo := backoffBase
	if after > 0 {
		lo = after
	}
	hi := min(3*max(prev, lo), max(backoffMax, lo))
	if hi <= lo {
		return lo
	}
	return lo + jitter(hi-lo)
}
