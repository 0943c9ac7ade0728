package openaitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	t.Cleanup(s.Close)
	return s
}

// reply is one raw HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// errorBody is the API's error body.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (r reply) apiError(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e
}

// post sends body to the chat-completions endpoint of s with key.
func post(t *testing.T, s *Server, key, body string) reply {
	t.Helper()
	return do(t, http.MethodPost, s.URL()+"/chat/completions", key, body)
}

func do(t *testing.T, method, url, key, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

const hello = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"}]}`

func client(s *Server, key string) *openai.Client {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = s.URL()
	return openai.NewClientWithConfig(cfg)
}

func TestGoOpenAIClient(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Seed: 1})
	if u := s.URL(); !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.HasSuffix(u, "/v1") {
		t.Errorf("URL() = %q, want http://127.0.0.1:port/v1", u)
	}
	c := client(s, "sk-test")
	ctx := context.Background()

	resp, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "Hello world"}},
	})
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	if got, want := resp.Model, "gpt-4o-mini-2024-07-18"; got != want {
		t.Errorf("Model = %q, want %q", got, want)
	}
	if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" || resp.Created == 0 {
		t.Errorf("ID, Object, Created = %q, %q, %d, want chatcmpl-..., chat.completion, a time", resp.ID, resp.Object, resp.Created)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("len(Choices) = %d, want 1", len(resp.Choices))
	}
	ch := resp.Choices[0]
	if ch.Message.Content != "answer: Hello world" || ch.Message.Role != "assistant" || ch.FinishReason != openai.FinishReasonStop {
		t.Errorf("choice = %q %q %q, want assistant \"answer: Hello world\" stop", ch.Message.Role, ch.Message.Content, ch.FinishReason)
	}
	// "answer: Hello world" is answer, :, " Hello", " world" in o200k_base.
	u := resp.Usage
	if u.PromptTokens != 9 || u.CompletionTokens != 4 || u.TotalTokens != 13 {
		t.Errorf("Usage = %d+%d=%d, want 9+4=13", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}
	if u.PromptTokensDetails == nil || u.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("PromptTokensDetails = %+v, want cached_tokens 0", u.PromptTokensDetails)
	}
	if got := resp.GetRateLimitHeaders(); got.LimitRequests != 0 {
		t.Errorf("rate-limit headers without limits = %+v, want none", got)
	}

	// A long prompt seen before is served from the cache.
	long := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 150)
	req := openai.ChatCompletionRequest{
		Model:               "gpt-4.1",
		MaxCompletionTokens: 3,
		Messages: []openai.ChatCompletionMessage{
			{Role: "system", Content: "Repeat."},
			{Role: "user", MultiContent: []openai.ChatMessagePart{{Type: "text", Text: long}}},
		},
	}
	first, err := c.CreateChatCompletion(ctx, req)
	if err != nil {
		t.Fatalf("CreateChatCompletion(long): %v", err)
	}
	second, err := c.CreateChatCompletion(ctx, req)
	if err != nil {
		t.Fatalf("CreateChatCompletion(long again): %v", err)
	}
	p := first.Usage.PromptTokens
	if p < 1024 {
		t.Fatalf("long prompt = %d tokens, want >= 1024", p)
	}
	if got := first.Usage.PromptTokensDetails.CachedTokens; got != 0 {
		t.Errorf("first cached_tokens = %d, want 0", got)
	}
	if got, want := second.Usage.PromptTokensDetails.CachedTokens, p/128*128; got != want {
		t.Errorf("second cached_tokens = %d, want %d (prompt %d)", got, want, p)
	}
	if got := second.Choices[0]; got.FinishReason != openai.FinishReasonLength || got.Message.Content != "answer: The" || second.Usage.CompletionTokens != 3 {
		t.Errorf("max_completion_tokens 3: %q %q %d tokens, want \"answer: The\" length 3 tokens", got.Message.Content, got.FinishReason, second.Usage.CompletionTokens)
	}
	if got, want := second.Model, "gpt-4.1-2025-04-14"; got != want {
		t.Errorf("Model = %q, want %q", got, want)
	}

	st := s.Stats()
	if st.Requests != 3 || st.Succeeded != 3 || st.CachedTokens != int64(p/128*128) || st.PromptTokens != int64(9+2*p) {
		t.Errorf("Stats = %+v, want 3 requests, 3 succeeded, %d cached, %d prompt tokens", st, p/128*128, 9+2*p)
	}
}

