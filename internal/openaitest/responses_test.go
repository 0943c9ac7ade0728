package openaitest

import (
	"encoding/json"
	"strings"
	"testing"
)

// responseBody is the part of a /v1/responses answer the tests read.
type responseBody struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Status            string `json:"status"`
	Model             string `json:"model"`
	ServiceTier       string `json:"service_tier"`
	Store             bool   `json:"store"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []struct {
		Type    string `json:"type"`
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage struct {
		InputTokens        int `json:"input_tokens"`
		InputTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens        int `json:"output_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens int `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
}

// text is the concatenated output_text of r.
func (r responseBody) text() string {
	var b strings.Builder
	for _, o := range r.Output {
		for _, c := range o.Content {
			if c.Type == "output_text" {
				b.WriteString(c.Text)
			}
		}
	}
	return b.String()
}

func postResponse(t *testing.T, s *Server, body string) responseBody {
	t.Helper()
	r := do(t, "POST", s.URL()+"/responses", "", body)
	var resp responseBody
	if err := json.Unmarshal(r.body, &resp); r.status != 200 || err != nil {
		t.Fatalf("POST /v1/responses %s = %d %s (%v), want 200", body, r.status, r.body, err)
	}
	return resp
}

func promptTokens(t *testing.T, s *Server, chatBody string) int {
	t.Helper()
	r := post(t, s, "", chatBody)
	var resp struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(r.body, &resp); r.status != 200 || err != nil {
		t.Fatalf("chat %s = %d %s", chatBody, r.status, r.body)
	}
	return resp.Usage.PromptTokens
}

func TestResponsesCountLikeChat(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, responses, chat string }{
		{"string",
			`{"model":"gpt-4o-mini","input":"Hello world"}`,
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"}]}`},
		{"instructions",
			`{"model":"gpt-4.1","instructions":"Be brief.","input":"Hello world"}`,
			`{"model":"gpt-4.1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello world"}]}`},
		{"items",
			`{"model":"gpt-4o","input":[{"role":"developer","content":"Be kind."},{"type":"message","role":"user","content":[{"type":"input_text","text":"Hello"},{"type":"input_text","text":" world"}]},{"role":"assistant","content":[{"type":"output_text","text":"Hi."}]},{"role":"user","content":"Again"}]}`,
			`{"model":"gpt-4o","messages":[{"role":"developer","content":"Be kind."},{"role":"user","content":"Hello world"},{"role":"assistant","content":"Hi."},{"role":"user","content":"Again"}]}`},
		{"cl100k model",
			`{"model":"gpt-4","input":"Hello world"}`,
			`{"model":"gpt-4","messages":[{"role":"user","content":"Hello world"}]}`},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := postResponse(t, s, tt.responses)
			if want := promptTokens(t, s, tt.chat); r.Usage.InputTokens != want {
				t.Errorf("input_tokens(%s) = %d, want %d as chat counts it", tt.responses, r.Usage.InputTokens, want)
			}
			if u := r.Usage; u.TotalTokens != u.InputTokens+u.OutputTokens || u.OutputTokens == 0 {
				t.Errorf("usage = %+v, want total = input + output > input", u)
			}
		})
	}
}

func TestResponsesObject(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	r := postResponse(t, s, `{"model":"gpt-4o-mini","input":"Hello world","store":false}`)
	if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != "completed" || r.Model != "gpt-4o-mini-2024-07-18" || r.Store || r.ServiceTier != "default" {
		t.Errorf("response = %+v, want resp_..., response, completed, gpt-4o-mini-2024-07-18, store false, default tier", r)
	}
	if len(r.Output) != 1 || r.Output[0].Type != "message" || r.Output[0].Role != "assistant" || r.text() != "answer: Hello world" {
		t.Errorf("output = %+v, want one assistant message \"answer: Hello world\"", r.Output)
	}
	// "answer: Hello world" is 4 tokens of o200k_base; 9 as chat counts it.
	if u := r.Usage; u.InputTokens != 9 || u.OutputTokens != 4 || u.TotalTokens != 13 || u.OutputTokensDetails.ReasoningTokens != 0 {
		t.Errorf("usage = %+v, want 9 + 4 = 13, no reasoning", u)
	}

	reasoning := postResponse(t, s, `{"model":"o4-mini","input":"Hello world"}`)
	if len(reasoning.Output) != 2 || reasoning.Output[0].Type != "reasoning" || reasoning.Output[1].Type != "message" {
		t.Errorf("o4-mini output = %+v, want a reasoning item then a message", reasoning.Output)
	}
	if u := reasoning.Usage; u.OutputTokensDetails.ReasoningTokens != ReasoningTokens || u.OutputTokens != ReasoningTokens+4 {
		t.Errorf("o4-mini usage = %+v, want %d reasoning tokens of %d output", u, ReasoningTokens, ReasoningTokens+4)
	}

	cut := postResponse(t, s, `{"model":"gpt-4o-mini","input":"`+strings.Repeat("word ", 40)+`","max_output_tokens":16}`)
	if cut.Status != "incomplete" || cut.IncompleteDetails == nil || cut.IncompleteDetails.Reason != "max_output_tokens" || cut.Usage.OutputTokens != 16 {
		t.Errorf("max_output_tokens 16 = %s %+v, %d tokens, want incomplete max_output_tokens, 16 tokens", cut.Status, cut.IncompleteDetails, cut.Usage.OutputTokens)
	}
	allReasoning := postResponse(t, s, `{"model":"o3","input":"Hello","max_output_tokens":16}`)
	if allReasoning.Status != "incomplete" || allReasoning.text() != "" || allReasoning.Usage.OutputTokens != 16 {
		t.Errorf("o3 with 16 output tokens = %s %q %d tokens, want incomplete, no text, 16 tokens", allReasoning.Status, allReasoning.text(), allReasoning.Usage.OutputTokens)
	}

	long := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 150)
	body := `{"model":"gpt-4.1","instructions":"Repeat.","input":"` + long + `"}`
	first, second := postResponse(t, s, body), postResponse(t, s, body)
	if p := first.Usage.InputTokens; first.Usage.InputTokensDetails.CachedTokens != 0 || second.Usage.InputTokensDetails.CachedTokens != p/128*128 {
		t.Errorf("cached_tokens = %d then %d, want 0 then %d", first.Usage.InputTokensDetails.CachedTokens, second.Usage.InputTokensDetails.CachedTokens, p/128*128)
	}
}

