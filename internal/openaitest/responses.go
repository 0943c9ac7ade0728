package openaitest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
)

// ReasoningTokens is what a reasoning model (o-series, gpt-5) spends on
// reasoning in a /v1/responses answer, counted in output_tokens and
// capped by max_output_tokens.
const ReasoningTokens = 16

// MinOutputTokens is the smallest max_output_tokens the Responses API
// takes.
const MinOutputTokens = 16

var responsesParams = map[string]bool{
	"model": true, "input": true, "instructions": true, "max_output_tokens": true,
	"store": true, "service_tier": true, "temperature": true, "top_p": true,
	"metadata": true, "reasoning": true, "text": true, "tools": true,
	"tool_choice": true, "truncation": true, "user": true,
	"previous_response_id": true, "include": true, "parallel_tool_calls": true,
	"prompt_cache_key": true, "safety_identifier": true, "stream": true,
	"background": true, "prompt": true, "max_tool_calls": true,
	"top_logprobs": true, "conversation": true, "stream_options": true,
}

var serviceTiers = map[string]bool{"auto": true, "default": true, "flex": true, "priority": true, "scale": true}

// responsesCall is a valid /v1/responses request.
type responsesCall struct {
	model        string
	messages     []chatMessage // instructions and input, as chat messages
	instructions *string
	maxOut       *int
	store        *bool
	tier         string
	metadata     json.RawMessage
	temperature  *float64
	prompt       int
	enc          *encoder
	schema       json.RawMessage // text.format's json_schema schema; nil for none
	tools        json.RawMessage // billed as prompt tokens: see toolTokens
}

func (c *responsesCall) modelName() string { return c.model }
func (c *responsesCall) inputTokens() int  { return c.prompt }
func (c *responsesCall) flex() bool        { return c.tier == "flex" }

func (c *responsesCall) charge() int {
	if c.maxOut != nil {
		return c.prompt + *c.maxOut
	}
	return c.prompt + DefaultMaxOutput
}

func (c *responsesCall) trigger() string {
	return (&request{Messages: c.messages}).lastUserText()
}

// parseResponses parses and validates a /v1/responses request as the API
// does. Its input counts as the equivalent chat messages would: the
// instructions as a system message, then each input message.
func (s *Server) parseResponses(body []byte) (call, *apiError) {
	fields, apiErr := parseObject(body, responsesParams)
	if apiErr != nil {
		return nil, apiErr
	}
	c := &responsesCall{}
	for name, raw := range fields {
		if string(raw) == "null" {
			continue
		}
		var target any
		want := ""
		switch name {
		case "model":
			target, want = &c.model, "a string"
		case "instructions":
			target, want = &c.instructions, "a string"
		case "max_output_tokens":
			target, want = &c.maxOut, "an integer"
		case "store":
			target, want = &c.store, "a boolean"
		case "service_tier":
			target, want = &c.tier, "a string"
		case "temperature":
			target, want = &c.temperature, "a number"
		case "metadata":
			c.metadata = raw
			continue
		case "tools":
			if readArray(raw) == nil {
				return c, invalidType(name, "an array")
			}
			c.tools = raw
			continue
		case "text":
			text := readObject(raw)
			if text == nil {
				return c, invalidType(name, "an object")
			}
			if f := text.get("format"); f != nil && string(f) != "null" {
				sch, apiErr := formatSchema(f, false, "text.format")
				if apiErr != nil {
					return c, apiErr
				}
				c.schema = sch
			}
			continue
		case "stream":
			var on bool
			if json.Unmarshal(raw, &on) == nil && on {
				return c, invalid("openaitest does not stream: send \"stream\": false", "stream", "")
			}
			continue
		default:
			continue
		}
		if json.Unmarshal(raw, target) != nil {
			return c, invalidType(name, want)
		}
	}
	if c.model == "" {
		return c, invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
	}
	raw, ok := fields["input"]
	if !ok || string(raw) == "null" {
		return c, invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
	}
	if c.instructions != nil && *c.instructions != "" {
		c.messages = append(c.messages, textMessage("system", *c.instructions))
	}
	if err := c.parseInput(raw); err != nil {
		return c, err
	}
	if m := c.maxOut; m != nil && *m < MinOutputTokens {
		return c, invalid(fmt.Sprintf("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= %d, but got %d instead.", MinOutputTokens, *m), "max_output_tokens", "integer_below_min_value")
	}
	if t := c.temperature; t != nil && (*t < 0 || *t > 2) {
		return c, invalid(fmt.Sprintf("Invalid 'temperature': expected a value between 0 and 2, but got %v instead.", *t), "temperature", "invalid_value")
	}
	if c.tier != "" && !serviceTiers[c.tier] {
		return c, invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'auto', 'default', 'flex', 'scale', and 'priority'.", c.tier), "service_tier", "invalid_value")
	}
	if strings.Contains(c.trigger(), "__status_400__") {
		return c, invalid("This request asked for a 400 (__status_400__).", "input", "")
	}
	enc, err := encoderFor(c.model)
	if err != nil {
		panic(err)
	}
	c.enc = enc
	c.prompt = countPrompt(enc, c.messages) + formatTokens(enc, c.schema) + toolTokens(enc, c.model, c.tools, nil)
	return c, nil
}