func TestGoOpenAIErrors(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Key: "sk-right-key-000000"})
	_, err := client(s, "sk-wrong-key-123456789").CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
	})
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("wrong key: err = %v, want an *openai.APIError", err)
	}
	if apiErr.HTTPStatusCode != 401 || apiErr.Code != "invalid_api_key" || apiErr.Type != "invalid_request_error" {
		t.Errorf("wrong key: %d %v %q, want 401 invalid_api_key invalid_request_error", apiErr.HTTPStatusCode, apiErr.Code, apiErr.Type)
	}
	if want := "Incorrect API key provided: sk-wr***************89."; !strings.HasPrefix(apiErr.Message, want) {
		t.Errorf("wrong key message = %q, want prefix %q", apiErr.Message, want)
	}
}

func TestToolChoiceRequired(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	resp, err := client(s, "k").CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "weather?"}},
		Tools: []openai.Tool{
			{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: "get_weather"}},
			{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: "other"}},
		},
		ToolChoice: "required",
	})
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	ch := resp.Choices[0]
	if ch.FinishReason != openai.FinishReasonToolCalls || len(ch.Message.ToolCalls) != 1 || ch.Message.Content != "" {
		t.Fatalf("choice = %+v, want one tool call, no content, finish tool_calls", ch)
	}
	if tc := ch.Message.ToolCalls[0]; tc.Function.Name != "get_weather" || tc.Function.Arguments != "{}" || !strings.HasPrefix(tc.ID, "call_") {
		t.Errorf("tool call = %+v, want call_... get_weather {}", tc)
	}
	// The wire has "content": null, as the API sends it.
	r := post(t, s, "", `{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}`)
	if !bytes.Contains(r.body, []byte(`"content": null`)) {
		t.Errorf("tool-call body = %s, want \"content\": null", r.body)
	}
}

