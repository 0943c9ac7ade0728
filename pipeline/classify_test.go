package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

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
		{"bad body", attempt{err: errors.New("unexpected EOF"), reply: reply{status: 200}}, jsonl.ErrServer, retry},
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
