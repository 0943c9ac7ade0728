package openaitest

import (
	"encoding/json"
	"fmt"
	"strings"
)

// knownParams are the request fields the chat-completions endpoint takes;
// the API refuses any other.
var knownParams = map[string]bool{
	"model": true, "messages": true, "audio": true, "frequency_penalty": true,
	"function_call": true, "functions": true, "logit_bias": true, "logprobs": true,
	"max_completion_tokens": true, "max_tokens": true, "metadata": true,
	"modalities": true, "n": true, "parallel_tool_calls": true, "prediction": true,
	"presence_penalty": true, "prompt_cache_key": true, "reasoning_effort": true,
	"response_format": true, "safety_identifier": true, "seed": true,
	"service_tier": true, "stop": true, "store": true, "stream": true,
	"stream_options": true, "temperature": true, "tool_choice": true, "tools": true,
	"top_logprobs": true, "top_p": true, "user": true, "verbosity": true,
	"web_search_options": true,
}

var roles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// request is the part of a chat-completions request the fake reads.
type request struct {
	Model               string        `json:"model"`
	Messages            []chatMessage `json:"messages"`
	MaxTokens           *int          `json:"max_tokens"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	Temperature         *float64      `json:"temperature"`
	N                   *int          `json:"n"`
	Logprobs            bool          `json:"logprobs"`
	Stream              bool          `json:"stream"`
	Tools               []struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
	Functions []struct {
		Name string `json:"name"`
	} `json:"functions"`
	ToolChoice   json.RawMessage `json:"tool_choice"`
	FunctionCall json.RawMessage `json:"function_call"` // the deprecated functions' tool_choice
	ServiceTier  string          `json:"service_tier"`

	rawMessages  json.RawMessage
	rawTools     json.RawMessage // billed as prompt tokens: see toolTokens
	rawFunctions json.RawMessage
	schema       json.RawMessage // response_format's json_schema schema; nil for none
	shaped       *shaped         // the answer to schema, once made
}

// parseRequest parses and validates body as the API does, returning the
// API's error for a request it would refuse.
func parseRequest(body []byte) (*request, *apiError) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, &apiError{
			Message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
			Type:    "invalid_request_error",
		}
	}
	for name := range fields {
		if !knownParams[name] {
			return nil, invalid("Unrecognized request argument supplied: "+name, "", "")
		}
	}
	var req request
	for name, raw := range fields {
		if string(raw) == "null" {
			continue
		}
		var target any
		switch name {
		case "model":
			target = &req.Model
		case "messages":
			target = &req.Messages
			req.rawMessages = raw
		case "max_tokens":
			target = &req.MaxTokens
		case "max_completion_tokens":
			target = &req.MaxCompletionTokens
		case "temperature":
			target = &req.Temperature
		case "n":
			target = &req.N
		case "logprobs":
			target = &req.Logprobs
		case "stream":
			target = &req.Stream
		case "tools":
			target = &req.Tools
			req.rawTools = raw
		case "functions":
			target = &req.Functions
			req.rawFunctions = raw
		case "tool_choice":
			req.ToolChoice = raw
			continue
		case "function_call":
			req.FunctionCall = raw
			continue
		case "response_format":
			sch, apiErr := formatSchema(raw, true, "response_format")
			if apiErr != nil {
				return &req, apiErr
			}
			req.schema = sch
			continue
		case "service_tier":
			target = &req.ServiceTier
		default:
			continue
		}
		if err := json.Unmarshal(raw, target); err != nil {
			return &req, invalid(fmt.Sprintf("Invalid type for '%s': %v", name, err), name, "invalid_type")
		}
	}
	if req.Model == "" {
		return &req, invalid("you must provide a model parameter", "", "")
	}
	if _, ok := fields["messages"]; !ok {
		return &req, invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
	}
	if len(req.Messages) == 0 {
		return &req, invalid("[] is too short - 'messages'", "messages", "empty_array")
	}
	for i := range req.Messages {
		m := &req.Messages[i]
		if !roles[m.Role] {
			return &req, invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", m.Role), fmt.Sprintf("messages[%d].role", i), "invalid_value")
		}
		m.keepText()
		if _, ok := m.text(); !ok {
			return &req, invalid(fmt.Sprintf("Invalid type for 'messages[%d].content': expected one of a string or array of objects, but got something else instead.", i), fmt.Sprintf("messages[%d].content", i), "invalid_type")
		}
	}
	for i, f := range req.Functions {
		if f.Name == "" {
			return &req, invalid(fmt.Sprintf("Missing required parameter: 'functions[%d].name'.", i), fmt.Sprintf("functions[%d].name", i), "missing_required_parameter")
		}
	}
	if isReasoning(req.Model) && req.MaxTokens != nil {
		return &req, invalid("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
	}
	for name, v := range map[string]*int{"max_tokens": req.MaxTokens, "max_completion_tokens": req.MaxCompletionTokens, "n": req.N} {
		if v != nil && *v < 1 {
			return &req, invalid(fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, *v), name, "integer_below_min_value")
		}
	}
	if t := req.Temperature; t != nil && (*t < 0 || *t > 2) {
		msg, code := "decimal below minimum value. Expected a value >= 0", "decimal_below_min_value"
		if *t > 2 {
			msg, code = "decimal above maximum value. Expected a value <= 2", "decimal_above_max_value"
		}
		return &req, invalid(fmt.Sprintf("Invalid 'temperature': %s, but got %v instead.", msg, *t), "temperature", code)
	}
	if req.Stream {
		return &req, invalid("openaitest does not stream: send \"stream\": false", "stream", "")
	}
	if strings.Contains(req.lastUserText(), "__status_400__") {
		return &req, invalid("This request asked for a 400 (__status_400__).", "messages", "")
	}
	return &req, nil
}

func invalid(msg, param, code string) *apiError {
	return &apiError{Message: msg, Type: "invalid_request_error", Param: param, Code: code}
}

// isReasoning reports whether model is an o-series or gpt-5 model, which
// take max_completion_tokens and refuse max_tokens.
func isReasoning(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5"} {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// maxOutput is the most tokens the request lets an answer have, 0 if it
// sets no limit.
func (r *request) maxOutput() int {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		return *r.MaxTokens
	}
	return 0
}

// choices is the number of answers asked for.
func (r *request) choices() int {
	if r.N != nil {
		return *r.N
	}
	return 1
}

// lastUserText is the text of the last user message, "" if there is none.
func (r *request) lastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			s, _ := r.Messages[i].text()
			return s
		}
	}
	return ""
}

// firstUserText is the text of the first user message: the prompt, which
// asking again after an answer leaves first.
func (r *request) firstUserText() string {
	for _, m := range r.Messages {
		if m.Role == "user" {
			s, _ := m.text()
			return s
		}
	}
	return ""
}

// choiceText is the content of choice i (from 0), before it is cut to the
// output cap: ChoiceText's, or the answer made to the request's schema.
func (r *request) choiceText(i int) string {
	if r.shaped != nil {
		return r.shaped.text
	}
	return ChoiceText(r.lastUserText(), i)
}

// promptTokens is what the request's prompt is billed: its messages, its
// response format's schema and its function definitions.
func (r *request) promptTokens(enc *encoder) int {
	return countPrompt(enc, r.Messages) + formatTokens(enc, r.schema) + toolTokens(enc, r.Model, r.rawTools, r.rawFunctions)
}

// toolToCall is the tool the request forces an answer to call: the named
// one of a tool_choice object, or the first tool for "required". ok is
// false if the answer is text.
func (r *request) toolToCall() (name string, ok bool) {
	if len(r.Tools) == 0 || len(r.ToolChoice) == 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(r.ToolChoice, &s) == nil {
		return r.Tools[0].Function.Name, s == "required"
	}
	var named struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(r.ToolChoice, &named) == nil && named.Function.Name != "" {
		return named.Function.Name, true
	}
	return "", false
}

// functionToCall is the function a request with the deprecated functions
// forces its answer to call: the one its function_call object names. ok
// is false for "auto", "none" or no function_call: the answer is text.
func (r *request) functionToCall() (name string, ok bool) {
	if len(r.Functions) == 0 || len(r.FunctionCall) == 0 {
		return "", false
	}
	var named struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(r.FunctionCall, &named) == nil && named.Name != "" {
		return named.Name, true
	}
	return "", false
}

// The success body, field for field as the API sends it.
type (
	response struct {
		ID                string   `json:"id"`
		Object            string   `json:"object"`
		Created           int64    `json:"created"`
		Model             string   `json:"model"`
		Choices           []choice `json:"choices"`
		Usage             usage    `json:"usage"`
		ServiceTier       string   `json:"service_tier"`
		SystemFingerprint string   `json:"system_fingerprint"`
	}
	choice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"` // null unless asked for: see vary
		FinishReason string          `json:"finish_reason"`
	}
	message struct {
		Role      string     `json:"role"`
		Content   *string    `json:"content"`
		ToolCalls []toolCall `json:"tool_calls,omitempty"`
		// FunctionCall is the answer's call when the request forced one
		// of its deprecated functions (finish_reason "function_call").
		FunctionCall *functionCall `json:"function_call,omitempty"`
		Refusal      *string       `json:"refusal"`
		Annotations  []struct{}    `json:"annotations"`
	}
	toolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"`
		Function functionCall `json:"function"`
	}
	usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		TotalTokens         int `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
			AudioTokens  int `json:"audio_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails struct {
			ReasoningTokens          int `json:"reasoning_tokens"`
			AudioTokens              int `json:"audio_tokens"`
			AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
			RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
		} `json:"completion_tokens_details"`
	}
)