func TestPromptTokens(t *testing.T) {
	t.Parallel()
	// The OpenAI cookbook's example, with the counts the API reported.
	cookbook := `[{"role":"system","content":"You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
{"role":"system","name":"example_user","content":"New synergies will help drive top-line growth."},
{"role":"system","name":"example_assistant","content":"Things working well together will increase revenue."},
{"role":"system","name":"example_user","content":"Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
{"role":"system","name":"example_assistant","content":"Let's talk later when we're less busy about how to do better."},
{"role":"user","content":"This late pivot means we don't have time to boil the ocean for the client deliverable."}]`
	tests := []struct {
		model, messages string
		want            int
	}{
		{"gpt-4o-mini", `[{"role":"user","content":"Hello world"}]`, 9},
		{"gpt-4o-mini", `[{"role":"user","content":[{"type":"text","text":"Hello"},{"type":"text","text":" world"}]}]`, 9},
		{"gpt-4o-mini", `[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello world"}]`, 9 + 3 + 1 + 3},
		{"gpt-3.5-turbo", cookbook, 129},
		{"gpt-4", cookbook, 129},
		{"gpt-4o", cookbook, 124},
		{"gpt-4o-mini", cookbook, 124},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			body := `{"model":"` + tt.model + `","messages":` + tt.messages + `}`
			r := post(t, s, "", body)
			var resp struct {
				Usage struct {
					PromptTokens int `json:"prompt_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(r.body, &resp); r.status != 200 || err != nil {
				t.Fatalf("post: %d %s (%v)", r.status, r.body, err)
			}
			if resp.Usage.PromptTokens != tt.want {
				t.Errorf("prompt_tokens(%s, %s) = %d, want %d", tt.model, tt.messages, resp.Usage.PromptTokens, tt.want)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body  string
		status      int
		typ, prefix string
		param, code string // "" for null
	}{
		{"invalid json", `{"model":`, 400, "invalid_request_error", "We could not parse the JSON body of your request.", "", ""},
		{"no model", `{"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "you must provide a model parameter", "", ""},
		{"no messages", `{"model":"gpt-4o-mini"}`, 400, "invalid_request_error", "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"},
		{"empty messages", `{"model":"gpt-4o-mini","messages":[]}`, 400, "invalid_request_error", "[] is too short - 'messages'", "messages", "empty_array"},
		{"bad role", `{"model":"gpt-4o-mini","messages":[{"role":"robot","content":"x"}]}`, 400, "invalid_request_error", "Invalid value: 'robot'.", "messages[0].role", "invalid_value"},
		{"max_tokens on o3", `{"model":"o3","max_tokens":10,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error",
			"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter"},
		{"max_tokens on gpt-5-mini", `{"model":"gpt-5-mini","max_tokens":10,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "Unsupported parameter: 'max_tokens'", "max_tokens", "unsupported_parameter"},
		{"temperature 3", `{"model":"gpt-4o-mini","temperature":3,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "Invalid 'temperature': decimal above maximum value.", "temperature", "decimal_above_max_value"},
		{"temperature -1", `{"model":"gpt-4o-mini","temperature":-1,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "Invalid 'temperature': decimal below minimum value.", "temperature", "decimal_below_min_value"},
		{"max_tokens 0", `{"model":"gpt-4o-mini","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "Invalid 'max_tokens': integer below minimum value.", "max_tokens", "integer_below_min_value"},
		{"unknown field", `{"model":"gpt-4o-mini","custom_id":"q1","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "Unrecognized request argument supplied: custom_id", "", ""},
		{"asked for 400", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x __status_400__"}]}`, 400, "invalid_request_error", "This request asked for a 400", "messages", ""},
		{"asked for 500", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x __status_500__"}]}`, 500, "server_error", "The server had an error while processing your request. Sorry about that!", "", ""},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(t, s, "", tt.body)
			e := r.apiError(t).Error
			str := func(p *string) string {
				if p == nil {
					return ""
				}
				return *p
			}
			if r.status != tt.status || e.Type != tt.typ || !strings.HasPrefix(e.Message, tt.prefix) || str(e.Param) != tt.param || str(e.Code) != tt.code {
				t.Errorf("post(%s) = %d %q %q param %q code %q, want %d %q %q... param %q code %q",
					tt.body, r.status, e.Type, e.Message, str(e.Param), str(e.Code), tt.status, tt.typ, tt.prefix, tt.param, tt.code)
			}
		})
	}
	// o3 takes max_completion_tokens.
	if r := post(t, s, "", `{"model":"o3","max_completion_tokens":10,"messages":[{"role":"user","content":"x"}]}`); r.status != 200 {
		t.Errorf("o3 with max_completion_tokens = %d %s, want 200", r.status, r.body)
	}
	r := do(t, http.MethodGet, s.URL()+"/models", "", "")
	if e := r.apiError(t).Error; r.status != 404 || e.Message != "Invalid URL (GET /v1/models)" {
		t.Errorf("GET /v1/models = %d %q, want 404 \"Invalid URL (GET /v1/models)\"", r.status, e.Message)
	}
	st := s.Stats()
	if want := len(tests) - 1 + 1; st.BadRequests != want || st.Injected != 1 || st.Succeeded != 1 {
		t.Errorf("Stats = %+v, want %d bad requests, 1 injected, 1 succeeded", st, want)
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	const key = "sk-proj-RightKey0123456789"
	s := newServer(t, Config{Key: key})
	if r := post(t, s, key, hello); r.status != 200 {
		t.Errorf("right key = %d %s, want 200", r.status, r.body)
	}
	wrong := "sk-proj-WrongKey9876543210"
	r := post(t, s, wrong, hello)
	e := r.apiError(t).Error
	if r.status != 401 || e.Code == nil || *e.Code != "invalid_api_key" {
		t.Errorf("wrong key = %d %s, want 401 invalid_api_key", r.status, r.body)
	}
	if want := "Incorrect API key provided: sk-pr*******************10. You can find your API key at https://platform.openai.com/account/api-keys."; e.Message != want {
		t.Errorf("wrong key message = %q, want %q", e.Message, want)
	}
	if bytes.Contains(r.body, []byte(wrong)) || bytes.Contains(r.body, []byte("WrongKey")) {
		t.Errorf("401 body %s shows the key", r.body)
	}
	if r := post(t, s, "", hello); r.status != 401 || !strings.HasPrefix(r.apiError(t).Error.Message, "You didn't provide an API key.") {
		t.Errorf("no key = %d %s, want 401 \"You didn't provide an API key.\"", r.status, r.body)
	}
}

func TestMaskKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ key, want string }{
		{"sk-abcdefghijklyz", "sk-ab**********yz"},
		{"short", "*****"},
		{"sk-12345678", "***********"},
	}
	for _, tt := range tests {
		if got := maskKey(tt.key); got != tt.want {
			t.Errorf("maskKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{time.Microsecond, "1ms"},
		{120 * time.Millisecond, "120ms"},
		{time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{6 * time.Minute, "6m0s"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestDatedModel(t *testing.T) {
	t.Parallel()
	tests := []struct{ model, want string }{
		{"gpt-4o-mini", "gpt-4o-mini-2024-07-18"},
		{"gpt-4o", "gpt-4o-2024-08-06"},
		{"gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"},
		{"gpt-4.1", "gpt-4.1-2025-04-14"},
		{"o3", "o3-2025-04-16"},
		{"o4-mini", "o4-mini-2025-04-16"},
		{"gpt-5", "gpt-5-2025-08-07"},
		{"gpt-5-mini", "gpt-5-mini-2025-08-07"},
		{"gpt-4", "gpt-4-0613"},
		{"gpt-3.5-turbo", "gpt-3.5-turbo-0125"},
		{"gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"},
		{"my-model", "my-model"},
	}
	for _, tt := range tests {
		if got := DatedModel(tt.model); got != tt.want {
			t.Errorf("DatedModel(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}

// wantHeaders checks the named response headers.
func wantHeaders(t *testing.T, r reply, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestRequestBucket(t *testing.T) {
	t.Parallel()
	c := newClock()
	s := newServer(t, Config{RPM: 60, Now: c.Now})
	for i := range 59 {
		if r := post(t, s, "", hello); r.status != 200 {
			t.Fatalf("request %d = %d %s, want 200", i+1, r.status, r.body)
		}
		// A client that has its answer finds it counted.
		if st := s.Stats(); st.Succeeded != i+1 {
			t.Fatalf("after request %d, Stats().Succeeded = %d", i+1, st.Succeeded)
		}
	}
	// go-openai reads the headers of the 60th.
	resp, err := client(s, "k").CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "Hello world"}},
	})
	if err != nil {
		t.Fatalf("request 60: %v", err)
	}
	if h := resp.GetRateLimitHeaders(); h.LimitRequests != 60 || h.RemainingRequests != 0 || h.ResetRequests.String() != "1m0s" {
		t.Errorf("request 60 GetRateLimitHeaders() = %+v, want limit 60, remaining 0, reset 1m0s", h)
	}
	r := post(t, s, "", hello)
	if r.status != 429 {
		t.Fatalf("request 61 = %d %s, want 429", r.status, r.body)
	}
	e := r.apiError(t).Error
	want := "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more."
	if e.Message != want || e.Type != "requests" || e.Code == nil || *e.Code != "rate_limit_exceeded" {
		t.Errorf("429 = %q %q %v, want %q requests rate_limit_exceeded", e.Message, e.Type, e.Code, want)
	}
	wantHeaders(t, r, map[string]string{
		"retry-after":                    "1",
		"retry-after-ms":                 "1000",
		"x-ratelimit-limit-requests":     "60",
		"x-ratelimit-remaining-requests": "0",
		"x-ratelimit-reset-requests":     "1m0s",
		"x-ratelimit-limit-tokens":       "",
	})
	for _, h := range []string{"x-request-id", "openai-processing-ms", "openai-model"} {
		if r.header.Get(h) == "" {
			t.Errorf("429 has no %s header", h)
		}
	}

	// The bucket refills at 1 a second: half a second is not enough.
	c.Advance(500 * time.Millisecond)
	r = post(t, s, "", hello)
	wantHeaders(t, r, map[string]string{"retry-after": "1", "retry-after-ms": "500"})
	if r.status != 429 || !strings.Contains(r.apiError(t).Error.Message, "Please try again in 500ms.") {
		t.Errorf("after 0.5s = %d %s, want 429 try again in 500ms", r.status, r.body)
	}
	c.Advance(500 * time.Millisecond)
	r = post(t, s, "", hello)
	if r.status != 200 {
		t.Fatalf("after 1s = %d %s, want 200", r.status, r.body)
	}
	wantHeaders(t, r, map[string]string{
		"x-ratelimit-limit-requests":     "60",
		"x-ratelimit-remaining-requests": "0",
		"x-ratelimit-reset-requests":     "1m0s",
		"openai-model":                   "gpt-4o-mini-2024-07-18",
	})
	c.Advance(30 * time.Second)
	r = post(t, s, "", hello)
	wantHeaders(t, r, map[string]string{"x-ratelimit-remaining-requests": "29", "x-ratelimit-reset-requests": "31s"})

	st := s.Stats()
	if st.Requests != 64 || st.Succeeded != 62 || st.RateLimited != 2 {
		t.Errorf("Stats = %+v, want 64 requests, 62 succeeded, 2 rate limited", st)
	}
}

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	c := newClock()
	s := newServer(t, Config{TPM: 1000, Now: c.Now})
	// 9 prompt tokens + 400 output = 409 tokens a request.
	body := `{"model":"gpt-4o-mini","max_tokens":400,"messages":[{"role":"user","content":"Hello world"}]}`
	for i := range 2 {
		if r := post(t, s, "", body); r.status != 200 {
			t.Fatalf("request %d = %d %s, want 200", i+1, r.status, r.body)
		}
	}
	r := post(t, s, "", body)
	e := r.apiError(t).Error
	// 182 tokens left; 227 more take 13.62s at 1000 a minute.
	want := "Rate limit reached for gpt-4o-mini in organization org-fake on tokens per min (TPM): Limit 1000, Used 818, Requested 409. Please try again in 13.62s."
	if r.status != 429 || e.Type != "tokens" || !strings.HasPrefix(e.Message, want) {
		t.Errorf("third = %d %q %q, want 429 tokens %q", r.status, e.Type, e.Message, want)
	}
	wantHeaders(t, r, map[string]string{
		"retry-after":                  "14",
		"retry-after-ms":               "13620",
		"x-ratelimit-limit-tokens":     "1000",
		"x-ratelimit-remaining-tokens": "182",
		"x-ratelimit-reset-tokens":     "49.08s",
	})

	// Without max tokens a request is charged 4096 for output: too large.
	r = post(t, s, "", hello)
	e = r.apiError(t).Error
	want = "Request too large for gpt-4o-mini in organization org-fake on tokens per min (TPM): Limit 1000, Requested 4105."
	if r.status != 429 || e.Type != "tokens" || !strings.HasPrefix(e.Message, want) {
		t.Errorf("too large = %d %q %q, want 429 tokens %q", r.status, e.Type, e.Message, want)
	}
	c.Advance(13620 * time.Millisecond)
	if r := post(t, s, "", body); r.status != 200 {
		t.Errorf("after 13.62s = %d %s, want 200", r.status, r.body)
	}
}

func TestWindow(t *testing.T) {
	t.Parallel()
	c := newClock()
	// 60 RPM in 10s windows: 10 requests a window.
	s := newServer(t, Config{RPM: 60, Window: 10 * time.Second, Now: c.Now})
	c.Advance(4 * time.Second)
	for i := range 10 {
		if r := post(t, s, "", hello); r.status != 200 {
			t.Fatalf("request %d = %d %s, want 200", i+1, r.status, r.body)
		}
	}
	r := post(t, s, "", hello)
	if r.status != 429 {
		t.Fatalf("request 11 = %d %s, want 429", r.status, r.body)
	}
	wantHeaders(t, r, map[string]string{
		"retry-after":                    "6",
		"retry-after-ms":                 "6000",
		"x-ratelimit-limit-requests":     "60", // per minute, as the real API states it
		"x-ratelimit-remaining-requests": "0",
		"x-ratelimit-reset-requests":     "6s",
	})
	// A bucket would have refilled by now; the window has not ended.
	c.Advance(5999 * time.Millisecond)
	if r := post(t, s, "", hello); r.status != 429 {
		t.Errorf("1ms before the window ends = %d, want 429", r.status)
	}
	c.Advance(time.Millisecond)
	for i := range 10 {
		if r := post(t, s, "", hello); r.status != 200 {
			t.Fatalf("next window, request %d = %d %s, want 200", i+1, r.status, r.body)
		}
	}
	if r := post(t, s, "", hello); r.status != 429 {
		t.Errorf("next window, request 11 = %d, want 429", r.status)
	}
}

func TestInjectedFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind   Failure
		status int // 0: the connection drops
		check  func(t *testing.T, r reply)
	}{
		{Fail500, 500, func(t *testing.T, r reply) {
			if e := r.apiError(t).Error; e.Type != "server_error" || !strings.HasPrefix(e.Message, "The server had an error") {
				t.Errorf("500 body = %s, want server_error", r.body)
			}
		}},
		{Fail503, 503, func(t *testing.T, r reply) {
			if e := r.apiError(t).Error; e.Type != "server_error" || e.Message != "The engine is currently overloaded, please try again later" {
				t.Errorf("503 body = %s, want overloaded server_error", r.body)
			}
		}},
		{FailBadBody, 200, func(t *testing.T, r reply) {
			if json.Valid(r.body) || r.header.Get("Content-Type") != "application/json" || !bytes.HasPrefix(r.body, []byte(`{`)) {
				t.Errorf("bad body = %s (%s), want invalid JSON as application/json", r.body, r.header.Get("Content-Type"))
			}
		}},
		{FailDrop, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			s := newServer(t, Config{FailRate: 1, Failures: []Failure{tt.kind}})
			if tt.status == 0 {
				resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(hello))
				if err == nil {
					resp.Body.Close()
					t.Fatalf("dropped request = %d, want a transport error", resp.StatusCode)
				}
			} else {
				r := post(t, s, "", hello)
				if r.status != tt.status {
					t.Fatalf("status = %d, want %d", r.status, tt.status)
				}
				tt.check(t, r)
			}
			// go-openai sees the failure as an error too.
			_, err := client(s, "k").CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "x"}},
			})
			if err == nil {
				t.Errorf("go-openai: no error, want one")
			}
			if st := s.Stats(); st.Injected != st.Requests || st.Succeeded != 0 {
				t.Errorf("Stats = %+v, want every request injected", st)
			}
		})
	}
}

func TestFailRateIsSeeded(t *testing.T) {
	t.Parallel()
	statuses := func() []int {
		s := newServer(t, Config{FailRate: 0.5, Failures: []Failure{Fail500}, Seed: 42})
		var out []int
		for range 40 {
			out = append(out, post(t, s, "", hello).status)
		}
		return out
	}
	a, b := statuses(), statuses()
	fails := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, request %d: %d then %d", i, a[i], b[i])
		}
		if a[i] == 500 {
			fails++
		}
	}
	if fails < 8 || fails > 32 {
		t.Errorf("FailRate 0.5: %d of 40 failed", fails)
	}
}

// waitFor waits with w, one of the server's Wait methods, and fails the
// test after a generous time instead of hanging.
func waitFor(t *testing.T, what string, w func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w(ctx); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestHang(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	s := newServer(t, Config{Hang: hang})
	const n = 5
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"__hang__ please"}]}`
	results := make(chan int, n)
	for range n {
		go func() {
			resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				results <- -1
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	waitFor(t, "the held requests", func(ctx context.Context) error { return s.WaitInFlight(ctx, n) })
	// Others are answered while those are held.
	if r := post(t, s, "", hello); r.status != 200 {
		t.Errorf("request beside held ones = %d, want 200", r.status)
	}
	select {
	case st := <-results:
		t.Fatalf("held request answered %d before Hang closed", st)
	default:
	}
	close(hang)
	for range n {
		if st := <-results; st != 200 {
			t.Errorf("held request = %d after Hang closed, want 200", st)
		}
	}
	st := s.Stats()
	if st.MaxInFlight != n+1 || st.Succeeded != n+1 {
		t.Errorf("Stats = %+v, want MaxInFlight %d, %d succeeded", st, n+1, n+1)
	}
}

func TestHangClientLeaves(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{}) // no Hang: held until the client leaves
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"__hang__"}]}`))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the held request", func(ctx context.Context) error { return s.WaitInFlight(ctx, 1) })
	cancel()
	if err := <-done; err == nil {
		t.Errorf("held request returned without error")
	}
	waitFor(t, "the handler to finish", func(ctx context.Context) error { return s.WaitInFlight(ctx, 0) })
	if rec := s.Requests(); len(rec) != 1 || rec[0].Status != 0 {
		t.Errorf("Requests() = %+v, want one with status 0", rec)
	}
}

