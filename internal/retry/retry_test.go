package retry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"none", http.Header{}, 0},
		{"ms", http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"1"}}, 250 * time.Millisecond},
		{"seconds", http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{"reset requests", http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"1.5s"}, "X-Ratelimit-Remaining-Tokens": {"100"}, "X-Ratelimit-Reset-Tokens": {"6m0s"}}, 1500 * time.Millisecond},
		{"reset both", http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"120ms"}, "X-Ratelimit-Remaining-Tokens": {"0"}, "X-Ratelimit-Reset-Tokens": {"6m0s"}}, 6 * time.Minute},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
	}
	for _, tt := range tests {
		if got := After(tt.h, time.Now()); got != tt.want {
			t.Errorf("After(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	const key = "sk-proj-abcdefghijklmnop"
	apiErr := func(status int, typ, code, msg string) error {
		return &openai.APIError{HTTPStatusCode: status, Type: typ, Code: code, Message: msg}
	}
	tests := []struct {
		name    string
		err     error
		status  int
		typ     string
		verdict Verdict
	}{
		{"429", apiErr(429, "requests", "rate_limit_exceeded", "Rate limit reached"), 0, jsonl.ErrRateLimit, Retry},
		{"too large", apiErr(429, "tokens", "rate_limit_exceeded", "Request too large for gpt-4o"), 0, jsonl.ErrRateLimit, GiveUp},
		{"quota", apiErr(429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota"), 0, jsonl.ErrRateLimit, Halt},
		{"500", apiErr(500, "server_error", "", "The server had an error"), 0, jsonl.ErrServer, Retry},
		{"503 unreadable", &openai.RequestError{HTTPStatusCode: 503, HTTPStatus: "503 Service Unavailable"}, 0, jsonl.ErrServer, Retry},
		{"400", apiErr(400, "invalid_request_error", "", "bad"), 0, jsonl.ErrAPI, GiveUp},
		{"401", apiErr(401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-proj-****mnop."), 0, jsonl.ErrAPI, Halt},
		{"timeout", fmt.Errorf("post: %w", context.DeadlineExceeded), 0, jsonl.ErrNetwork, Retry},
		{"dial", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, 0, jsonl.ErrNetwork, Retry},
		{"bad body", &json.SyntaxError{}, 200, jsonl.ErrServer, Retry},
		{"cut body", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), 200, jsonl.ErrNetwork, Retry},
		{"reset mid-body", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, 200, jsonl.ErrNetwork, Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Classify(tt.err, tt.status, nil, key, time.Now())
			if f.Type != tt.typ || f.Verdict != tt.verdict {
				t.Errorf("Classify(%v) = %s/%d, want %s/%d", tt.err, f.Type, f.Verdict, tt.typ, tt.verdict)
			}
			if strings.Contains(f.Msg, "sk-proj") {
				t.Errorf("Classify(%v).Msg = %q: quotes the key", tt.err, f.Msg)
			}
		})
	}
}

// A 429 names the limit it refused for in its type, its message or its
// headers; pacing needs to know which.
func TestRefusedLimit(t *testing.T) {
	h := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name string
		err  *openai.APIError
		h    http.Header
		want budget.Reason
	}{
		{"type requests", &openai.APIError{Type: "requests"}, nil, budget.MinuteRequests},
		{"type tokens", &openai.APIError{Type: "tokens"}, nil, budget.MinuteTokens},
		{"message", &openai.APIError{Message: "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): Limit 30000"}, nil, budget.MinuteTokens},
		{"headers", &openai.APIError{}, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-remaining-tokens", "12"), budget.MinuteRequests},
		{"token headers", nil, h("x-ratelimit-remaining-requests", "3", "x-ratelimit-remaining-tokens", "0"), budget.MinuteTokens},
		{"unsaid", &openai.APIError{Message: "slow down"}, h("x-ratelimit-remaining-requests", "3"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refusedLimit(tt.err, tt.h); got != tt.want {
				t.Errorf("refusedLimit = %q, want %q", got, tt.want)
			}
		})
	}
}

// Back-off is decorrelated jitter: between the floor (the server's time,
// else 500 ms) and three times the last wait, capped at 30 s unless the
// server asks for more.
func TestBackoff(t *testing.T) {
	top := func(n time.Duration) time.Duration { return n } // the range's top
	tests := []struct {
		prev, after, want time.Duration
	}{
		{0, 0, 1500 * time.Millisecond},
		{1500 * time.Millisecond, 0, 4500 * time.Millisecond},
		{20 * time.Second, 0, 30 * time.Second},
		{0, 100 * time.Millisecond, 300 * time.Millisecond},
		{0, 45 * time.Second, 45 * time.Second},
	}
	for _, tt := range tests {
		if got := Backoff(tt.prev, tt.after, top); got != tt.want {
			t.Errorf("Backoff(%v, %v) at the top of its range = %v, want %v", tt.prev, tt.after, got, tt.want)
		}
	}
	if got := Backoff(0, 100*time.Millisecond, func(time.Duration) time.Duration { return 0 }); got != 100*time.Millisecond {
		t.Errorf("Backoff(0, 100ms) at the bottom of its range = %v, want the server's 100ms", got)
	}
}

// A call is tried again only for a failure worth it, and no more than
// --retries times, after the server's time if it gave one.
func TestPolicyNext(t *testing.T) {
	p := Policy{Retries: 2, Jitter: func(time.Duration) time.Duration { return 0 }}
	tests := []struct {
		name string
		n    int
		f    Failure
		want time.Duration
		ok   bool
	}{
		{"first retry", 1, Failure{Verdict: Retry}, BackoffBase, true},
		{"server's time", 2, Failure{Verdict: Retry, After: 3 * time.Second}, 3 * time.Second, true},
		{"retries used up", 3, Failure{Verdict: Retry}, 0, false},
		{"give up", 1, Failure{Verdict: GiveUp}, 0, false},
		{"halt", 1, Failure{Verdict: Halt}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := p.Next(tt.n, tt.f, 0)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Next(%d, %+v) = %v, %v; want %v, %v", tt.n, tt.f, got, ok, tt.want, tt.ok)
			}
		})
	}
}
