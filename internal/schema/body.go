package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
	"github.com/gptbatch/gptbatch/jsonl"
)

// ErrNoSchemaField is the error for an endpoint that takes no schema
// (embeddings).
var ErrNoSchemaField = errors.New("the endpoint takes no schema")

// Resolve is what a line sends and what its answer is held to, given the
// --schema flag (nil when not given), a cache for the lines' own schemas,
// the line's endpoint (jsonl.EndpointChat or jsonl.EndpointResponses) and
// its request body. The rules, in one place:
//
//   - without --schema, the body is sent as it is and nothing is checked;
//   - a line whose body has its own json_schema format (chat's
//     response_format, responses' text.format) is sent as it is and held
//     to its own schema: the line's own wins;
//   - a line whose body has another format (text, json_object) is sent as
//     it is and not checked: it asked for something else;
//   - any other line gets the flag's schema added (Attach) and is held to
//     it.
//
// held is nil when the answer is not checked. An error is the line's
// (invalid_input): its own schema does not compile, or its body is not a
// JSON object, or the endpoint takes no schema.
func Resolve(flag *Schema, c *Cache, endpoint string, body []byte) (out []byte, held *Schema, err error) {
	if flag == nil {
		return body, nil, nil
	}
	own, hasFormat, err := c.FromBody(endpoint, body)
	switch {
	case err != nil:
		return nil, nil, err
	case own != nil:
		return body, own, nil
	case hasFormat:
		return body, nil, nil
	}
	out, err = flag.Attach(endpoint, body)
	if err != nil {
		return nil, nil, err
	}
	return out, flag, nil
}

// Attach adds the schema to a request body that names no format of its
// own: chat's response_format, or the Responses API's text.format (beside
// any other field of "text", such as verbosity). A body that has one is
// returned as it is. Every other byte of the body is kept as it was.
func (s *Schema) Attach(endpoint string, body []byte) ([]byte, error) {
	top, err := objectMembers(body)
	if err != nil {
		return nil, err
	}
	switch endpoint {
	case jsonl.EndpointChat:
		if top.get("response_format") != nil {
			return body, nil
		}
		return top.with("response_format", s.ChatFormat()).encode(), nil
	case jsonl.EndpointResponses:
		text := top.get("text")
		if text == nil || bytes.Equal(text, []byte("null")) {
			return top.with("text", append(append([]byte(`{"format":`), s.ResponsesFormat()...), '}')).encode(), nil
		}
		tm, err := objectMembers(text)
		if err != nil {
			return nil, fmt.Errorf("text: %w", err)
		}
		if tm.get("format") != nil {
			return body, nil
		}
		return top.with("text", tm.with("format", s.ResponsesFormat()).encode()).encode(), nil
	}
	return nil, fmt.Errorf("%s: %w", endpoint, ErrNoSchemaField)
}

// Cache compiles the schemas lines carry in their own bodies, and counts
// their tokens (Cache.FormatTokens) and those of the function definitions
// they carry (Cache.Tokens), each once however many lines carry it: 10,000
// lines with the same inline schema, or the same tools, compile it once
// and count it once a model. It keeps the last cacheSize formats and
// fields used last, by the SHA-256 of their exact bytes, so a batch of
// many different ones holds a bounded number, whatever their size.
// Its zero value is ready; it is safe for concurrent use.
type Cache struct {
	mu      sync.Mutex
	entries map[entryKey]*cacheEntry
	order   []entryKey // keys, oldest first, for eviction
}

// cacheSize is how many different line schemas and fields a Cache holds:
// a batch has one or a few; past this, the oldest is compiled or counted
// again when it returns.
const cacheSize = 64

// entryKey names an entry: the field of a line's body it is of (format
// for a json_schema format's fields), and the SHA-256 of its exact bytes,
// so that two different ones never share an entry.
type entryKey struct {
	field string
	sum   [sha256.Size]byte
}

// formatKey is entryKey.field of a json_schema format's fields.
const formatKey = "format"

// cacheEntry is one format's compiled schema, built once, and its token
// counts, or one field's counts, one a model (a run has a few).
type cacheEntry struct {
	once   sync.Once
	s      *Schema
	err    error
	counts sync.Map // a count's key (see Cache.FormatTokens) → int, or int64 for Cache.Tokens
}

