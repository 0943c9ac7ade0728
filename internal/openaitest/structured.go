package openaitest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"strconv"
	"strings"
)

// Structured outputs. A chat request whose response_format is
// {"type": "json_schema", "json_schema": {"name", "schema", ...}}, or a
// responses request whose text.format is {"type": "json_schema", "name",
// "schema", ...}, is answered with JSON made from its schema that fits it,
// as a model held to it answers:
//
//   - an object has every property its "properties" list, in their order
//     (strict mode requires them all);
//   - a string is "<name> of <prompt>", or an enum's or const's value, or a
//     value of its format (date-time, date, time, duration, email,
//     hostname, ipv4, ipv6, uuid), within minLength and maxLength; a
//     pattern is not followed;
//   - an integer or a number lies within minimum and maximum; a boolean
//     is true; an array has two items, or minItems, at most maxItems;
//   - a type list takes its first type but "null"; anyOf and oneOf their
//     first branch; $ref follows "#", "#/$defs/..." and
//     "#/definitions/...".
//
// The prompt is the request's first user message. The schema counts in the
// prompt tokens as the API bills it (see formatTokens). A string too long
// for the output cap is cut, with finish_reason "length", as any answer is.
//
// Invalid answers, for clients that check them (see StructuredConfig):
// a share of first answers, drawn from the seed and the prompt so that a
// run is reproducible in any order, and every answer to a prompt that
// contains "__invalid__". A prompt that contains "__refusal__" is refused,
// as it is without a schema.

// InvalidKind is a way an answer to a structured-output request fails.
type InvalidKind int

// The kinds of invalid answer.
const (
	// InvalidNotJSON answers prose around the JSON, in a code fence.
	InvalidNotJSON InvalidKind = iota
	// InvalidType answers JSON with the wrong type in its first field.
	InvalidType
	// InvalidTruncated answers the first half of the JSON, with
	// finish_reason "length" (status incomplete in /v1/responses), as an
	// answer cut off at the output cap is.
	InvalidTruncated
	// InvalidRefused refuses: content null and refusal RefusalMessage.
	InvalidRefused
)

// String returns the kind's constant name.
func (k InvalidKind) String() string {
	switch k {
	case InvalidNotJSON:
		return "InvalidNotJSON"
	case InvalidType:
		return "InvalidType"
	case InvalidTruncated:
		return "InvalidTruncated"
	case InvalidRefused:
		return "InvalidRefused"
	}
	return "InvalidKind(" + strconv.Itoa(int(k)) + ")"
}

// StructuredConfig makes answers to structured-output requests invalid.
// The zero value answers every one validly.
type StructuredConfig struct {
	// InvalidRate is the share of first answers to a prompt that are
	// invalid: a prompt the server has not yet answered under a schema.
	// Whether a prompt's first answer is invalid, and how, is drawn from
	// Config.Seed and the prompt alone, so that a run gets the same
	// invalid answers whatever the order its requests arrive in. Later
	// answers to the prompt (the client asking again) are valid.
	InvalidRate float64
	// Invalid are the kinds drawn from, uniformly; default all four.
	Invalid []InvalidKind
}

// shaped is the answer to a structured-output request.
type shaped struct {
	text    string // the answer: JSON that fits, or an invalid one
	cut     bool   // cut off as at the output cap: finish_reason "length"
	refused bool
	kind    InvalidKind
	invalid bool
}

// StructuredStats counts the answers to structured-output requests.
type StructuredStats struct {
	// Answered counts them all; Invalid those made invalid, by kind.
	Answered int
	Invalid  map[InvalidKind]int
}

// Structured returns the counts of structured answers so far.
func (s *Server) Structured() StructuredStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StructuredStats{Answered: s.structured.answered, Invalid: map[InvalidKind]int{}}
	for k, n := range s.structured.invalid {
		st.Invalid[k] = n
	}
	return st
}

// structuredState is what the server remembers of structured answers.
type structuredState struct {
	answered int
	invalid  map[InvalidKind]int
	prompts  map[string]int // answers given, by prompt
}