func (c *responsesCall) countIn(e *EndpointStats) {
	switch {
	case c.store == nil:
		e.StoreOmitted++
	case *c.store:
		e.StoreTrue++
	default:
		e.StoreFalse++
	}
}

// textMessage is a chat message of role with text as its content.
func textMessage(role, text string) chatMessage {
	b, err := json.Marshal(text)
	if err != nil {
		panic(err)
	}
	m := chatMessage{Role: role, Content: b}
	m.keepText()
	return m
}

// inputItem is the part of a Responses API input item the fake reads.
type inputItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// parseInput reads input: a string (one user message) or an array of
// input items: messages, whose content is a string or input_text and
// output_text parts, and function calls and their outputs.
func (c *responsesCall) parseInput(raw json.RawMessage) *apiError {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		c.messages = append(c.messages, textMessage("user", one))
		return nil
	}
	var items []inputItem
	if err := json.Unmarshal(raw, &items); err != nil {
		return invalid("Invalid type for 'input': expected one of a string or array of input items, but got something else instead.", "input", "invalid_type")
	}
	if len(items) == 0 {
		return invalid("[] is too short - 'input'", "input", "empty_array")
	}
	for i, it := range items {
		switch it.Type {
		case "", "message":
			if !(it.Role == "user" || it.Role == "assistant" || it.Role == "system" || it.Role == "developer") {
				return invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'assistant', 'system', 'developer', and 'user'.", it.Role), fmt.Sprintf("input[%d].role", i), "invalid_value")
			}
			text, ok := partsText(it.Content)
			if !ok {
				return invalid(fmt.Sprintf("Invalid type for 'input[%d].content': expected one of a string or array of input content parts, but got something else instead.", i), fmt.Sprintf("input[%d].content", i), "invalid_type")
			}
			c.messages = append(c.messages, textMessage(it.Role, text))
		case "function_call":
			m := chatMessage{Role: "assistant"}
			m.ToolCalls = append(m.ToolCalls, struct {
				Function functionCall `json:"function"`
			}{functionCall{Name: it.Name, Arguments: it.Arguments}})
			c.messages = append(c.messages, m)
		case "function_call_output":
			var out string
			if json.Unmarshal(it.Output, &out) != nil {
				out = string(it.Output)
			}
			c.messages = append(c.messages, textMessage("tool", out))
		case "reasoning":
			// Reasoning items passed back in are not counted by the fake.
		default:
			return invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'message', 'function_call', 'function_call_output' and 'reasoning'.", it.Type), fmt.Sprintf("input[%d].type", i), "invalid_value")
		}
	}
	return nil
}

// partsText is the text of a message's content: a string, or the text of
// its input_text and output_text parts joined together (images and files
// count nothing in the fake).
func partsText(c json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(c, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(c, &parts) != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		switch p.Type {
		case "input_text", "output_text", "text":
			b.WriteString(p.Text)
		case "input_image", "input_file", "input_audio", "refusal":
		default:
			return "", false
		}
	}
	return b.String(), true
}

// The /v1/responses success body, field for field as the API sends it.
type (
	responseObject struct {
		ID                 string            `json:"id"`
		Object             string            `json:"object"`
		CreatedAt          int64             `json:"created_at"`
		Status             string            `json:"status"`
		Background         bool              `json:"background"`
		Error              *struct{}         `json:"error"`
		IncompleteDetails  *incomplete       `json:"incomplete_details"`
		Instructions       *string           `json:"instructions"`
		MaxOutputTokens    *int              `json:"max_output_tokens"`
		Model              string            `json:"model"`
		Output             []json.RawMessage `json:"output"`
		ParallelToolCalls  bool              `json:"parallel_tool_calls"`
		PreviousResponseID *string           `json:"previous_response_id"`
		Reasoning          struct {
			Effort  *string `json:"effort"`
			Summary *string `json:"summary"`
		} `json:"reasoning"`
		ServiceTier string   `json:"service_tier"`
		Store       bool     `json:"store"`
		Temperature *float64 `json:"temperature"`
		Text        struct {
			Format struct {
				Type string `json:"type"`
			} `json:"format"`
		} `json:"text"`
		ToolChoice string          `json:"tool_choice"`
		Tools      []struct{}      `json:"tools"`
		TopP       float64         `json:"top_p"`
		Truncation string          `json:"truncation"`
		Usage      responsesUsage  `json:"usage"`
		User       *string         `json:"user"`
		Metadata   json.RawMessage `json:"metadata"`
	}
	incomplete struct {
		Reason string `json:"reason"`
	}
	outputMessage struct {
		Type    string            `json:"type"`
		ID      string            `json:"id"`
		Status  string            `json:"status"`
		Role    string            `json:"role"`
		Content []json.RawMessage `json:"content"` // output_text (outputText) and refusal parts
	}
	outputText struct {
		Type        string     `json:"type"`
		Text        string     `json:"text"`
		Annotations []struct{} `json:"annotations"`
		Logprobs    []struct{} `json:"logprobs"`
	}
	reasoningItem struct {
		Type    string     `json:"type"`
		ID      string     `json:"id"`
		Summary []struct{} `json:"summary"`
	}
	responsesUsage struct {
		InputTokens        int `json:"input_tokens"`
		InputTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens        int `json:"output_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens int `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
		TotalTokens int `json:"total_tokens"`
	}
)