// minCached is the shortest prompt the API caches; it caches in steps of
// cacheStep tokens.
const (
	minCached = 1024
	cacheStep = 128
)

// answer builds the success body for req, whose prompt counts prompt
// tokens, and marks its prompt as cached for the requests after it.
func (x *exchange) answer(req *request, enc *encoder, prompt, maxOut int) response {
	s := x.s
	resp := response{
		ID:                s.randomID("chatcmpl-", 29),
		Object:            "chat.completion",
		Created:           s.cfg.Now().Unix(),
		Model:             s.datedModel(req.Model),
		ServiceTier:       servedTier(req.ServiceTier),
		SystemFingerprint: "fp_fake",
	}
	var msg message
	var finish string
	var completion int
	if name, ok := req.toolToCall(); ok {
		var tc toolCall
		tc.ID, tc.Type = s.randomID("call_", 24), "function"
		tc.Function.Name, tc.Function.Arguments = name, "{}"
		msg = message{Role: "assistant", ToolCalls: []toolCall{tc}, Annotations: []struct{}{}}
		finish = "tool_calls"
		completion = enc.count(name) + enc.count(tc.Function.Arguments)
	} else if name, ok := req.functionToCall(); ok {
		fc := &functionCall{Name: name, Arguments: "{}"}
		msg = message{Role: "assistant", FunctionCall: fc, Annotations: []struct{}{}}
		finish = "function_call"
		completion = enc.count(name) + enc.count(fc.Arguments)
	} else {
		if req.schema != nil {
			a := s.shape(req.schema, req.firstUserText())
			req.shaped = &a
		}
		text, n, cut := truncate(enc, req.choiceText(0), maxOut)
		msg = message{Role: "assistant", Content: &text, Annotations: []struct{}{}}
		finish, completion = "stop", n
		if cut || req.shaped != nil && req.shaped.cut {
			finish = "length"
		}
	}
	for i := range req.choices() {
		resp.Choices = append(resp.Choices, choice{Index: i, Message: msg, FinishReason: finish, Logprobs: json.RawMessage("null")})
	}
	resp.Usage.PromptTokens = prompt
	resp.Usage.CompletionTokens = completion * req.choices()
	resp.Usage.TotalTokens = prompt + resp.Usage.CompletionTokens
	vary(req, enc, &resp, maxOut)
	if prompt >= minCached {
		key := cacheKey(req.Model, req.rawMessages)
		s.mu.Lock()
		if s.seen[key] {
			resp.Usage.PromptTokensDetails.CachedTokens = prompt / cacheStep * cacheStep
		}
		s.seen[key] = true
		s.mu.Unlock()
	}
	return resp
}
