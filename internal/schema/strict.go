package schema

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// The rules of OpenAI's strict mode, from the "Supported schemas" section
// of the Structured Outputs guide,
// https://developers.openai.com/api/docs/guides/structured-outputs#supported-schemas
// (formerly platform.openai.com/docs/guides/structured-outputs):
//
//   - the root is an object, not anyOf;
//   - every object has "additionalProperties": false and lists every one
//     of its properties in "required" (an optional field is a required one
//     whose type allows null, "type": ["string", "null"]);
//   - only a subset of keywords: type (one name, or one and "null"),
//     properties, required, additionalProperties, items, enum, const,
//     anyOf (not at the root), $ref to the root or to $defs, title,
//     description; for strings pattern and format (date-time, time, date,
//     duration, email, hostname, ipv4, ipv6, uuid); for numbers
//     multipleOf, minimum, exclusiveMinimum, maximum, exclusiveMaximum;
//     for arrays minItems and maxItems. allOf, not, oneOf, if/then/else,
//     dependentRequired, dependentSchemas, patternProperties, minLength,
//     default and the rest are not supported;
//   - at most 5,000 object properties in all and 10 levels of nesting; at
//     most 1,000 enum values in all; property names, definition names,
//     enum and const values at most 120,000 characters in all; a string
//     enum of more than 250 values at most 15,000 characters.
//
// The page's earlier limits were 100 properties, 5 levels, 500 enum values,
// 15,000 and 7,500 characters. Where the page is vague, this errs toward
// non-strict, whose only cost is that the API does not constrain the answer
// (local validation still holds it to the schema), where a wrong "strict"
// would cost a 400 on every line: keywords are allowed per type as in
// OpenAI's own Java SDK (openai-java, core/JsonSchemaValidator.kt), which
// also counts depth as it does here, one level for each step into
// properties, items, anyOf or $defs.
const (
	maxProperties    = 5000
	maxDepth         = 10
	maxEnumValues    = 1000
	maxStringLength  = 120000
	bigEnumValues    = 250
	maxBigEnumLength = 15000
	strictMode       = "strict mode"
)

