package schema

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const personSchema = `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTakesThreeForms(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "person.json", "{\n  \"type\": \"object\",\n  \"properties\": {\"name\": {\"type\": \"string\"}, \"age\": {\"type\": \"integer\"}},\n  \"required\": [\"name\", \"age\"],\n  \"additionalProperties\": false\n}\n")
	tests := []struct {
		name, value, wantName, wantJSON string
	}{
		{"a file, compacted, named for it", file, "person", personSchema},
		{"inline JSON", "  " + personSchema, "output", personSchema},
		{"the concise form", "name, age int", "output", personSchema},
		{"a json_schema wrapper, with its name", `{"name":"person_v2","strict":true,"schema":` + personSchema + `}`, "person_v2", personSchema},
		{"chat's whole response_format", `{"type":"json_schema","json_schema":{"name":"p","schema":` + personSchema + `}}`, "p", personSchema},
		{"responses' text.format", `{"type":"json_schema","name":"p","schema":` + personSchema + `}`, "p", personSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.value)
			if err != nil {
				t.Fatalf("Parse(%q) error %v", tt.value, err)
			}
			if s.Name() != tt.wantName || string(s.JSON()) != tt.wantJSON {
				t.Errorf("Parse(%q) = name %q, %s; want %q, %s", tt.value, s.Name(), s.JSON(), tt.wantName, tt.wantJSON)
			}
			if !s.Strict() {
				t.Errorf("Parse(%q).Strict() = false (%s), want true", tt.value, s.Reason())
			}
		})
	}
}

func TestParseExistingFileWinsOverConcise(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, dir, "tags", `{"type":"object","properties":{"from_file":{"type":"string"}},"required":["from_file"],"additionalProperties":false}`)
	s, err := Parse("tags")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s.JSON()), "from_file") {
		t.Errorf(`Parse("tags") with a file "tags" = %s, want the file's schema`, s.JSON())
	}
	s, err = Parse("topics")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"object","properties":{"topics":{"type":"string"}},"required":["topics"],"additionalProperties":false}`; string(s.JSON()) != want {
		t.Errorf(`Parse("topics") without a file = %s, want the concise form %s`, s.JSON(), want)
	}
}

func TestParseWrapperStrictFalseIsObeyed(t *testing.T) {
	s, err := Parse(`{"name":"p","strict":false,"schema":` + personSchema + `}`)
	if err != nil {
		t.Fatal(err)
	}
	if s.Strict() || s.Reason() == "" {
		t.Errorf("Strict() = %v, Reason() = %q; want false and a reason", s.Strict(), s.Reason())
	}
}

// A bad schema is an error that names the problem, before anything is sent.
func TestParseErrorsNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.json", `{"type": "object",`)
	tests := []struct {
		name, value, wantErr string
	}{
		{"empty", "  ", "empty schema"},
		{"inline JSON that is not JSON", `{"type": "object"`, "inline schema: not JSON"},
		{"a file that is not JSON", bad, "bad.json: not JSON"},
		{"a missing file", filepath.Join(dir, "missing.json"), "missing.json: no such file"},
		{"a missing bare .json name", "person.json", "schema file person.json: no such file"},
		{"an unknown type", `{"type":"object","properties":{"age":{"type":"integr"}}}`, "at /properties/age/type: value must be one of 'array', 'boolean', 'integer', 'null', 'number', 'object', 'string', or be array"},
		{"a bad regex", `{"type":"string","pattern":"(a"}`, "at /pattern:"},
		{"a $ref to another file", `{"$ref":"other.json"}`, "$ref other.json points outside the schema"},
		{"a root that is not an object", `{"name":"x","schema":[1]}`, "not a JSON object"},
		{"a concise form that does not parse", "name, age integer", `concise schema: field "age integer": unknown type "integer"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.value)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want one containing %q", tt.value, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse(%q) error has more than one line: %q", tt.value, err)
			}
		})
	}
}

func TestSchemaNameFromFileName(t *testing.T) {
	tests := []struct{ path, want string }{
		{"schemas/invoice.schema.json", "invoice_schema"},
		{"My Schema (v2).json", "My_Schema__v2_"},
		{"....json", "output"},
		{"é.json", "output"},
		{strings.Repeat("a", 70) + ".json", strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := nameFromPath(tt.path); got != tt.want {
			t.Errorf("nameFromPath(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestWireFormsAreExactBytes(t *testing.T) {
	s, err := Parse("name, age int")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(s.ChatFormat()), `{"type":"json_schema","json_schema":{"name":"output","schema":`+personSchema+`,"strict":true}}`; got != want {
		t.Errorf("ChatFormat() =\n%s\nwant\n%s", got, want)
	}
	if got, want := string(s.ResponsesFormat()), `{"type":"json_schema","name":"output","schema":`+personSchema+`,"strict":true}`; got != want {
		t.Errorf("ResponsesFormat() =\n%s\nwant\n%s", got, want)
	}
	loose, err := Parse(`{"name":"loose","description":"a <person>","schema":{"type":"object"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(loose.ChatFormat()), `{"type":"json_schema","json_schema":{"name":"loose","description":"a <person>","schema":{"type":"object"},"strict":false}}`; got != want {
		t.Errorf("ChatFormat() of a non-strict schema =\n%s\nwant\n%s", got, want)
	}
}

func TestMultiWrapsItemsAsLLMDoes(t *testing.T) {
	s, err := Parse("name, age int")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Multi()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"object","properties":{"items":{"type":"array","items":` + personSchema + `}},"required":["items"],"additionalProperties":false}`
	if string(m.JSON()) != want {
		t.Errorf("Multi().JSON() =\n%s\nwant\n%s", m.JSON(), want)
	}
	if _, err := m.Validate(`{"items":[{"name":"Rex","age":3},{"name":"Ada","age":"two"}]}`); err == nil || err.Error() != "at /items/1/age: got string, want integer" {
		t.Errorf("Multi().Validate(an item with a string age) error = %v", err)
	}
}

func TestParseErrorSaysADanglingRef(t *testing.T) {
	_, err := Parse(`{"type":"object","properties":{"p":{"$ref":"#/definitions/p"}}}`)
	if err == nil || err.Error() != `inline schema: not a valid JSON Schema: json-pointer in "#/definitions/p" not found` {
		t.Errorf("Parse(a $ref to a missing definition) error = %v", err)
	}
}
