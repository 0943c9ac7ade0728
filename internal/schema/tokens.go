package schema

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// formatOverhead is the constant the measurement below found on top of the
// schema's own tokens.
const formatOverhead = 9

// Keywords the API leaves out of what the model reads, and so of the
// bill, by the measurement below.
var unbilledKeywords = []string{"required", "additionalProperties", "$schema"}

// Keywords whose value maps names to schemas, and keywords whose value is a
// schema or an array of schemas: where the walk goes on stripping.
var (
	schemaMaps   = []string{"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"}
	schemaValues = []string{"items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
		"unevaluatedItems", "unevaluatedProperties", "anyOf", "allOf", "oneOf", "prefixItems"}
)

// PromptTokens estimates the prompt tokens the schema adds to a request, as
// the API bills them, with count the model's tokenizer (o200k_base or
// cl100k_base, as for the messages).
//
// OpenAI does not publish how a json_schema format is put before the model.
// The best-supported approximation is a community measurement reported to
// the OpenAI cookbook in September 2025: the tokens of the
// schema as compact JSON with "required", "additionalProperties" and
// "$schema" left out at every level, plus 9, matched the billed difference
// linearly across schema sizes on the Responses API, where the schema as
// sent counted about twice the real figure. It is one person's fit: o4-mini
// was one token off, chat completions were not reported on, and the format
// may change with any model. The estimate is a reservation settled to the
// usage the API reports, so an error of a few tokens a line costs nothing
// but headroom.
func (s *Schema) PromptTokens(count func(string) int) int {
	return promptTokens(s.doc, count)
}

// promptTokens is PromptTokens of doc, a schema as compact JSON: the one
// rule for --schema's schema and a line's own (FormatTokens).
func promptTokens(doc []byte, count func(string) int) int {
	var b bytes.Buffer
	stripSchema(&b, doc)
	return count(b.String()) + formatOverhead
}

// stripSchema writes a schema, compact, without the unbilled keywords, in
// its own key order (as JavaScript's JSON.stringify keeps it).
func stripSchema(b *bytes.Buffer, v []byte) {
	m, err := readMembers(v)
	if err != nil || m == nil {
		stripArray(b, v)
		return
	}
	b.WriteByte('{')
	first := true
	for _, x := range m {
		if slices.Contains(unbilledKeywords, x.key) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(jsonenc.AppendString(nil, x.key, false))
		b.WriteByte(':')
		switch {
		case slices.Contains(schemaMaps, x.key):
			stripMap(b, x.val)
		case slices.Contains(schemaValues, x.key):
			stripSchema(b, x.val)
		default:
			b.Write(x.val)
		}
	}
	b.WriteByte('}')
}

// stripMap writes a map of names to schemas, each stripped.
func stripMap(b *bytes.Buffer, v []byte) {
	m, err := readMembers(v)
	if err != nil || m == nil {
		b.Write(v)
		return
	}
	b.WriteByte('{')
	for i, x := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(jsonenc.AppendString(nil, x.key, false))
		b.WriteByte(':')
		stripSchema(b, x.val)
	}
	b.WriteByte('}')
}

// stripArray writes an array of schemas, each stripped; any other value as
// it is.
func stripArray(b *bytes.Buffer, v []byte) {
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		b.Write(v)
		return
	}
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		stripSchema(b, it)
	}
	b.WriteByte(']')
}
