package openaitest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/pkoukk/tiktoken-go"

	"github.com/gptbatch/gptbatch/internal/tokens/vocab"
)

// The fake counts tokens on its own, not with package pipeline's counter,
// so that a test comparing the two compares two implementations.

const (
	o200kBase  = "o200k_base"
	cl100kBase = "cl100k_base"
)

// Each encoder is built once per process: building one parses a vocabulary
// of up to 200k entries. Neither variable is ever reassigned.
var (
	o200kEncoder  = sync.OnceValues(func() (*encoder, error) { return buildEncoder(o200kBase) })
	cl100kEncoder = sync.OnceValues(func() (*encoder, error) { return buildEncoder(cl100kBase) })
)

func buildEncoder(name string) (*encoder, error) {
	vocab.Offline()
	tk, err := tiktoken.GetEncoding(name)
	if err != nil {
		return nil, fmt.Errorf("openaitest: build %s encoder: %w", name, err)
	}
	return newEncoder(tk, memoBytes), nil
}

// memoBytes bounds each of an encoder's memories, roughly, in bytes.
const memoBytes = 32 << 20

// encoder is a tiktoken encoding that remembers the tokens of the texts it
// has encoded, and the tokens schemas are billed. The tests send the same
// prompts and schemas again and again, each request has its text counted
// more than once (charged, answered, billed), and tiktoken's pre-tokenizer
// (a regexp2 expression, slower still under -race) is most of what the
// fake costs. It is safe for concurrent use.
type encoder struct {
	tk     *tiktoken.Tiktoken
	texts  *memo[[]int] // tokens, by text
	billed *memo[int]   // formatTokens's and toolTokens's counts, by what they count
}

func newEncoder(tk *tiktoken.Tiktoken, limit int) *encoder {
	return &encoder{tk: tk, texts: newMemo[[]int](limit), billed: newMemo[int](limit)}
}

// tokens returns the tokens of s, as tiktoken's EncodeOrdinary does. The
// slice is shared: the caller must not change it.
func (e *encoder) tokens(s string) []int {
	return e.texts.get(s, func() ([]int, int) {
		toks := e.tk.EncodeOrdinary(s)
		return toks, len(s) + 8*len(toks)
	})
}

// schemaTokens is formatTokens's count of schema (or toolTokens's of
// its key), made by count the first time.
func (e *encoder) schemaTokens(schema string, count func() int) int {
	return e.billed.get(schema, func() (int, int) { return count(), len(schema) })
}

// count is the number of tokens of s.
func (e *encoder) count(s string) int {
	return len(e.tokens(s))
}

// decode is the text of toks.
func (e *encoder) decode(toks []int) string {
	return e.tk.Decode(toks)
}

// encoderFor returns the tokenizer the real API uses for model:
// cl100k_base for gpt-4, gpt-4-turbo and gpt-3.5-turbo (and their dated
// snapshots), o200k_base for everything else, unknown models included.
func encoderFor(model string) (*encoder, error) {
	if encodingFor(model) == cl100kBase {
		return cl100kEncoder()
	}
	return o200kEncoder()
}

func encodingFor(model string) string {
	// A fine-tuned model (ft:gpt-3.5-turbo-0125:org::id) bills as the
	// model it was tuned from.
	if rest, ok := strings.CutPrefix(model, "ft:"); ok {
		model, _, _ = strings.Cut(rest, ":")
	}
	switch {
	case strings.HasPrefix(model, "gpt-4o"), strings.HasPrefix(model, "gpt-4."):
		return o200kBase
	case model == "gpt-4", strings.HasPrefix(model, "gpt-4-"), strings.HasPrefix(model, "gpt-3.5"):
		return cl100kBase
	}
	return o200kBase
}

// functionCall is a call an assistant message made.
type functionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// chatMessage is the part of a request message the fake reads.
type chatMessage struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	Name      string          `json:"name"`
	ToolCalls []struct {
		Function functionCall `json:"function"`
	} `json:"tool_calls"`
	FunctionCall *functionCall `json:"function_call"` // the deprecated functions' call

	// The content's text, once kept (see keepText): the fake reads it
	// again and again.
	kept       bool
	keptText   string
	keptTextOK bool
}

// keepText reads the message's text once, for text to return.
func (m *chatMessage) keepText() {
	m.keptText, m.keptTextOK = m.readText()
	m.kept = true
}

// text is the text of a message's content: a string, or the text parts of
// an array of parts joined together. ok is false for content of any other
// shape.
func (m chatMessage) text() (s string, ok bool) {
	if m.kept {
		return m.keptText, m.keptTextOK
	}
	return m.readText()
}

func (m chatMessage) readText() (s string, ok bool) {
	c := m.Content
	if len(c) == 0 || string(c) == "null" {
		return "", true
	}
	if err := json.Unmarshal(c, &s); err == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(c, &parts); err != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), true
}

// countPrompt counts messages by the OpenAI cookbook's formula: 3 tokens a
// message, plus its role and content, plus its name and 1 more if it has
// one, plus 3 that prime the reply. Tool calls (and the deprecated
// function calls) in assistant messages count as their function names and
// arguments.
func countPrompt(enc *encoder, msgs []chatMessage) int {
	count := enc.count
	n := 3
	for _, m := range msgs {
		text, _ := m.text()
		n += 3 + count(m.Role) + count(text)
		if m.Name != "" {
			n += count(m.Name) + 1
		}
		for _, tc := range m.ToolCalls {
			n += count(tc.Function.Name) + count(tc.Function.Arguments)
		}
		if fc := m.FunctionCall; fc != nil {
			n += count(fc.Name) + count(fc.Arguments)
		}
	}
	return n
}

// truncate cuts s to at most limit tokens (no limit if limit <= 0) and
// reports the tokens kept and whether it cut anything.
func truncate(enc *encoder, s string, limit int) (out string, tokens int, cut bool) {
	toks := enc.tokens(s)
	if limit <= 0 || len(toks) <= limit {
		return s, len(toks), false
	}
	// A cut can fall inside a multi-byte character; drop its remains.
	return strings.ToValidUTF8(enc.decode(toks[:limit]), ""), limit, true
}

// memo remembers values by a text they are made from, up to a bound of
// bytes: past it, it forgets them all at once. It is safe for concurrent
// use.
type memo[V any] struct {
	limit int

	mu sync.Mutex
	// Guarded by mu.
	m    map[string]V
	held int // bytes of m, roughly
}

func newMemo[V any](limit int) *memo[V] {
	return &memo[V]{limit: limit, m: map[string]V{}}
}

// get returns the value of key, made by build the first time (outside
// the lock: two callers may build it at once), which also returns the
// bytes the value and key hold.
func (m *memo[V]) get(key string, build func() (v V, size int)) V {
	m.mu.Lock()
	v, ok := m.m[key]
	m.mu.Unlock()
	if ok {
		return v
	}
	v, size := build()
	size += 64 // a map entry's own
	if size > m.limit {
		return v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held+size > m.limit {
		clear(m.m)
		m.held = 0
	}
	m.m[key] = v
	m.held += size
	return v
}
