package schema

import (
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

func TestPromptTokensCountsTheSchemaAsBilled(t *testing.T) {
	tests := []struct {
		name, schema, wantCounted string
	}{
		{"required, additionalProperties and $schema left out at every level",
			`{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"string"}},"required":["b"],"additionalProperties":false},"l":{"type":"array","items":{"type":"object","properties":{"c":{"type":"integer"}},"required":["c"],"additionalProperties":false}},"u":{"anyOf":[{"type":"object","properties":{"d":{"type":"string"}},"required":["d"],"additionalProperties":false},{"type":"null"}]}},"required":["a","l","u"],"additionalProperties":false}`,
			`{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"string"}}},"l":{"type":"array","items":{"type":"object","properties":{"c":{"type":"integer"}}}},"u":{"anyOf":[{"type":"object","properties":{"d":{"type":"string"}}},{"type":"null"}]}}}`},
		{"properties named like the keywords are kept, and $defs are stripped",
			`{"type":"object","properties":{"required":{"type":"boolean"},"p":{"$ref":"#/$defs/p"}},"required":["required","p"],"additionalProperties":false,"$defs":{"p":{"type":"object","properties":{"x":{"type":"string","description":"an \"x\" <here>"}},"required":["x"],"additionalProperties":false}}}`,
			`{"type":"object","properties":{"required":{"type":"boolean"},"p":{"$ref":"#/$defs/p"}},"$defs":{"p":{"type":"object","properties":{"x":{"type":"string","description":"an \"x\" <here>"}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.schema)
			var counted string
			got := s.PromptTokens(func(text string) int { counted = text; return len(text) })
			if counted != tt.wantCounted {
				t.Errorf("PromptTokens counted\n%s\nwant\n%s", counted, tt.wantCounted)
			}
			if want := len(tt.wantCounted) + formatOverhead; got != want {
				t.Errorf("PromptTokens = %d, want %d", got, want)
			}
		})
	}
}

// TestFormatTokensCountsALinesOwnSchemaAsPromptTokens: a line's own
// json_schema format, chat's or the Responses API's, blanks and all, is
// counted as PromptTokens counts the same schema given to --schema; a body
// with no such format counts nothing, and a schema that does not compile
// is counted all the same (the API bills what it is sent).
func TestFormatTokensCountsALinesOwnSchemaAsPromptTokens(t *testing.T) {
	doc := `{"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "tags"], "additionalProperties": false}`
	count := func(text string) int { return len(text) }
	want := mustParse(t, doc).PromptTokens(count)
	outside := `{"type":"object","properties":{"p":{"$ref":"other.json#/p"}}}`
	wantOutside := len(outside) + formatOverhead
	tests := []struct {
		name, endpoint, body string
		want                 int
	}{
		{"chat", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":` + doc + `}}}`, want},
		{"responses", jsonl.EndpointResponses,
			`{"input":"hi","text":{"verbosity":"low","format":{"type":"json_schema","name":"x","schema":` + doc + `}}}`, want},
		{"a schema that does not compile", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":` + outside + `}}}`, wantOutside},
		{"chat's format on the Responses API", jsonl.EndpointResponses,
			`{"input":"hi","response_format":{"type":"json_schema","json_schema":{"name":"x","schema":` + doc + `}}}`, 0},
		{"json_object", jsonl.EndpointChat, `{"messages":[],"response_format":{"type":"json_object"}}`, 0},
		{"text", jsonl.EndpointResponses, `{"input":"hi","text":{"format":{"type":"text"}}}`, 0},
		{"no format", jsonl.EndpointChat, `{"messages":[]}`, 0},
		{"no schema", jsonl.EndpointChat, `{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}`, 0},
		{"embeddings", jsonl.EndpointEmbeddings, `{"input":"hi"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatTokens(tt.endpoint, []byte(tt.body), count); got != tt.want {
				t.Errorf("FormatTokens(%s) = %d, want %d", tt.body, got, tt.want)
			}
		})
	}
}
