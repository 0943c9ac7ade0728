package tokens

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// Function definitions (chat's tools and its deprecated functions, the
// Responses API's tools) are billed as prompt tokens: the API writes them
// into the prompt as text the model reads. OpenAI's cookbook, "How to
// count tokens with tiktoken" (openai/openai-cookbook,
// examples/How_to_count_tokens_with_tiktoken.ipynb, section 7,
// num_tokens_for_tools), counts them so, and shows its counts equal to
// the API's for gpt-4o, gpt-4o-mini, gpt-4 and gpt-3.5-turbo:
//
//   - each function: funcInit, plus the tokens of "name:description"
//     (the description without a final full stop);
//   - its parameters, if they have properties: propInit, then for each
//     property propKey plus the tokens of "name:type:description" and,
//     for an enum, enumInit plus, for each value, enumItem and the
//     value's tokens;
//   - funcEnd once, if there is any function.
//
// The estimate counts what the cookbook reads so, and never less than
// the API bills for what it does not: the properties of nested objects
// and of arrays' items by the same rule, every other keyword of a schema
// or a function (format, minimum, default, anyOf, $defs, ...) as its
// JSON text, and a tool of another type than function as a function
// plus its JSON text. Only "required", "additionalProperties", "$schema"
// and "strict" are left out: the API writes no text for them (a required
// property loses the "?" an optional one has).
const (
	funcInitGPT4o = 7  // gpt-4o, gpt-4o-mini
	funcInit      = 10 // gpt-4, gpt-3.5-turbo; the cookbook gives no figure for other models, and this is the larger
	propInit      = 3
	propKey       = 3
	enumInit      = -3
	enumItem      = 3
	funcEnd       = 12
)

// isSet reports whether a field is present and not null.
func isSet(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// toolCounter counts function definitions for one request.
type toolCounter struct {
	count    func(string) int64
	funcInit int64
}

// toolTokens is what tools (chat's or the Responses API's) and
// functions (chat's deprecated bare definitions) add to the prompt. A
// list of another shape, which the API refuses, counts as its JSON text.
func toolTokens(model string, tools, functions json.RawMessage, count func(string) int64) int64 {
	c := toolCounter{count: count, funcInit: funcInit}
	if m := baseModel(model); strings.HasPrefix(m, "gpt-4o") || strings.HasPrefix(m, "chatgpt-4o") {
		c.funcInit = funcInitGPT4o
	}
	var n int64
	for _, list := range []struct {
		raw  json.RawMessage
		tool bool
	}{{tools, true}, {functions, false}} {
		if !isSet(list.raw) {
			continue
		}
		var defs []map[string]json.RawMessage
		if json.Unmarshal(list.raw, &defs) != nil || slices.ContainsFunc(defs, func(d map[string]json.RawMessage) bool { return d == nil }) {
			n += c.funcInit + c.count(string(list.raw)) + funcEnd
			continue
		}
		for _, d := range defs {
			if list.tool {
				n += c.tool(d)
			} else {
				n += c.function(d)
			}
		}
		if len(defs) > 0 {
			n += funcEnd
		}
	}
	return n
}

// tool counts one tool: chat's {"type":"function","function":{...}},
// the Responses API's {"type":"function","name":...}, or another type's
// {"type":T,T:{...}}, counted as a function and its JSON text as well.
func (c toolCounter) tool(t map[string]json.RawMessage) int64 {
	var typ string
	_ = json.Unmarshal(t["type"], &typ)
	var n int64
	if typ != "function" {
		n += c.count(string(mustMarshal(t)))
	}
	var f map[string]json.RawMessage
	if json.Unmarshal(t[typ], &f) == nil && f != nil {
		return n + c.function(f)
	}
	return n + c.function(t)
}

// function counts one function definition.
func (c toolCounter) function(f map[string]json.RawMessage) int64 {
	name, read := c.text(f, "name", nil)
	desc, read := c.text(f, "description", read)
	n := c.funcInit + c.count(name+":"+strings.TrimSuffix(desc, "."))
	read = append(read, "type", "strict")
	if p := object(f["parameters"]); p != nil {
		n += c.schema(p, "type")
		read = append(read, "parameters")
	}
	return n + c.rest(f, read)
}

// schema counts a schema's keywords but those read: its properties by
// the cookbook's rule, its items' as well, the rest as their JSON text.
func (c toolCounter) schema(s map[string]json.RawMessage, read ...string) int64 {
	var n int64
	if props := object(s["properties"]); props != nil {
		n += c.properties(props)
		read = append(read, "properties")
	}
	if items := object(s["items"]); items != nil {
		n += c.schema(items)
		read = append(read, "items")
	}
	return n + c.rest(s, read)
}

// properties counts a schema's properties.
func (c toolCounter) properties(props map[string]json.RawMessage) int64 {
	if len(props) == 0 {
		return 0
	}
	n := int64(propInit)
	for name, v := range props {
		p := object(v)
		if p == nil {
			n += propKey + c.count(name+"::") + c.count(string(compact(v)))
			continue
		}
		desc, read := c.text(p, "description", nil)
		n += propKey + c.count(name+":"+valueText(p["type"])+":"+strings.TrimSuffix(desc, "."))
		read = append(read, "type")
		var enum []json.RawMessage
		if json.Unmarshal(p["enum"], &enum) == nil && len(enum) > 0 {
			n += enumInit
			for _, e := range enum {
				n += enumItem + c.count(valueText(e))
			}
			read = append(read, "enum")
		}
		n += c.schema(p, read...)
	}
	return n
}

// text is the string s[k] and read with k added; "" and read as it was
// if s[k] is no string, which rest then counts as JSON text.
func (c toolCounter) text(s map[string]json.RawMessage, k string, read []string) (string, []string) {
	var v string
	if json.Unmarshal(s[k], &v) != nil {
		return "", read
	}
	return v, append(read, k)
}

// rest counts the keywords of s but those read, and those the API writes
// no text for, as their JSON text.
func (c toolCounter) rest(s map[string]json.RawMessage, read []string) int64 {
	var n int64
	for k, v := range s {
		switch k {
		case "required", "additionalProperties", "$schema":
			continue
		}
		if !slices.Contains(read, k) {
			n += c.count(k + ":" + string(compact(v)))
		}
	}
	return n
}

// object is raw as an object; nil if it is none.
func object(raw json.RawMessage) map[string]json.RawMessage {
	var o map[string]json.RawMessage
	if json.Unmarshal(raw, &o) != nil {
		return nil
	}
	return o
}

// valueText is a JSON string's text, another value's compact JSON, or ""
// for none.
func valueText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(compact(raw))
}

// compact is raw without its blanks; raw itself if it is not JSON.
func compact(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