// FromBody reads the format a line's own body names: chat's
// response_format, or the Responses API's text.format. own is its schema,
// compiled (through the cache), when the format is a json_schema; hasFormat
// reports whether the body names any format, so (nil, true, nil) is a line
// that asked for text or json_object. The schema keeps the body's name and
// strict as the body sends them: the body is not changed. A nil Cache
// compiles every time.
func (c *Cache) FromBody(endpoint string, body []byte) (own *Schema, hasFormat bool, err error) {
	fields, where, hasFormat, err := ownFormat(endpoint, body)
	if fields == nil || err != nil {
		return nil, hasFormat, err
	}
	s, err := c.compile(fields)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", where, err)
	}
	return s, true, nil
}

// FormatTokens is the prompt tokens the json_schema format a line's own
// body names (see FromBody) adds to its request, as the API bills them:
// its schema counted as PromptTokens counts one, with count the model's
// tokenizer. It is 0 for a body that names no format, or another one, or
// one the API would refuse (not JSON, no schema). The schema is not
// compiled: a line sent as it is, held to nothing, is the API's to judge.
func FormatTokens(endpoint string, body []byte, count func(string) int) int {
	return (*Cache)(nil).FormatTokens(endpoint, body, nil, count)
}

// FormatTokens is FormatTokens through the cache: each format's count is
// kept beside its compiled schema, one for each key, so 10,000 lines with
// the same inline schema count it once for a model. key names count: two
// counts under one key must be the same function (the model, and whether
// it counts exactly or by the byte bound), so that one model's count is
// never served to another. A nil Cache counts every time.
func (c *Cache) FormatTokens(endpoint string, body []byte, key any, count func(string) int) int {
	fields, _, _, err := ownFormat(endpoint, body)
	if fields == nil || err != nil {
		return 0
	}
	if c == nil {
		return formatTokens(fields, count)
	}
	e := c.entry(formatKey, fields)
	if n, ok := e.counts.Load(key); ok {
		return n.(int)
	}
	n := formatTokens(fields, count)
	e.counts.Store(key, n)
	return n
}

// Tokens is count's count of raw, the exact bytes of a line's field
// (chat's tools or functions, the Responses API's tools), kept as
// FormatTokens keeps a format's: one for each key, which names count as
// FormatTokens's does, so that lines carrying the same field count it once
// for a model. Bytes of different fields are different entries: the same
// list as tools and as functions is counted once each. An error of count's
// is returned and nothing kept. A nil Cache counts every time.
func (c *Cache) Tokens(field string, raw []byte, key any, count func() (int64, error)) (int64, error) {
	if c == nil {
		return count()
	}
	e := c.entry(field, raw)
	if n, ok := e.counts.Load(key); ok {
		return n.(int64), nil
	}
	n, err := count()
	if err != nil {
		return 0, err
	}
	e.counts.Store(key, n)
	return n, nil
}

// formatTokens is FormatTokens of a json_schema format's fields.
func formatTokens(fields []byte, count func(string) int) int {
	f, err := unwrapFields(fields)
	if err != nil {
		return 0
	}
	var doc bytes.Buffer
	if err := json.Compact(&doc, f.schema); err != nil {
		return 0
	}
	return promptTokens(doc.Bytes(), count)
}

// FormatField is the top-level field of a request body of endpoint in
// which a line names its own output format: chat's response_format, the
// Responses API's text (its format); "" for an endpoint that takes none.
// A body without it names no format.
func FormatField(endpoint string) string {
	switch endpoint {
	case jsonl.EndpointChat:
		return "response_format"
	case jsonl.EndpointResponses:
		return "text"
	}
	return ""
}

// ownFormat finds the format a line's own body names: fields are its
// json_schema format's fields (chat's json_schema object, or the Responses
// API's text.format itself), nil when it names none or another format;
// where is the body's field that names it, for errors; hasFormat reports
// whether it names any.
func ownFormat(endpoint string, body []byte) (fields json.RawMessage, where string, hasFormat bool, err error) {
	top, err := objectMembers(body)
	if err != nil {
		return nil, "", false, err
	}
	var f json.RawMessage
	switch endpoint {
	case jsonl.EndpointChat:
		f, where = top.get(FormatField(endpoint)), FormatField(endpoint)
	case jsonl.EndpointResponses:
		text := top.get(FormatField(endpoint))
		if text == nil || bytes.Equal(text, []byte("null")) {
			return nil, "", false, nil
		}
		tm, err := objectMembers(text)
		if err != nil {
			return nil, "", false, fmt.Errorf("text: %w", err)
		}
		f, where = tm.get("format"), "text.format"
	default:
		return nil, "", false, nil
	}
	if f == nil || bytes.Equal(f, []byte("null")) {
		return nil, "", false, nil
	}
	var head struct {
		Type       string          `json:"type"`
		JSONSchema json.RawMessage `json:"json_schema"`
	}
	if err := json.Unmarshal(f, &head); err != nil {
		return nil, where, true, fmt.Errorf("%s: %w", where, err)
	}
	if head.Type != "json_schema" {
		return nil, where, true, nil
	}
	fields = f
	if endpoint == jsonl.EndpointChat {
		fields = head.JSONSchema
		if len(fields) == 0 {
			return nil, where, true, fmt.Errorf("%s: a json_schema format without json_schema", where)
		}
	}
	return fields, where, true, nil
}