func TestResponsesStoreAndFlex(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	for _, body := range []string{
		`{"model":"gpt-4o-mini","input":"a"}`,
		`{"model":"gpt-4o-mini","input":"a","store":false}`,
		`{"model":"gpt-4o-mini","input":"a","store":false}`,
		`{"model":"gpt-4o-mini","input":"a","store":true,"service_tier":"flex"}`,
	} {
		r := postResponse(t, s, body)
		if strings.Contains(body, "flex") != (r.ServiceTier == "flex") {
			t.Errorf("POST %s: service_tier = %q", body, r.ServiceTier)
		}
	}
	e := s.Endpoint(PathResponses)
	if e.Requests != 4 || e.Succeeded != 4 || e.StoreOmitted != 1 || e.StoreFalse != 2 || e.StoreTrue != 1 || e.Flex != 1 || e.FlexUnavailable != 0 {
		t.Errorf("Endpoint(responses) = %+v, want 4 requests, 4 succeeded, store omitted 1, false 2, true 1, flex 1", e)
	}

	busy := newServer(t, Config{FlexUnavailable: 1})
	for _, tt := range []struct{ path, body string }{
		{"/responses", `{"model":"o3","input":"a","service_tier":"flex"}`},
		{"/chat/completions", `{"model":"o3","messages":[{"role":"user","content":"a"}],"service_tier":"flex"}`},
	} {
		r := do(t, "POST", busy.URL()+tt.path, "", tt.body)
		e := r.apiError(t).Error
		if r.status != 429 || e.Code == nil || *e.Code != "resource_unavailable" || r.header.Get("retry-after") != "" {
			t.Errorf("flex at %s, none available = %d %s, want 429 resource_unavailable without retry-after", tt.path, r.status, r.body)
		}
	}
	if r := do(t, "POST", busy.URL()+"/responses", "", `{"model":"o3","input":"a"}`); r.status != 200 {
		t.Errorf("default tier with flex unavailable = %d, want 200", r.status)
	}
	if got := busy.Endpoint(PathChat).FlexUnavailable; got != 1 {
		t.Errorf("Endpoint(chat).FlexUnavailable = %d, want 1", got)
	}
	// Chat answers a flex request as flex.
	r := post(t, s, "", `{"model":"o3","messages":[{"role":"user","content":"a"}],"service_tier":"flex"}`)
	if !strings.Contains(string(r.body), `"service_tier": "flex"`) {
		t.Errorf("chat flex answer = %s, want service_tier flex", r.body)
	}
}

func TestResponsesBadRequests(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, param, prefix string }{
		{"no input", `{"model":"gpt-4o-mini"}`, "input", "Missing required parameter: 'input'."},
		{"no model", `{"input":"x"}`, "model", "Missing required parameter: 'model'."},
		{"max_output_tokens 10", `{"model":"gpt-4o-mini","input":"x","max_output_tokens":10}`, "max_output_tokens", "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 10 instead."},
		{"bad role", `{"model":"gpt-4o-mini","input":[{"role":"robot","content":"x"}]}`, "input[0].role", "Invalid value: 'robot'."},
		{"messages", `{"model":"gpt-4o-mini","messages":[]}`, "", "Unrecognized request argument supplied: messages"},
		{"bad tier", `{"model":"gpt-4o-mini","input":"x","service_tier":"cheap"}`, "service_tier", "Invalid value: 'cheap'."},
		{"asked for 400", `{"model":"gpt-4o-mini","input":"x __status_400__"}`, "input", "This request asked for a 400"},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "POST", s.URL()+"/responses", "", tt.body)
			e := r.apiError(t).Error
			param := ""
			if e.Param != nil {
				param = *e.Param
			}
			if r.status != 400 || e.Type != "invalid_request_error" || param != tt.param || !strings.HasPrefix(e.Message, tt.prefix) {
				t.Errorf("post(%s) = %d %s param %q %q, want 400 invalid_request_error param %q %q...", tt.body, r.status, e.Type, param, e.Message, tt.param, tt.prefix)
			}
		})
	}
	if r := do(t, "POST", s.URL()+"/responses", "", `{"model":"gpt-4o-mini","input":"x __status_500__"}`); r.status != 500 {
		t.Errorf("__status_500__ = %d, want 500", r.status)
	}
}
