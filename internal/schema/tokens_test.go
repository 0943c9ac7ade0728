package schema

import "testing"

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