// Keywords strict mode allows, by the kind of schema they appear in.
var (
	rootOnlyKeywords = []string{"$schema", "$id", "$defs"}
	anyOfKeywords    = []string{"anyOf", "title", "description"}
	refKeywords      = []string{"$ref", "title", "description"}
	objectKeywords   = []string{"type", "properties", "required", "additionalProperties", "title", "description"}
	arrayKeywords    = []string{"type", "items", "minItems", "maxItems", "title", "description"}
	stringKeywords   = []string{"type", "enum", "const", "pattern", "format", "title", "description"}
	numberKeywords   = []string{"type", "enum", "const", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "multipleOf", "title", "description"}
	simpleKeywords   = []string{"type", "enum", "const", "title", "description"}
	strictFormats    = []string{"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

// strictCheck walks a schema for the first rule strict mode would refuse.
type strictCheck struct {
	defs       map[string]bool // "#/$defs/NAME" for each definition
	properties int
	enumValues int
	strings    int // characters of property and definition names, enum and const values
}

// strictReason is "" when doc, a decoded JSON Schema, meets strict mode's
// rules, or the first rule it breaks, as "#/path: what".
func strictReason(doc any) string {
	root, _ := doc.(map[string]any)
	c := &strictCheck{defs: map[string]bool{"#": true}}
	if t, _ := root["type"].(string); t != "object" {
		return `#: the root is not "type": "object"`
	}
	if defs, ok := root["$defs"].(map[string]any); ok {
		for name := range defs {
			c.defs["#/$defs/"+escapePointer(name)] = true
		}
	}
	if r := c.node(root, "#", 0); r != "" {
		return r
	}
	if defs, ok := root["$defs"]; ok {
		m, ok := defs.(map[string]any)
		if !ok {
			return "#/$defs: not an object"
		}
		for _, name := range sortedKeys(m) {
			c.strings += utf8.RuneCountInString(name)
			if r := c.node(m[name], "#/$defs/"+escapePointer(name), 1); r != "" {
				return r
			}
		}
	}
	switch {
	case c.properties > maxProperties:
		return fmt.Sprintf("#: %d object properties, more than the %d %s allows", c.properties, maxProperties, strictMode)
	case c.enumValues > maxEnumValues:
		return fmt.Sprintf("#: %d enum values, more than the %d %s allows", c.enumValues, maxEnumValues, strictMode)
	case c.strings > maxStringLength:
		return fmt.Sprintf("#: %d characters of names and enum values, more than the %d %s allows", c.strings, maxStringLength, strictMode)
	}
	return ""
}

// node checks one schema at path, depth levels below the root.
func (c *strictCheck) node(v any, path string, depth int) string {
	if depth > maxDepth {
		return fmt.Sprintf("%s: nested %d levels deep, more than the %d %s allows", path, depth, maxDepth, strictMode)
	}
	s, ok := v.(map[string]any)
	if !ok {
		return path + ": not a schema object"
	}
	_, hasType := s["type"]
	_, hasAnyOf := s["anyOf"]
	_, hasRef := s["$ref"]
	n := 0
	for _, b := range []bool{hasType, hasAnyOf, hasRef} {
		if b {
			n++
		}
	}
	if n != 1 {
		return path + `: strict mode needs exactly one of "type", "anyOf" and "$ref"`
	}
	switch {
	case hasAnyOf:
		if depth == 0 {
			return path + `: "anyOf" at the root`
		}
		if r := c.keywords(s, anyOfKeywords, path, depth); r != "" {
			return r
		}
		branches, ok := s["anyOf"].([]any)
		if !ok || len(branches) == 0 {
			return path + `/anyOf: not a non-empty array`
		}
		for i, b := range branches {
			if r := c.node(b, fmt.Sprintf("%s/anyOf/%d", path, i), depth+1); r != "" {
				return r
			}
		}
		return ""
	case hasRef:
		if r := c.keywords(s, refKeywords, path, depth); r != "" {
			return r
		}
		ref, _ := s["$ref"].(string)
		if !c.defs[ref] {
			return fmt.Sprintf("%s: $ref %q is neither the root nor one of $defs", path, ref)
		}
		return ""
	}
	typ, r := typeName(s["type"], path)
	if r != "" {
		return r
	}
	switch typ {
	case "object":
		return c.object(s, path, depth)
	case "array":
		if r := c.keywords(s, arrayKeywords, path, depth); r != "" {
			return r
		}
		if _, ok := s["items"].(map[string]any); !ok {
			return path + `: an array without an "items" schema`
		}
		return c.node(s["items"], path+"/items", depth+1)
	case "string":
		if r := c.keywords(s, stringKeywords, path, depth); r != "" {
			return r
		}
		if f, ok := s["format"]; ok {
			if fs, _ := f.(string); !slices.Contains(strictFormats, fs) {
				return fmt.Sprintf("%s: format %v is not one %s supports", path, f, strictMode)
			}
		}
	case "number", "integer":
		if r := c.keywords(s, numberKeywords, path, depth); r != "" {
			return r
		}
	case "boolean", "null":
		if r := c.keywords(s, simpleKeywords, path, depth); r != "" {
			return r
		}
	default:
		return fmt.Sprintf("%s: type %q", path, typ)
	}
	return c.values(s, typ == "string", path)
}

// object checks an object schema: additionalProperties false, every
// property required, each property's schema.
func (c *strictCheck) object(s map[string]any, path string, depth int) string {
	if r := c.keywords(s, objectKeywords, path, depth); r != "" {
		return r
	}
	if ap, ok := s["additionalProperties"].(bool); !ok || ap {
		return path + `: an object without "additionalProperties": false`
	}
	props, ok := s["properties"].(map[string]any)
	if !ok || len(props) == 0 {
		return path + `: an object without properties`
	}
	req, _ := s["required"].([]any)
	listed := map[string]bool{}
	for _, r := range req {
		if name, ok := r.(string); ok {
			listed[name] = true
		}
	}
	names := sortedKeys(props)
	for _, name := range names {
		if !listed[name] {
			return fmt.Sprintf("%s: property %q is not in \"required\" (an optional field is a required one whose type allows null)", path, name)
		}
	}
	for name := range listed {
		if _, ok := props[name]; !ok {
			return fmt.Sprintf("%s: \"required\" names %q, which is not a property", path, name)
		}
	}
	for _, name := range names {
		c.properties++
		c.strings += utf8.RuneCountInString(name)
		if r := c.node(props[name], path+"/properties/"+escapePointer(name), depth+1); r != "" {
			return r
		}
	}
	return ""
}

// keywords checks that s uses only allowed keywords, and the root-only ones
// at the root.
func (c *strictCheck) keywords(s map[string]any, allowed []string, path string, depth int) string {
	for _, k := range sortedKeys(s) {
		if slices.Contains(allowed, k) || depth == 0 && slices.Contains(rootOnlyKeywords, k) {
			continue
		}
		return fmt.Sprintf("%s: %q is not supported in %s", path, k, strictMode)
	}
	return ""
}

// values counts s's enum and const values toward the limits, and checks a
// big string enum's length.
func (c *strictCheck) values(s map[string]any, isString bool, path string) string {
	if e, ok := s["enum"]; ok {
		vals, ok := e.([]any)
		if !ok {
			return path + "/enum: not an array"
		}
		length := 0
		for _, v := range vals {
			length += valueLength(v)
		}
		c.enumValues += len(vals)
		c.strings += length
		if isString && len(vals) > bigEnumValues && length > maxBigEnumLength {
			return fmt.Sprintf("%s/enum: %d values of %d characters; %s allows %d characters in an enum of more than %d values",
				path, len(vals), length, strictMode, maxBigEnumLength, bigEnumValues)
		}
	}
	if v, ok := s["const"]; ok {
		c.strings += valueLength(v)
	}
	return ""
}

// valueLength is the characters of an enum or const value: a string's own,
// any other value's JSON text.
func valueLength(v any) int {
	if s, ok := v.(string); ok {
		return utf8.RuneCountInString(s)
	}
	b, _ := json.Marshal(v)
	return utf8.RuneCount(b)
}

// typeName reads "type": one name, or one name and "null".
func typeName(t any, path string) (string, string) {
	switch t := t.(type) {
	case string:
		return t, ""
	case []any:
		if len(t) == 2 {
			a, _ := t[0].(string)
			b, _ := t[1].(string)
			switch {
			case a != "" && a != "null" && b == "null":
				return a, ""
			case b != "" && b != "null" && a == "null":
				return b, ""
			}
		}
	}
	return "", path + `/type: strict mode takes one type name, or one and "null"`
}

// sortedKeys are m's keys in order, so the first rule broken is the same
// on every run.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// escapePointer escapes a name for a JSON pointer (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
