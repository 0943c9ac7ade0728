// Package retry is the one policy for calls to the API that fail, on both
// routes: Classify sorts a failed call into retry, give up or halt, by its
// status and error; Policy.Next says whether the call is tried again and
// after how long (what the server asked for, else decorrelated jitter).
// The synchronous route's retry loop (pipeline's sendLine) and the Batch
// API's (batchapi.Client.Retry) both decide by it.
package retry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// Verdict is what to do about a failed call.
type Verdict int

// The verdicts.
const (
	Retry  Verdict = iota // try again after a back-off
	GiveUp                // give the line this error
	Halt                  // give the line this error and send nothing more: every request would fail the same way
)

// Failure is a classified failed call.
type Failure struct {
	Type    string // a jsonl.Err* type
	Status  int
	Msg     string
	Verdict Verdict
	After   time.Duration // how long the server asked us to wait, 0 if it did not say
	Limit   budget.Reason // for a 429: the per-minute limit the server said was used up, if it said
	// NoCapacity marks a flex request's 429 resource_unavailable: retried
	// with back-off, but no sign that a rate limit is reached.
	NoCapacity bool
}

// Classify sorts a failed call into retry, give up or halt, by status and
// error type: the one place that decides. err is the call's error (an
// *openai.APIError or *openai.RequestError for an answer that was an
// error), status and header what its HTTP response said, if any; key is
// redacted from the message; now is the time the answer came, for a
// retry-after given as a date.
func Classify(err error, status int, header http.Header, key string, now time.Time) Failure {
	f := Failure{Status: status, After: After(header, now)}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr):
		f.Status = apiErr.HTTPStatusCode
		f.Msg = apiErr.Message
		if code, ok := apiErr.Code.(string); ok && code == "insufficient_quota" {
			f.Type, f.Verdict = jsonl.ErrRateLimit, Halt
			return f.Redact(key)
		}
		if f.Status == http.StatusTooManyRequests && apiErr.Code == "resource_unavailable" {
			f.Type, f.Verdict, f.NoCapacity = jsonl.ErrRateLimit, Retry, true
			return f.Redact(key)
		}
		if f.Status == http.StatusTooManyRequests && strings.HasPrefix(apiErr.Message, "Request too large") {
			// It would be refused on every retry.
			f.Type, f.Verdict = jsonl.ErrRateLimit, GiveUp
			return f.Redact(key)
		}
	case errors.As(err, &reqErr):
		f.Status = reqErr.HTTPStatusCode
		f.Msg = fmt.Sprintf("%s with an unreadable error body", reqErr.HTTPStatus)
	case errors.Is(err, context.DeadlineExceeded):
		f.Type, f.Msg, f.Verdict = jsonl.ErrNetwork, "timed out", Retry
		return f
	case f.Status >= 200 && f.Status < 300 && cutOff(err):
		// The server said yes and the connection broke before the answer
		// was whole: a transport failure, as a drop before it is.
		f.Type, f.Msg, f.Verdict = jsonl.ErrNetwork, "the answer was cut off: "+err.Error(), Retry
		return f.Redact(key)
	case f.Status >= 200 && f.Status < 300:
		// The server said yes and then sent something that is not an answer.
		f.Type, f.Msg, f.Verdict = jsonl.ErrServer, "unreadable response: "+err.Error(), Retry
		return f.Redact(key)
	default:
		f.Type, f.Msg, f.Verdict = jsonl.ErrNetwork, err.Error(), Retry
		return f.Redact(key)
	}
	switch s := f.Status; {
	case s == http.StatusTooManyRequests:
		f.Type, f.Verdict = jsonl.ErrRateLimit, Retry
		f.Limit = refusedLimit(apiErr, header)
	case s >= 500:
		f.Type, f.Verdict = jsonl.ErrServer, Retry
	case s == http.StatusRequestTimeout || s == http.StatusConflict:
		f.Type, f.Verdict = jsonl.ErrServer, Retry
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		f.Type, f.Verdict = jsonl.ErrAPI, Halt
	default:
		f.Type, f.Verdict = jsonl.ErrAPI, GiveUp
	}
	return f.Redact(key)
}

// APIError is the error an error body says, as go-openai makes it, for
// Classify: an *openai.APIError, or an *openai.RequestError for a body
// that is no error object.
func APIError(status int, body []byte) error {
	var er openai.ErrorResponse
	if err := json.Unmarshal(body, &er); err != nil || er.Error == nil {
		return &openai.RequestError{HTTPStatus: http.StatusText(status), HTTPStatusCode: status, Err: err, Body: body}
	}
	er.Error.HTTPStatusCode = status
	er.Error.HTTPStatus = http.StatusText(status)
	return er.Error
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

// Redact removes the key, whole or masked whatever its prefix, and
// anything shaped like a key, from the message.
func (f Failure) Redact(key string) Failure {
	if key != "" {
		f.Msg = strings.ReplaceAll(f.Msg, key, "[redacted]")
		f.Msg = maskedPattern.ReplaceAllStringFunc(f.Msg, func(m string) string {
			head, tail := m[:strings.IndexByte(m, '*')], m[strings.LastIndexByte(m, '*')+1:]
			if head+tail != "" && len(head)+len(tail) < len(key) && strings.HasPrefix(key, head) && strings.HasSuffix(key, tail) {
				return "[redacted]"
			}
			return m
		})
	}
	f.Msg = keyPattern.ReplaceAllString(f.Msg, "[redacted]")
	return f
}

// After is how long the response headers ask the client to wait:
// retry-after-ms, else retry-after, else the later of the x-ratelimit
// resets whose remaining count is zero. now is the time the headers came.
func After(h http.Header, now time.Time) time.Duration {
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
	BackoffBase = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
)

// Policy is how failed calls are tried again. The zero value tries none.
type Policy struct {
	Retries int // retries after the first attempt
	// Jitter is a random duration in [0, n) for the back-off; nil draws
	// from math/rand/v2.
	Jitter func(n time.Duration) time.Duration
}

// Next says whether a call whose attempt n (from 1) failed with f is tried
// again, and after how long: a failure worth a retry, while retries are
// left. prev is the wait before attempt n (0 before the first retry).
func (p Policy) Next(n int, f Failure, prev time.Duration) (time.Duration, bool) {
	if f.Verdict != Retry || n > p.Retries {
		return 0, false
	}
	jitter := p.Jitter
	if jitter == nil {
		jitter = random
	}
	return Backoff(prev, f.After, jitter), true
}

// Backoff is how long to wait before the next retry of a call whose last
// wait was prev (0 before its first retry): decorrelated jitter, a random
// wait between the floor and three times the last one, capped at 30 s.
// The floor is what the server asked for (after), else BackoffBase. Calls
// refused together therefore come back spread out and drift further apart
// with each refusal, instead of returning in step. jitter is a random
// duration in [0, n).
func Backoff(prev, after time.Duration, jitter func(time.Duration) time.Duration) time.Duration {
	lo := BackoffBase
	if after > 0 {
		lo = after
	}
	hi := min(3*max(prev, lo), max(backoffMax, lo))
	if hi <= lo {
		return lo
	}
	return lo + jitter(hi-lo)
}

// random is a uniform random duration in [0, n); 0 when n <= 0.
func random(n time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	return rand.N(n) //nolint:gosec // jitter, not a secret
}
