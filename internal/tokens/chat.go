package tokens

import (
	"encoding/json"
	"fmt"
)

// Chat counts the prompt of a chat request, its messages and tools, by
// the OpenAI cookbook's formula: 3 tokens a message plus its role and
// content, 1 more for a name, and 3 that prime the reply. Tools are
// counted as their JSON text, which errs high; images as OpenAI's
// published formulas say (see images.go). Counted exactly with model's
// encoding (built if it is not yet), or, unless exact, by bytes: an upper
// bound that needs no encoder.
func (Counter) Chat(model string, messages, tools json.RawMessage, exact bool) (int64, error) {
	if !exact {
		return countPrompt(model, messages, tools, func(s string) int64 { return int64(len(s)) })
	}
	enc, err := encoders[encodingName(model)]()
	if err != nil {
		return 0, err
	}
	return countPrompt(model, messages, tools, func(s string) int64 { return countTokens(enc, s, tokenChunk) })
}

// message is the part of a chat message that costs tokens.
type message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

// contentPart is one element of array content: chat completions' text
// and image_url parts, the Responses API's input_text, output_text and
// input_image.
type contentPart struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	ImageURL json.RawMessage `json:"image_url"` // {"url", "detail"} in chat; a string in responses
	Detail   string          `json:"detail"`    // responses
}

// countPrompt applies the chat formula with count as the tokenizer.
func countPrompt(model string, messages, tools json.RawMessage, count func(string) int64) (int64, error) {
	var msgs []message
	if err := json.Unmarshal(messages, &msgs); err != nil {
		return 0, fmt.Errorf("messages: %w", err)
	}
	n := int64(3)
	for i, m := range msgs {
		n += 3 + count(m.Role)
		if m.Name != "" {
			n += 1 + count(m.Name)
		}
		if m.ToolCallID != "" {
			n += count(m.ToolCallID)
		}
		if len(m.ToolCalls) > 0 && string(m.ToolCalls) != "null" {
			n += count(string(m.ToolCalls))
		}
		c, err := contentTokens(model, m.Content, count)
		if err != nil {
			return 0, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		n += c
	}
	if len(tools) > 0 && string(tools) != "null" {
		n += count(string(tools))
	}
	return n, nil
}

func contentTokens(model string, content json.RawMessage, count func(string) int64) (int64, error) {
	if len(content) == 0 || string(content) == "null" {
		return 0, nil
	}
	switch content[0] {
	case '"':
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			return 0, err
		}
		return count(s), nil
	case '[':
		var parts []contentPart
		if err := json.Unmarshal(content, &parts); err != nil {
			return 0, err
		}
		var n int64
		for _, p := range parts {
			switch p.Type {
			case "text", "input_text", "output_text":
				n += count(p.Text)
			case "image_url", "input_image":
				n += p.imageTokens(model)
			}
		}
		return n, nil
	}
	return 0, fmt.Errorf("must be a string or an array of parts")
}