func TestCloseReleasesHeld(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	go func() {
		resp, err := http.Post(s.URL()+"/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"__hang__"}]}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "the held request", func(ctx context.Context) error { return s.WaitInFlight(ctx, 1) })
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute: it does not release a held request")
	}
}

func TestRequestsRecorded(t *testing.T) {
	t.Parallel()
	c := newClock()
	s := newServer(t, Config{Now: c.Now})
	bodies := []string{hello, `{"model":`, "{\n  \"model\": \"gpt-4o\",\n  \"messages\": [{\"role\":\"user\",\"content\":\"x\"}]\n}"}
	for i, b := range bodies {
		c.Advance(time.Second)
		post(t, s, "sk-"+string(rune('a'+i)), b)
	}
	rec := s.Requests()
	if len(rec) != len(bodies) {
		t.Fatalf("len(Requests()) = %d, want %d", len(rec), len(bodies))
	}
	for i, r := range rec {
		wantStatus := []int{200, 400, 200}[i]
		if string(r.Body) != bodies[i] || r.Status != wantStatus || r.Header.Get("Authorization") != "Bearer sk-"+string(rune('a'+i)) {
			t.Errorf("Requests()[%d] = %q %d %q, want %q %d", i, r.Body, r.Status, r.Header.Get("Authorization"), bodies[i], wantStatus)
		}
		if want := newClock().t.Add(time.Duration(i+1) * time.Second); !r.At.Equal(want) {
			t.Errorf("Requests()[%d].At = %v, want %v", i, r.At, want)
		}
	}
	st := s.Stats()
	if !st.First.Equal(rec[0].At) || !st.Last.Equal(rec[2].At) {
		t.Errorf("Stats First, Last = %v, %v, want %v, %v", st.First, st.Last, rec[0].At, rec[2].At)
	}
}
