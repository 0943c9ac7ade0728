package openaitest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// The fake counts tokens on its own, not with package pipeline's counter,
// so that a test comparing the two compares two implementations.

const (
	o200kBase  = "o200k_base"
	cl100kBase = "cl100k_base"
)

// useOfflineLoader points tiktoken-go at the BPE files compiled into the
// binary; the fake never downloads one.
var useOfflineLoader = sync.OnceFunc(func() {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
})

// Each encoder is built once per process: building one parses a vocabulary
// of up to 200k entries. Neither variable is ever reassigned.
var (
	o200kEncoder  = sync.OnceValues(func() (*encoder, error) { return buildEncoder(o200kBase) })
	cl100kEncoder = sync.OnceValues(func() (*encoder, error) { return buildEncoder(cl100kBase) })
)

func buildEncoder(name string) (*encoder, error) {
	useOfflineLoader()
	tk, err := tiktoken.GetEncoding(name)
	if err != nil {
		return nil, fmt.Errorf("openaitest: build %s encoder: %w", name, err)
	}
	return newEncoder(tk, memoBytes), nil
}

// memoBytes bounds what an encoder remembers: the texts and their tokens,
// roughly, in bytes.
const memoBytes = 32 << 20

// encoder is a tiktoken encoding that remembers the tokens of the texts it
// has encoded, and the tokens schemas are billed. The tests send the same
// prompts and schemas again and again, each request has its text counted
// more than once (charged, answered, billed), and tiktoken's pre-tokenizer
// (a regexp2 expression, slower still under -race) is most of what the
// fake costs. It is safe for concurrent use.
type encoder struct {
	tk    *tiktoken.Tiktoken
	limit int // memoBytes, but in tests

	mu sync.Mutex
	// Guarded by mu.
	memo   map[string][]int // tokens, by text
	billed map[string]int   // formatTokens's count, by schema
	held   int              // bytes of both, roughly: all forgotten at once past limit
}

func newEncoder(tk *tiktoken.Tiktoken, limit int) *encoder {
	return &encoder{tk: tk, limit: limit, memo: map[string][]int{}, billed: map[string]int{}}
}

// tokens returns the tokens of s, as tiktoken's EncodeOrdinary does. The
// slice is shared: the caller must not change it.
func (e *encoder) tokens(s string) []int {
	e.mu.Lock()
	toks, ok := e.memo[s]
	e.mu.Unlock()
	if ok {
		return toks
	}
	toks = e.tk.EncodeOrdinary(s)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.room(len(s) + 8*len(toks)) {
		e.memo[s] = toks
	}
	return toks
}

// schemaTokens is formatTokens's count of schema, made by count the first
// time.
func (e *encoder) schemaTokens(schema string, count func() int) int {
	e.mu.Lock()
	n, ok := e.billed[schema]
	e.mu.Unlock()
	if ok {
		return n
	}
	n = count()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.room(len(schema)) {
		e.billed[schema] = n
	}
	return n
}

// room makes room for an entry of size bytes, forgetting everything if
// the memory is full, and reports whether it fits at all. It requires
// e.mu held.
func (e *encoder) room(size int) bool {
	size += 64 // a map entry's own
	if size > e.limit {
		return false
	}
	if e.held+size > e.limit {
		clear(e.memo)
		clear(e.billed)
		e.held = 0
	}
	e.held += size
	return true
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
	switch {
	case strings.HasPrefix(model, "gpt-4o"), strings.HasPrefix(model, "gpt-4."):
		return o200kBase
	case model == "gpt-4", strings.HasPrefix(model, "gpt-4-"), strings.HasPrefix(model, "gpt-3.5"):
		return cl100kBase
	}
	return o200kBase
}

// chatMessage is the part of a request message the fake reads.
type chatMessage struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	Name      string          `json:"name"`
	ToolCalls []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// text is the text of a message's content: a string, or the text parts of
// an array of parts joined together. ok is false for content of any other
// shape.
func (m chatMessage) text() (s string, ok bool) {
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
// one, plus 3 that prime the reply. Tool calls in assistant messages count
// as their function names and arguments.
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