// shape answers a request whose schema is sch and whose prompt is prompt.
func (s *Server) shape(sch json.RawMessage, prompt string) shaped {
	s.mu.Lock()
	st := &s.structured
	if st.prompts == nil {
		st.prompts, st.invalid = map[string]int{}, map[InvalidKind]int{}
	}
	first := st.prompts[prompt] == 0
	st.prompts[prompt]++
	st.answered++
	s.mu.Unlock()

	g := &generator{root: sch, prompt: prompt}
	valid := g.value(sch, "value", 0, false)
	a := shaped{text: string(valid)}
	kind, bad := InvalidType, strings.Contains(prompt, "__invalid__")
	if !bad && first && s.cfg.Structured.InvalidRate > 0 {
		kinds := s.cfg.Structured.Invalid
		if len(kinds) == 0 {
			kinds = []InvalidKind{InvalidNotJSON, InvalidType, InvalidTruncated, InvalidRefused}
		}
		h := promptHash(s.cfg.Seed, prompt)
		if float64(h>>11)/(1<<53) < s.cfg.Structured.InvalidRate {
			bad, kind = true, kinds[int((h&0x7ff)%uint64(len(kinds)))]
		}
	}
	if !bad {
		return a
	}
	a.invalid, a.kind = true, kind
	switch kind {
	case InvalidNotJSON:
		a.text = "Sure! Here is the JSON you asked for:\n```json\n" + string(valid) + "\n```"
	case InvalidType:
		a.text = string((&generator{root: sch, prompt: prompt}).value(sch, "value", 0, true))
	case InvalidTruncated:
		a.text, a.cut = string(valid[:len(valid)/2]), true
	case InvalidRefused:
		a.text, a.refused = RefusalMessage, true
	}
	s.mu.Lock()
	st.invalid[kind]++
	s.mu.Unlock()
	return a
}

// promptHash draws a prompt's fate from the seed: the same every run.
func promptHash(seed int64, prompt string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	h.Write(b[:])
	h.Write([]byte(prompt))
	// FNV's high bits mix poorly for short inputs: finish with a
	// multiply-xorshift.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// generator writes JSON that fits a schema.
type generator struct {
	root   json.RawMessage
	prompt string
	broken bool // the wrong type was written (wrong asked for one)
}

// maxDepth bounds $ref's recursion: past it, a value is null.
const maxGenDepth = 12

// value is a value of schema sch named name (a property's name, for its
// text). With wrong, the first value of a given type is of another type.
func (g *generator) value(sch json.RawMessage, name string, depth int, wrong bool) []byte {
	m := readObject(sch)
	if depth > maxGenDepth || m == nil {
		return []byte("null")
	}
	if ref, ok := m.str("$ref"); ok {
		return g.value(g.resolve(ref), name, depth+1, wrong)
	}
	if c := m.get("const"); c != nil {
		return compact(c)
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if branches := readArray(m.get(k)); len(branches) > 0 {
			pick := branches[0]
			for _, b := range branches {
				if t, _ := readObject(b).str("type"); t != "null" {
					pick = b
					break
				}
			}
			return g.value(pick, name, depth+1, wrong)
		}
	}
	typ := schemaType(m)
	if wrong && !g.broken && typ != "object" && typ != "array" && typ != "" {
		g.broken = true
		if typ == "string" {
			return []byte("12345")
		}
		return []byte(`"not a ` + typ + `"`)
	}
	if e := readArray(m.get("enum")); len(e) > 0 {
		return compact(e[int(promptHash(0, g.prompt+name)%uint64(len(e)))])
	}
	switch typ {
	case "object":
		var b bytes.Buffer
		b.WriteByte('{')
		props := readObject(m.get("properties"))
		for i, p := range props {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(quote(p.key))
			b.WriteByte(':')
			b.Write(g.value(p.val, p.key, depth+1, wrong))
		}
		b.WriteByte('}')
		return b.Bytes()
	case "array":
		n := 2
		if v, ok := m.num("minItems"); ok && int(v) > n {
			n = int(v)
		}
		if v, ok := m.num("maxItems"); ok && int(v) < n {
			n = int(v)
		}
		items := m.get("items")
		var b bytes.Buffer
		b.WriteByte('[')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(g.value(items, fmt.Sprintf("%s %d", name, i+1), depth+1, wrong))
		}
		b.WriteByte(']')
		return b.Bytes()
	case "integer", "number":
		v := float64(len(name) + len(g.prompt)%50)
		if typ == "number" {
			v += 0.5
		}
		if lo, ok := m.num("minimum"); ok && v < lo {
			v = lo
		}
		if lo, ok := m.num("exclusiveMinimum"); ok && v <= lo {
			v = lo + 1
		}
		if hi, ok := m.num("maximum"); ok && v > hi {
			v = hi
		}
		if hi, ok := m.num("exclusiveMaximum"); ok && v >= hi {
			v = hi - 0.25
			if typ == "integer" {
				v = math.Ceil(hi) - 1
			}
		}
		if typ == "integer" {
			v = math.Ceil(v)
		}
		return []byte(strconv.FormatFloat(v, 'f', -1, 64))
	case "boolean":
		return []byte("true")
	case "null":
		return []byte("null")
	}
	return quote(g.text(m, name))
}