// servedTier is the service_tier an answer reports for the one asked.
func servedTier(asked string) string {
	if asked == "flex" || asked == "priority" || asked == "scale" {
		return asked
	}
	return "default"
}

func (c *responsesCall) respond(s *Server) (any, usage) {
	resp := responseObject{
		ID:                s.randomID("resp_", 48),
		Object:            "response",
		CreatedAt:         s.cfg.Now().Unix(),
		Status:            "completed",
		Instructions:      c.instructions,
		MaxOutputTokens:   c.maxOut,
		Model:             s.datedModel(c.model),
		ParallelToolCalls: true,
		ServiceTier:       servedTier(c.tier),
		Store:             c.store == nil || *c.store,
		Temperature:       cmp.Or(c.temperature, new(1.0)),
		ToolChoice:        "auto",
		Tools:             []struct{}{},
		TopP:              1,
		Truncation:        "disabled",
		Metadata:          c.metadata,
	}
	if resp.Metadata == nil {
		resp.Metadata = json.RawMessage("{}")
	}
	resp.Text.Format.Type = "text"
	room := -1 // output tokens left; -1 for no limit
	if c.maxOut != nil {
		room = *c.maxOut
	}
	var reasoning int
	if isReasoning(c.model) {
		reasoning = ReasoningTokens
		if room >= 0 {
			reasoning = min(reasoning, room)
			room -= reasoning
		}
		effort := "medium"
		resp.Reasoning.Effort = &effort
		resp.Output = append(resp.Output, mustJSON(reasoningItem{Type: "reasoning", ID: s.randomID("rs_", 48), Summary: []struct{}{}}))
	}
	text, n, cut := "answer: "+c.trigger(), 0, false
	var shape shaped
	if c.schema != nil {
		resp.Text.Format.Type = "json_schema"
		shape = s.shape(c.schema, (&request{Messages: c.messages}).firstUserText())
		text = shape.text
	}
	if room != 0 {
		text, n, cut = truncate(c.enc, text, max(room, 0))
		cut = cut || shape.cut
		part := mustJSON(outputText{Type: "output_text", Text: text, Annotations: []struct{}{}, Logprobs: []struct{}{}})
		if shape.refused {
			part = mustJSON(map[string]string{"type": "refusal", "refusal": text})
		}
		msg := outputMessage{
			Type: "message", ID: s.randomID("msg_", 48), Status: "completed", Role: "assistant",
			Content: []json.RawMessage{part},
		}
		if cut {
			msg.Status = "incomplete"
		}
		resp.Output = append(resp.Output, mustJSON(msg))
	} else {
		cut = true
	}
	if cut {
		resp.Status = "incomplete"
		resp.IncompleteDetails = &incomplete{Reason: "max_output_tokens"}
	}
	u := &resp.Usage
	u.InputTokens = c.prompt
	u.OutputTokens = reasoning + n
	u.OutputTokensDetails.ReasoningTokens = reasoning
	u.TotalTokens = u.InputTokens + u.OutputTokens
	if c.prompt >= minCached {
		key := cacheKey(c.model, mustJSON(c.messages))
		s.mu.Lock()
		if s.seen[key] {
			u.InputTokensDetails.CachedTokens = c.prompt / cacheStep * cacheStep
		}
		s.seen[key] = true
		s.mu.Unlock()
	}
	var cu usage
	cu.PromptTokens, cu.CompletionTokens, cu.TotalTokens = u.InputTokens, u.OutputTokens, u.TotalTokens
	cu.PromptTokensDetails.CachedTokens = u.InputTokensDetails.CachedTokens
	cu.CompletionTokensDetails.ReasoningTokens = reasoning
	return resp, cu
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
