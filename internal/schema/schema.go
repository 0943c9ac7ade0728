// Package schema is --schema: structured outputs that gptbatch checks
// itself. It reads the flag's three forms (a JSON Schema file, inline JSON,
// llm's concise form), compiles the schema with a validator that passes the
// official JSON Schema test suite, decides whether OpenAI's strict mode can
// take it, writes the request fields that carry it (chat's
// response_format, responses' text.format), validates answers, builds the
// follow-up request that asks an invalid answer again, and estimates the
// schema's share of the prompt tokens.
//
// It knows nothing of the pipeline: the caller decodes answers, reserves,
// retries and writes results. A line's path through it:
//
//	body, held, err := schema.Resolve(flag, cache, endpoint, body) // before sending
//	v := held.Classify(content, finishReason, refusal)            // after decoding
//	if v.Retry() { body, err = schema.Reask(endpoint, original, content, v) }
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// DefaultName is the name a schema is sent under when nothing names it:
// inline JSON, the concise form, a file whose name has no usable letter.
const DefaultName = "output"

// Schema is a compiled JSON Schema with what is sent with it: its name, its
// compact bytes, and whether it goes with strict true. A Schema is
// immutable and safe for concurrent use; its zero value is not usable.
type Schema struct {
	name        string
	description string          // json_schema.description, sent when set
	doc         json.RawMessage // the schema, compact, in its own key order
	strict      bool
	reason      string // why it is not strict; "" when it is
	compiled    *jsonschema.Schema
}

// Name is the name the schema is sent under: [a-zA-Z0-9_-], at most 64
// characters, as the API requires.
func (s *Schema) Name() string { return s.name }

// JSON is the schema as sent: compact, its keys in the order given.
func (s *Schema) JSON() json.RawMessage { return s.doc }

// Strict reports whether the schema is sent with strict true.
func (s *Schema) Strict() bool { return s.strict }

// Reason says in one line why the schema is sent with strict false, for
// the caller to say once on stderr; "" when it is strict.
func (s *Schema) Reason() string { return s.reason }

// Parse reads the value of --schema. It is, tried in this order:
//
//  1. inline JSON, when it starts with "{" (after blanks);
//  2. a JSON Schema file, when a file of that name exists: an existing
//     file wins over the concise form;
//  3. an error naming the missing file, when it looks like nothing but a
//     path (one word, no comma or colon, with a "/" or ending in .json);
//  4. otherwise llm's concise form (see Concise).
//
// JSON (inline or in a file) is a JSON Schema whose root is an object, or
// one of the wrappers OpenAI's documentation shows, unwrapped: the
// json_schema object ({"name", "schema", "strict", "description"}), chat's
// response_format ({"type": "json_schema", "json_schema": {...}}) or
// responses' text.format ({"type": "json_schema", "name", "schema", ...}).
// A wrapper's name is kept; its "strict": false is obeyed; its "strict":
// true is not needed, as a schema that meets the rules is sent strict.
//
// The schema is compiled as JSON Schema draft 2020-12 unless its $schema
// names another draft; formats are asserted; a $ref must point inside the
// schema (the API cannot fetch another). A schema that does not compile, or
// a concise form that does not parse, is an error that names the problem.
func Parse(value string) (*Schema, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return nil, errors.New("empty schema")
	}
	if strings.HasPrefix(v, "{") {
		s, err := fromJSON([]byte(v), DefaultName)
		if err != nil {
			return nil, fmt.Errorf("inline schema: %w", err)
		}
		return s, nil
	}
	if fi, err := os.Stat(value); err == nil && !fi.IsDir() {
		b, err := os.ReadFile(value)
		if err != nil {
			return nil, fmt.Errorf("schema file: %w", err)
		}
		s, err := fromJSON(b, nameFromPath(value))
		if err != nil {
			return nil, fmt.Errorf("schema file %s: %w", value, err)
		}
		return s, nil
	}
	if looksLikePath(v) {
		return nil, fmt.Errorf("schema file %s: no such file", v)
	}
	doc, err := Concise(v)
	if err != nil {
		return nil, fmt.Errorf("concise schema: %w", err)
	}
	return compile(DefaultName, "", doc, true)
}