// text is a string value of m named name.
func (g *generator) text(m object, name string) string {
	f, _ := m.str("format")
	s := map[string]string{
		"date-time": "2024-05-06T07:08:09Z", "date": "2024-05-06", "time": "07:08:09Z",
		"duration": "P1DT2H", "email": "ada@example.com", "hostname": "example.com",
		"ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "uuid": "123e4567-e89b-42d3-a456-426614174000",
	}[f]
	if s != "" {
		return s
	}
	s = name + " of " + shortPrompt(g.prompt)
	if lo, ok := m.num("minLength"); ok {
		for len([]rune(s)) < int(lo) {
			s += " " + name
		}
	}
	if hi, ok := m.num("maxLength"); ok && len([]rune(s)) > int(hi) {
		s = string([]rune(s)[:int(hi)])
	}
	return s
}

// shortPrompt is the head of a prompt, for strings made of it: an answer
// of ten fields stays far below the usual output caps.
func shortPrompt(p string) string {
	if r := []rune(p); len(r) > 24 {
		return string(r[:24])
	}
	return p
}

// resolve is the schema a $ref inside the root names; null for another.
func (g *generator) resolve(ref string) json.RawMessage {
	if ref == "#" {
		return g.root
	}
	cur := g.root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		cur = readObject(cur).get(part)
	}
	return cur
}

// schemaType is the type m asks for: its "type" (a list's first but
// "null"), else what its keywords imply.
func schemaType(m object) string {
	raw := m.get("type")
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		for _, t := range many {
			if t != "null" {
				return t
			}
		}
		if len(many) > 0 {
			return many[0]
		}
	}
	switch {
	case m.get("properties") != nil:
		return "object"
	case m.get("items") != nil:
		return "array"
	}
	return ""
}

// formatTokens is what a json_schema format adds to the prompt tokens, as
// the API bills it by the best measurement there is (openai-cookbook issue
// 2140, September 2025): the schema as compact JSON, without "required",
// "additionalProperties" and "$schema" at any level, plus 9. The fake bills
// it so; gptbatch estimates it so too, and a test that compares them
// shows only that both read the schema alike.
func formatTokens(enc *encoder, sch json.RawMessage) int {
	if sch == nil {
		return 0
	}
	return enc.schemaTokens(string(sch), func() int {
		var b bytes.Buffer
		writeBilled(&b, sch)
		return enc.count(b.String()) + 9
	})
}

