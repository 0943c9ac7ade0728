package pipeline

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
		if got := retryAfter(tt.h, time.Now()); got != tt.want {
			t.Errorf("retryAfter(%s) = %v, want %v", tt.name, got, tt.want)
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
		a       attempt
		typ     string
		verdict verdict
	}{
		{"429", attempt{err: apiErr(429, "requests", "rate_limit_exceeded", "Rate limit reached")}, jsonl.ErrRateLimit, retry},
		{"too large", attempt{err: apiErr(429, "tokens", "rate_limit_exceeded", "Request too large for gpt-4o")}, jsonl.ErrRateLimit, giveUp},
		{"quota", attempt{err: apiErr(429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota")}, jsonl.ErrRateLimit, halt},
		{"500", attempt{err: apiErr(500, "server_error", "", "The server had an error")}, jsonl.ErrServer, retry},
		{"503 unreadable", attempt{err: &openai.RequestError{HTTPStatusCode: 503, HTTPStatus: "503 Service Unavailable"}}, jsonl.ErrServer, retry},
		{"400", attempt{err: apiErr(400, "invalid_request_error", "", "bad")}, jsonl.ErrAPI, giveUp},
		{"401", attempt{err: apiErr(401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-proj-****mnop.")}, jsonl.ErrAPI, halt},
		{"timeout", attempt{err: fmt.Errorf("post: %w", context.DeadlineExceeded)}, jsonl.ErrNetwork, retry},
		{"dial", attempt{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, jsonl.ErrNetwork, retry},
		{"bad body", attempt{err: &json.SyntaxError{}, reply: reply{status: 200}}, jsonl.ErrServer, retry},
		{"cut body", attempt{err: fmt.Errorf("read: %w", io.ErrUnexpectedEOF), reply: reply{status: 200}}, jsonl.ErrNetwork, retry},
		{"reset mid-body", attempt{err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}, reply: reply{status: 200}}, jsonl.ErrNetwork, retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := classify(tt.a, key, time.Now())
			if f.typ != tt.typ || f.verdict != tt.verdict {
				t.Errorf("classify(%v) = %s/%d, want %s/%d", tt.a.err, f.typ, f.verdict, tt.typ, tt.verdict)
			}
			if strings.Contains(f.msg, "sk-proj") {
				t.Errorf("classify(%v).msg = %q: quotes the key", tt.a.err, f.msg)
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
		if got := backoff(tt.prev, tt.after, top); got != tt.want {
			t.Errorf("backoff(%v, %v) at the top of its range = %v, want %v", tt.prev, tt.after, got, tt.want)
		}
	}
	if got := backoff(0, 100*time.Millisecond, func(time.Duration) time.Duration { return 0 }); got != 100*time.Millisecond {
		t.Errorf("backoff(0, 100ms) at the bottom of its range = %v, want the server's 100ms", got)
	}
}