// looksLikePath reports whether v can only be meant as a file name: the
// concise form of one field has neither a "/" nor a ".json" ending, and one
// of more fields has a comma, a blank or a colon.
func looksLikePath(v string) bool {
	if strings.ContainsAny(v, ", \t\n:") {
		return false
	}
	return strings.ContainsRune(v, '/') || strings.ContainsRune(v, os.PathSeparator) ||
		strings.HasSuffix(strings.ToLower(v), ".json")
}

// nameFromPath makes a schema name of a file's name: its base without the
// extension, each character the API does not allow as "_", at most 64.
func nameFromPath(path string) string {
	base := filepath.Base(path)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	return sanitizeName(base)
}

// sanitizeName makes n fit the API's rule for a name, ^[a-zA-Z0-9_-]{1,64}$;
// a name with no letter or digit left is DefaultName.
func sanitizeName(n string) string {
	b := []byte(n)
	useful := false
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			useful = true
		case c == '_' || c == '-':
		default:
			b[i] = '_'
		}
	}
	if !useful {
		return DefaultName
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// fromJSON compiles b, a JSON Schema or one of the wrappers Parse names,
// named name unless a wrapper names it.
func fromJSON(b []byte, name string) (*Schema, error) {
	f, err := unwrap(b)
	if err != nil {
		return nil, err
	}
	if f.name != "" {
		name = sanitizeName(f.name)
	}
	s, err := compile(name, f.description, f.schema, f.strict == nil || *f.strict)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// format is a json_schema format's fields: chat's json_schema object,
// responses' text.format, or a bare schema.
type format struct {
	name, description string
	schema            json.RawMessage
	strict            *bool // the format's "strict", nil when it has none
}

// unwrap finds the schema in b: b itself, or the "schema" of the wrapper
// it is (see Parse).
func unwrap(b []byte) (format, error) {
	top, err := readMembers(b)
	if err != nil {
		return format{}, err
	}
	if top == nil {
		return format{}, errors.New("the schema is not a JSON object")
	}
	keys := map[string]json.RawMessage{}
	for _, m := range top {
		keys[m.key] = m.val
	}
	// chat's whole response_format: {"type": "json_schema", "json_schema": {...}}
	if t, ok := keys["type"]; ok && string(t) == `"json_schema"` {
		if js, ok := keys["json_schema"]; ok && len(keys) == 2 {
			return unwrapFields(js)
		}
		if _, ok := keys["schema"]; ok && onlyFormatKeys(keys) {
			return unwrapFields(b)
		}
	}
	_, hasType := keys["type"]
	if _, ok := keys["schema"]; ok && !hasType && onlyFormatKeys(keys) {
		return unwrapFields(b)
	}
	return format{schema: b}, nil
}

// onlyFormatKeys reports whether every key of an object is one of a
// json_schema format's: then "schema" is a wrapped schema, not a keyword a
// JSON Schema would ignore.
func onlyFormatKeys(keys map[string]json.RawMessage) bool {
	for k := range keys {
		switch k {
		case "type", "name", "description", "schema", "strict":
		default:
			return false
		}
	}
	return true
}

// unwrapFields reads a json_schema format object: {"name", "description",
// "schema", "strict"} (and "type" in text.format).
func unwrapFields(b []byte) (format, error) {
	var w struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return format{}, fmt.Errorf("json_schema format: %w", err)
	}
	if len(w.Schema) == 0 || string(w.Schema) == "null" {
		return format{}, errors.New("json_schema format has no schema")
	}
	return format{name: w.Name, description: w.Description, schema: w.Schema, strict: w.Strict}, nil
}

// reasonStrictFalse is the reason of a schema whose wrapper asked for
// strict false.
const reasonStrictFalse = `it says "strict": false`

// resourceURL is where a schema is compiled: a URL nothing can be loaded
// from, so a $ref to another file fails instead of reading one.
const resourceURL = "https://schema.gptbatch.invalid/schema.json"

// compile compiles doc, a JSON Schema, and decides its strictness; strict
// false keeps it non-strict whatever its rules.
func compile(name, description string, doc []byte, strict bool) (*Schema, error) {
	var c bytes.Buffer
	if err := json.Compact(&c, doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("the schema is not a JSON object")
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.AssertFormat()
	if err := comp.AddResource(resourceURL, v); err != nil {
		return nil, err
	}
	sch, err := comp.Compile(resourceURL)
	if err != nil {
		return nil, compileError(err)
	}
	s := &Schema{name: name, description: description, doc: c.Bytes(), compiled: sch}
	switch reason := strictReason(v); {
	case !strict:
		s.reason = reasonStrictFalse
	case reason != "":
		s.reason = reason
	default:
		s.strict = true
	}
	return s, nil
}

// compileError says in one line why a schema did not compile.
func compileError(err error) error {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			return fmt.Errorf("not a valid JSON Schema: %s", describe(ve))
		}
		return fmt.Errorf("not a valid JSON Schema: %s", strings.ReplaceAll(sve.Err.Error(), resourceURL, ""))
	}
	var le *jsonschema.LoadURLError
	if errors.As(err, &le) {
		return fmt.Errorf("$ref %s points outside the schema: only references inside it (#/$defs/...) are supported", strings.TrimPrefix(le.URL, strings.TrimSuffix(resourceURL, "schema.json")))
	}
	// The URL is the compiler's, not the user's: say "#/..." alone.
	return fmt.Errorf("not a valid JSON Schema: %s", strings.ReplaceAll(err.Error(), resourceURL, ""))
}

