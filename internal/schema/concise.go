package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// conciseTypes are the concise form's type words and the JSON Schema types
// they stand for, as llm has them.
var conciseTypes = map[string]string{
	"int":   "integer",
	"float": "number",
	"bool":  "boolean",
	"str":   "string",
}

// Concise turns llm's concise schema syntax into a JSON Schema, following
// llm's own rules (simonw/llm, llm/utils.py, schema_dsl):
//
//   - fields are separated by newlines when the spec has any, else by
//     commas, so a newline-separated spec may use commas in descriptions;
//     blank fields are skipped;
//   - a field is NAME [TYPE] [: description]: the description is what
//     follows the first colon; TYPE is int, float, bool or str; a field
//     without one is a string;
//   - every field is required, in the order given, and the result is one
//     object of them all: {"type": "object", "properties": {...},
//     "required": [...]}. Many items of it are Multi (llm's --schema-multi).
//
// Two things differ, both where llm would silently read something the user
// did not mean, and both make the result usable:
//
//   - what llm misreads is an error here: a TYPE that is not one of the
//     four (llm makes "age integer" a string), a third word before the
//     colon (llm makes "full name" a field "full"), a field named twice,
//     a spec with no field; the spec is trimmed first, so a trailing
//     newline does not switch a comma-separated spec to lines;
//   - the object has "additionalProperties": false, so it meets strict
//     mode's rules by construction (every property required, only type and
//     description used) and is sent with strict true.
func Concise(spec string) (json.RawMessage, error) {
	spec = strings.TrimSpace(spec)
	sep := ","
	if strings.Contains(spec, "\n") {
		sep = "\n"
	}
	var props, required []byte
	seen := map[string]bool{}
	for _, field := range strings.Split(spec, sep) {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		info, desc, _ := strings.Cut(field, ":")
		desc = strings.TrimSpace(desc)
		words := strings.Fields(info)
		if len(words) == 0 {
			return nil, fmt.Errorf("field %q has no name before its colon", field)
		}
		name, typ := words[0], "string"
		if len(words) > 1 {
			t, ok := conciseTypes[words[1]]
			if !ok {
				return nil, fmt.Errorf("field %q: unknown type %q (want int, float, bool or str; a description goes after a colon)", field, words[1])
			}
			typ = t
		}
		if len(words) > 2 {
			return nil, fmt.Errorf("field %q: a field is NAME [TYPE] [: description], and %q follows the type", field, words[2])
		}
		if seen[name] {
			return nil, fmt.Errorf("field %q is named twice", name)
		}
		seen[name] = true
		if len(required) > 0 {
			props, required = append(props, ','), append(required, ',')
		}
		props = jsonenc.AppendString(props, name, false)
		props = append(props, `:{"type":"`...)
		props = append(props, typ...)
		props = append(props, '"')
		if desc != "" {
			props = append(props, `,"description":`...)
			props = jsonenc.AppendString(props, desc, false)
		}
		props = append(props, '}')
		required = jsonenc.AppendString(required, name, false)
	}
	if len(required) == 0 {
		return nil, errors.New("no fields")
	}
	b := []byte(`{"type":"object","properties":{`)
	b = append(b, props...)
	b = append(b, `},"required":[`...)
	b = append(b, required...)
	return append(b, `],"additionalProperties":false}`...), nil
}
