package schema

import (
	"strings"
	"testing"
)

// The wants are llm's schema_dsl output for the same spec (simonw/llm,
// llm/utils.py), compact, with "additionalProperties": false added.
func TestConciseReadsLLMSyntax(t *testing.T) {
	tests := []struct {
		name, spec, want string
	}{
		{"commas, types and a description", "name, age int, score float, tags: comma-separated topics",
			`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"score":{"type":"number"},"tags":{"type":"string","description":"comma-separated topics"}},"required":["name","age","score","tags"],"additionalProperties":false}`},
		{"newlines allow commas in descriptions", "name\nbio: one sentence, with commas\nalive bool",
			`{"type":"object","properties":{"name":{"type":"string"},"bio":{"type":"string","description":"one sentence, with commas"},"alive":{"type":"boolean"}},"required":["name","bio","alive"],"additionalProperties":false}`},
		{"str type; a description keeps later colons", "name str, age int: in years, height float: metres: approx",
			`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","description":"in years"},"height":{"type":"number","description":"metres: approx"}},"required":["name","age","height"],"additionalProperties":false}`},
		{"blank fields skipped", " a ,, b ",
			`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a","b"],"additionalProperties":false}`},
		{"a trailing newline does not make a comma spec lines", "name, age int\n",
			`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`},
		{"CRLF lines", "name\r\nage int\r\n",
			`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`},
		{"quotes and <> in a description are JSON-escaped only as needed", `quote: say "hi" <b>`,
			`{"type":"object","properties":{"quote":{"type":"string","description":"say \"hi\" <b>"}},"required":["quote"],"additionalProperties":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Concise(tt.spec)
			if err != nil {
				t.Fatalf("Concise(%q) error %v", tt.spec, err)
			}
			if string(got) != tt.want {
				t.Errorf("Concise(%q) =\n%s\nwant\n%s", tt.spec, got, tt.want)
			}
		})
	}
}

// What llm silently misreads is an error that says what is wrong.
func TestConciseRejectsWhatLLMMisreads(t *testing.T) {
	tests := []struct {
		name, spec, wantErr string
	}{
		{"unknown type", "name, age integer", `unknown type "integer"`},
		{"two-word name", "full name, age int", `"name"`},
		{"a third word", "age int years", `"years" follows the type`},
		{"named twice", "name, age int, name", `"name" is named twice`},
		{"nothing before a colon", "name, : a description", "no name before its colon"},
		{"no fields", " , ,", "no fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Concise(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Concise(%q) error = %v, want one containing %q", tt.spec, err, tt.wantErr)
			}
		})
	}
}

func TestConciseSchemaIsStrict(t *testing.T) {
	s, err := Parse("name, age int: in years, score float, ok bool")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Strict() {
		t.Errorf("Parse(concise).Strict() = false (%s), want true", s.Reason())
	}
	m, err := s.Multi()
	if err != nil {
		t.Fatal(err)
	}
	if !m.Strict() {
		t.Errorf("Multi().Strict() = false (%s), want true", m.Reason())
	}
}