// compile compiles a json_schema format's fields, once per distinct bytes.
func (c *Cache) compile(fields []byte) (*Schema, error) {
	if c == nil {
		return compileFields(fields)
	}
	e := c.entry(formatKey, fields)
	// Compiling outside the lock lets other schemas compile meanwhile; the
	// Once makes lines with this one wait for the first to compile it.
	e.once.Do(func() { e.s, e.err = compileFields(fields) })
	return e.s, e.err
}

// entry is the cache's entry for raw, the bytes of field (formatKey for a
// format's fields), made (and the oldest dropped past cacheSize) if it has
// none.
func (c *Cache) entry(field string, raw []byte) *cacheEntry {
	key := entryKey{field, sha256.Sum256(raw)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		// Used again: the last to be dropped. A batch's one schema or
		// tool set, on every line, outlives any number of others.
		if i := slices.Index(c.order, key); i >= 0 && i < len(c.order)-1 {
			copy(c.order[i:], c.order[i+1:])
			c.order[len(c.order)-1] = key
		}
		return e
	}
	if c.entries == nil {
		c.entries = map[entryKey]*cacheEntry{}
	}
	if len(c.order) >= cacheSize {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	e := &cacheEntry{}
	c.entries[key] = e
	c.order = append(c.order, key)
	return e
}

// compileFields compiles a json_schema format's fields as the line sends
// them. The body goes as it is, so the Schema's name and strictness are the
// line's own: a schema that breaks strict mode's rules with strict true is
// the API's to refuse.
func compileFields(fields []byte) (*Schema, error) {
	f, err := unwrapFields(fields)
	if err != nil {
		return nil, err
	}
	s, err := compile(sanitizeName(f.name), f.description, f.schema, true)
	if err != nil {
		return nil, err
	}
	s.name = f.name
	if f.strict != nil && *f.strict {
		s.strict, s.reason = true, ""
	} else {
		s.strict, s.reason = false, "the line's own format is not strict"
	}
	return s, nil
}

// members is a JSON object's members in their order, each value's bytes as
// they were, so a body can be changed in one member and written back with
// every other byte kept.
type members []member

type member struct {
	key string
	val json.RawMessage
}

// objectMembers reads b as one JSON object.
func objectMembers(b []byte) (members, error) {
	m, err := readMembers(b)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// readMembers reads b, one JSON value: its members when it is an object
// (non-nil, empty for {}), nil when it is another value.
func readMembers(b []byte) (members, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil
	}
	m := members{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		m = append(m, member{key: tok.(string), val: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not JSON: more after the object")
	}
	return m, nil
}

// get is the value of key, the last one where a key repeats (as a JSON
// decoder reads it), or nil.
func (m members) get(key string) json.RawMessage {
	var v json.RawMessage
	for _, x := range m {
		if x.key == key {
			v = x.val
		}
	}
	return v
}

// with is m with key set to val: in place where it is, else last.
func (m members) with(key string, val json.RawMessage) members {
	out := make(members, 0, len(m)+1)
	found := false
	for _, x := range m {
		if x.key == key {
			if found {
				continue
			}
			x.val, found = val, true
		}
		out = append(out, x)
	}
	if !found {
		out = append(out, member{key: key, val: val})
	}
	return out
}

// encode writes the object back: its keys as JSON strings, its values'
// bytes as they are.
func (m members) encode() []byte {
	n := 2
	for _, x := range m {
		n += len(x.key) + len(x.val) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, x := range m {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.AppendString(b, x.key, false)
		b = append(b, ':')
		b = append(b, x.val...)
	}
	return append(b, '}')
}
