package jsonl

import (
	"encoding/json"
	"fmt"
)

// chatMessage is a chat-completions message, as far as turning it into
// Responses API input items needs.
type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCallID string          `json:"tool_call_id"`
	ToolCalls  []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// inputItems turns chat messages into the Responses API input items that
// say the same: a message keeps its role and its text (text parts become
// input_text, or output_text for the assistant; image_url parts
// input_image), an assistant's tool calls become function_call items and a
// tool message a function_call_output.
func inputItems(raw json.RawMessage) (json.RawMessage, error) {
	var msgs []chatMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, fmt.Errorf(`"messages" must be an array of message objects: %w`, err)
	}
	items := make([]any, 0, len(msgs))
	for i, m := range msgs {
		switch {
		case m.Role == "tool":
			var out string
			if json.Unmarshal(m.Content, &out) != nil {
				out = string(m.Content)
			}
			items = append(items, map[string]any{"type": "function_call_output", "call_id": m.ToolCallID, "output": out})
			continue
		case len(m.Content) > 0 && string(m.Content) != "null":
			content, err := inputContent(m.Role, m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].content: %w", i, err)
			}
			items = append(items, map[string]any{"role": m.Role, "content": content})
		}
		for _, tc := range m.ToolCalls {
			items = append(items, map[string]any{"type": "function_call", "call_id": tc.ID, "name": tc.Function.Name, "arguments": tc.Function.Arguments})
		}
	}
	return json.Marshal(items)
}

// inputContent is a chat message's content as Responses API content: a
// string stays a string; parts are renamed.
func inputContent(role string, raw json.RawMessage) (any, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, fmt.Errorf("must be a string or an array of parts")
	}
	text := "input_text"
	if role == "assistant" {
		text = "output_text"
	}
	out := make([]any, 0, len(parts))
	for _, p := range parts {
		var typ string
		json.Unmarshal(p["type"], &typ) //nolint:errcheck // "" is passed on as it is
		switch typ {
		case "text":
			out = append(out, map[string]json.RawMessage{"type": mustString(text), "text": p["text"]})
		case "image_url":
			var img struct {
				URL    string `json:"url"`
				Detail string `json:"detail"`
			}
			if json.Unmarshal(p["image_url"], &img) != nil {
				json.Unmarshal(p["image_url"], &img.URL) //nolint:errcheck // a bad part is the API's to refuse
			}
			part := map[string]string{"type": "input_image", "image_url": img.URL, "detail": img.Detail}
			if img.Detail == "" {
				part["detail"] = "auto"
			}
			out = append(out, part)
		default:
			out = append(out, p)
		}
	}
	return out, nil
}