// writeBilled writes v, compact, without the keywords the API leaves out
// of a schema's tokens, wherever they are keywords of a schema.
func writeBilled(b *bytes.Buffer, v json.RawMessage) {
	m := readObject(v)
	if m == nil {
		if items := readArray(v); items != nil {
			b.WriteByte('[')
			for i, it := range items {
				if i > 0 {
					b.WriteByte(',')
				}
				writeBilled(b, it)
			}
			b.WriteByte(']')
			return
		}
		b.Write(compact(v))
		return
	}
	b.WriteByte('{')
	first := true
	for _, p := range m {
		switch p.key {
		case "required", "additionalProperties", "$schema":
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(quote(p.key))
		b.WriteByte(':')
		switch p.key {
		case "properties", "$defs", "definitions", "patternProperties", "dependentSchemas":
			names := readObject(p.val)
			b.WriteByte('{')
			for i, n := range names {
				if i > 0 {
					b.WriteByte(',')
				}
				b.Write(quote(n.key))
				b.WriteByte(':')
				writeBilled(b, n.val)
			}
			b.WriteByte('}')
		case "items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
			"unevaluatedItems", "unevaluatedProperties", "anyOf", "allOf", "oneOf", "prefixItems":
			writeBilled(b, p.val)
		default:
			b.Write(compact(p.val))
		}
	}
	b.WriteByte('}')
}

// object is a JSON object's members in their order.
type object []member

type member struct {
	key string
	val json.RawMessage
}

// objects remembers what readObject read, within 8 MB: a run sends one
// schema with every request, and the fake reads it (with json.Decoder,
// slow under -race) to check it and to answer to it. It is never
// reassigned.
var objects = newMemo[object](8 << 20)

// readObject reads raw as an object; nil if it is none. The object is
// shared: the caller must not change it.
func readObject(raw json.RawMessage) object {
	return objects.get(string(raw), func() (object, int) {
		return decodeObject(raw), 2 * len(raw)
	})
}

func decodeObject(raw json.RawMessage) object {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	o := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		o = append(o, member{key: tok.(string), val: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil
	}
	return o
}

// readArray reads raw as an array; nil if it is none.
func readArray(raw json.RawMessage) []json.RawMessage {
	var a []json.RawMessage
	if json.Unmarshal(raw, &a) != nil {
		return nil
	}
	return a
}

// get is the value of key, or nil.
func (o object) get(key string) json.RawMessage {
	for _, m := range o {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

// str is key's value as a string.
func (o object) str(key string) (string, bool) {
	var s string
	return s, json.Unmarshal(o.get(key), &s) == nil
}

// num is key's value as a number.
func (o object) num(key string) (float64, bool) {
	var f float64
	return f, json.Unmarshal(o.get(key), &f) == nil
}

// quote is s as a JSON string.
func quote(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// compact is raw without its blanks.
func compact(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// formatSchema reads a json_schema format, chat's response_format (with
// chat) or the Responses API's text.format: the schema to answer to, nil
// for another format. A json_schema format without a name or a schema
// object is the API's 400, named after param.
func formatSchema(raw json.RawMessage, chat bool, param string) (json.RawMessage, *apiError) {
	f := readObject(raw)
	if f == nil {
		return nil, invalid(fmt.Sprintf("Invalid type for '%s': expected an object, but got something else instead.", param), param, "invalid_type")
	}
	typ, _ := f.str("type")
	switch typ {
	case "text", "json_object":
		return nil, nil
	case "json_schema":
	default:
		return nil, invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", typ), param+".type", "invalid_value")
	}
	fields := f
	if chat {
		param += ".json_schema"
		if fields = readObject(f.get("json_schema")); fields == nil {
			return nil, invalid(fmt.Sprintf("Missing required parameter: '%s'.", param), param, "missing_required_parameter")
		}
	}
	if name, ok := fields.str("name"); !ok || name == "" {
		return nil, invalid(fmt.Sprintf("Missing required parameter: '%s.name'.", param), param+".name", "missing_required_parameter")
	}
	sch := fields.get("schema")
	if readObject(sch) == nil {
		return nil, invalid(fmt.Sprintf("Invalid type for '%s.schema': expected an object, but got something else instead.", param), param+".schema", "invalid_type")
	}
	return sch, nil
}
