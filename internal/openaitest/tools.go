package openaitest

import (
	"encoding/json"
	"strings"
)

// The API bills a request's function definitions (chat's tools and its
// deprecated functions, the Responses API's tools) as prompt tokens: it
// writes them into the prompt as text the model reads. The fake bills
// them as OpenAI's cookbook counts them, "How to count tokens with
// tiktoken" (openai/openai-cookbook,
// examples/How_to_count_tokens_with_tiktoken.ipynb, section 7,
// num_tokens_for_tools), whose counts it shows equal to the API's
// prompt_tokens for gpt-4o, gpt-4o-mini, gpt-4 and gpt-3.5-turbo:
//
//   - each function: funcInit, plus the tokens of "name:description"
//     (the description without a final full stop);
//   - its parameters, if they have properties: propInit, then for each
//     property propKey plus the tokens of "name:type:description" and,
//     for an enum, enumInit plus, for each value, enumItem and the
//     value's tokens;
//   - funcEnd once, if there is any function.
//
// The cookbook stops at the first level of properties; the API writes
// nested objects' properties out too, and the fake bills those (of an
// object property, or of an array property's items) the same way.
const (
	funcInitO200k  = 7  // gpt-4o, gpt-4o-mini (and every o200k_base model here)
	funcInitCl100k = 10 // gpt-4, gpt-3.5-turbo
	propInit       = 3
	propKey        = 3
	enumInit       = -3
	enumItem       = 3
	funcEnd        = 12
)

// toolTokens is what tools and functions add to a request's prompt
// tokens. tools are chat's ({"type":"function","function":{...}}) or the
// Responses API's ({"type":"function","name":...}); functions are bare
// function definitions. A tool of another type is billed as a function
// named by what its type's member holds (a custom tool's name and
// description).
func toolTokens(enc *encoder, model string, tools, functions json.RawMessage) int {
	if len(tools) == 0 && len(functions) == 0 {
		return 0
	}
	return enc.schemaTokens("tools:"+model+"\x00"+string(tools)+"\x00"+string(functions), func() int {
		init := funcInitO200k
		if encodingFor(model) == cl100kBase {
			init = funcInitCl100k
		}
		var defs []object
		for _, raw := range readArray(tools) {
			defs = append(defs, toolFunction(readObject(raw)))
		}
		for _, raw := range readArray(functions) {
			defs = append(defs, readObject(raw))
		}
		if len(defs) == 0 {
			return 0
		}
		n := funcEnd
		for _, f := range defs {
			name, _ := f.str("name")
			desc, _ := f.str("description")
			n += init + enc.count(name+":"+strings.TrimSuffix(desc, "."))
			n += propertiesTokens(enc, readObject(f.get("parameters")).get("properties"))
		}
		return n
	})
}

// toolFunction is the function a tool defines: chat's function member,
// or, for a Responses API function tool, the tool itself.
func toolFunction(tool object) object {
	typ, _ := tool.str("type")
	if f := readObject(tool.get(typ)); f != nil {
		return f
	}
	return tool
}

// propertiesTokens bills a schema's properties, nested ones too.
func propertiesTokens(enc *encoder, raw json.RawMessage) int {
	props := readObject(raw)
	if len(props) == 0 {
		return 0
	}
	n := propInit
	for _, p := range props {
		sch := readObject(p.val)
		desc, _ := sch.str("description")
		n += propKey + enc.count(p.key+":"+valueText(sch.get("type"))+":"+strings.TrimSuffix(desc, "."))
		if enum := sch.get("enum"); enum != nil {
			n += enumInit
			for _, v := range readArray(enum) {
				n += enumItem + enc.count(valueText(v))
			}
		}
		n += propertiesTokens(enc, sch.get("properties"))
		n += propertiesTokens(enc, readObject(sch.get("items")).get("properties"))
	}
	return n
}

// valueText is a string's text, or another value's compact JSON; "" for
// none.
func valueText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(compact(raw))
}

// CookbookMessages and CookbookFunction are the cookbook's worked example
// ("How to count tokens with tiktoken", section 7): its messages and its
// weather function: a chat request of both, the function as a tool, was
// billed 101 prompt tokens on gpt-4o and gpt-4o-mini, 105 on gpt-4 and
// gpt-3.5-turbo. Tests of the fake's bill and of gptbatch's estimate both
// start from it.
const (
	CookbookMessages = `[{"role":"system","content":"You are a helpful assistant that can answer to questions about the weather."},` +
		`{"role":"user","content":"What's the weather like in San Francisco?"}]`
	CookbookFunction = `{"name":"get_current_weather","description":"Get the current weather in a given location",` +
		`"parameters":{"type":"object","properties":{"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},` +
		`"unit":{"type":"string","description":"The unit of temperature to return","enum":["celsius","fahrenheit"]}},"required":["location"]}}`
)