// ChatFormat is chat completions' response_format for the schema, as the
// exact bytes to send:
// {"type":"json_schema","json_schema":{"name":...,"schema":...,"strict":...}}.
func (s *Schema) ChatFormat() json.RawMessage {
	b := []byte(`{"type":"json_schema","json_schema":`)
	b = s.appendFields(b, false)
	return append(b, '}')
}

// ResponsesFormat is the Responses API's text.format for the schema, as
// the exact bytes to send:
// {"type":"json_schema","name":...,"schema":...,"strict":...}.
func (s *Schema) ResponsesFormat() json.RawMessage {
	return s.appendFields(nil, true)
}

// appendFields appends the json_schema format object, with "type" first
// when withType (the Responses API's flat form).
func (s *Schema) appendFields(b []byte, withType bool) []byte {
	b = append(b, '{')
	if withType {
		b = append(b, `"type":"json_schema",`...)
	}
	b = append(b, `"name":`...)
	b = jsonenc.AppendString(b, s.name, false)
	if s.description != "" {
		b = append(b, `,"description":`...)
		b = jsonenc.AppendString(b, s.description, false)
	}
	b = append(b, `,"schema":`...)
	b = append(b, s.doc...)
	if s.strict {
		b = append(b, `,"strict":true}`...)
	} else {
		b = append(b, `,"strict":false}`...)
	}
	return b
}

// Multi is the schema of an answer that holds many of s: llm's
// --schema-multi, {"items": [s, ...]} (llm/utils.py, multi_schema), so the
// root stays an object as strict mode requires. The wrapper object has
// "additionalProperties": false, so a strict s stays strict.
func (s *Schema) Multi() (*Schema, error) {
	return compile(s.name, s.description, MultiItems(s.doc), s.reason != reasonStrictFalse)
}

// MultiItems wraps a schema as llm's multi_schema does, adding
// "additionalProperties": false for strict mode.
func MultiItems(doc json.RawMessage) json.RawMessage {
	b := []byte(`{"type":"object","properties":{"items":{"type":"array","items":`)
	b = append(b, doc...)
	return append(b, `}},"required":["items"],"additionalProperties":false}`...)
}
