// Package tokens counts tokens as the OpenAI API bills them: a chat
// request's prompt by the cookbook's formula on the exact tiktoken encoding
// of its model (o200k_base or cl100k_base), images by OpenAI's published
// formulas, and embeddings inputs with no overhead. Every count can also be
// an upper bound that needs no encoder (every token is at least a byte),
// for the moments before the encoder is built.
//
// The encoders are built once a process, from the BPE ranks compiled into
// the binary: no run ever downloads one.
package tokens

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"

	"github.com/gptbatch/gptbatch/internal/tokens/vocab"
)

// Encoding names tiktoken-go knows.
const (
	o200kBase  = "o200k_base"
	cl100kBase = "cl100k_base"
)

// encoders builds each encoding once per process: building one parses a
// 200k-entry vocabulary and takes a noticeable fraction of a second. The
// map itself is never written.
var encoders = map[string]func() (*tiktoken.Tiktoken, error){
	o200kBase:  sync.OnceValues(func() (*tiktoken.Tiktoken, error) { return buildEncoder(o200kBase) }),
	cl100kBase: sync.OnceValues(func() (*tiktoken.Tiktoken, error) { return buildEncoder(cl100kBase) }),
}

// built says which encoders are ready, without waiting for one.
var built = map[string]*atomic.Bool{o200kBase: new(atomic.Bool), cl100kBase: new(atomic.Bool)}

func buildEncoder(name string) (*tiktoken.Tiktoken, error) {
	vocab.Offline()
	enc, err := tiktoken.GetEncoding(name)
	if err != nil {
		return nil, fmt.Errorf("build %s encoder: %w", name, err)
	}
	built[name].Store(true)
	return enc, nil
}

// Counter counts tokens as the OpenAI API bills them: it is this
// package's API, given to the pipeline as its pipeline.Config.Tokens. The
// zero value is ready; every Counter of a process shares its encoders,
// built once. Safe for concurrent use.
type Counter struct{}

// Ready reports whether model's encoder is built, without waiting for it.
func (Counter) Ready(model string) bool { return built[encodingName(model)].Load() }

// Build builds model's encoder, once a process: a later call waits for
// the first, and returns its error.
func (Counter) Build(model string) error {
	_, err := encoders[encodingName(model)]()
	return err
}

// encodingName is the tokenizer the API uses for model. tiktoken-go maps
// neither the o-series nor gpt-5; they, gpt-4o, gpt-4.1 and any model we do
// not know use o200k_base.
func encodingName(model string) string {
	m := baseModel(model)
	switch {
	case strings.HasPrefix(m, "gpt-4o"), strings.HasPrefix(m, "chatgpt-4o"):
		return o200kBase
	case strings.HasPrefix(m, "gpt-4"), strings.HasPrefix(m, "gpt-3.5"), strings.HasPrefix(m, "gpt-35"):
		// gpt-4, gpt-4-turbo, gpt-3.5-turbo; but gpt-4.1 and gpt-4.5 are o200k.
		if strings.HasPrefix(m, "gpt-4.") {
			return o200kBase
		}
		return cl100kBase
	case strings.HasPrefix(m, "text-embedding-"):
		return cl100kBase
	}
	return o200kBase
}

// baseModel is the model a fine-tuned model (ft:gpt-3.5-turbo-0125:org::id)
// was tuned from, which bills as it does; model itself for any other.
func baseModel(model string) string {
	if i := strings.LastIndexByte(model, ':'); strings.HasPrefix(model, "ft:") && i > 0 {
		return strings.SplitN(strings.TrimPrefix(model, "ft:"), ":", 2)[0]
	}
	return model
}

// Chat counts the prompt of a chat request, its messages and function
// definitions (tools, or the deprecated functions), by the OpenAI
// cookbook's formulas: 3 tokens a message plus its role and content, 1
// more for a name, and 3 that prime the reply; function definitions as
// tools.go says; images as OpenAI's published formulas say (see
// images.go). Counted exactly with model's encoding (built if it is not
// yet), or, unless exact, by bytes: an upper bound that needs no encoder.
func (Counter) Chat(model string, messages, tools, functions json.RawMessage, exact bool) (int64, error) {
	if !exact {
		return countPrompt(model, messages, tools, functions, func(s string) int64 { return int64(len(s)) })
	}
	enc, err := encoders[encodingName(model)]()
	if err != nil {
		return 0, err
	}
	return countPrompt(model, messages, tools, functions, func(s string) int64 { return countTokens(enc, s, tokenChunk) })
}

// Tools counts what function definitions (tools, or the deprecated
// functions) add to a chat request's prompt, as Chat counts them: Chat of
// a request is Chat of its messages alone plus Tools of its definitions,
// and Tools of both fields is Tools of each plus Tools of the other, so
// that a caller may count a field once for the many requests that carry
// it. Counted exactly or, unless exact, by bytes, as Chat is.
func (Counter) Tools(model string, tools, functions json.RawMessage, exact bool) (int64, error) {
	if !isSet(tools) && !isSet(functions) {
		return 0, nil
	}
	if !exact {
		return toolTokens(model, tools, functions, func(s string) int64 { return int64(len(s)) }), nil
	}
	enc, err := encoders[encodingName(model)]()
	if err != nil {
		return 0, err
	}
	return toolTokens(model, tools, functions, func(s string) int64 { return countTokens(enc, s, tokenChunk) }), nil
}

// message is the part of a chat message that costs tokens.
type message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
	// The call an assistant message made to one of the deprecated
	// functions.
	FunctionCall json.RawMessage `json:"function_call"`
}

// contentPart is one element of array content: chat completions' text
// and image_url parts, the Responses API's input_text, output_text and
// input_image.
type contentPart struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	ImageURL json.RawMessage `json:"image_url"` // {"url", "detail"} in chat; a string in responses
	Detail   string          `json:"detail"`    // responses
}

// countPrompt applies the chat formula with count as the tokenizer.
func countPrompt(model string, messages, tools, functions json.RawMessage, count func(string) int64) (int64, error) {
	var msgs []message
	if err := json.Unmarshal(messages, &msgs); err != nil {
		return 0, fmt.Errorf("messages: %w", err)
	}
	n := int64(3)
	for i, m := range msgs {
		n += 3 + count(m.Role)
		if m.Name != "" {
			n += 1 + count(m.Name)
		}
		if m.ToolCallID != "" {
			n += count(m.ToolCallID)
		}
		if isSet(m.ToolCalls) {
			n += count(string(m.ToolCalls))
		}
		if isSet(m.FunctionCall) {
			n += count(string(m.FunctionCall))
		}
		c, err := contentTokens(model, m.Content, count)
		if err != nil {
			return 0, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		n += c
	}
	if isSet(tools) || isSet(functions) {
		n += toolTokens(model, tools, functions, count)
	}
	return n, nil
}

func contentTokens(model string, content json.RawMessage, count func(string) int64) (int64, error) {
	if len(content) == 0 || string(content) == "null" {
		return 0, nil
	}
	switch content[0] {
	case '"':
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			return 0, err
		}
		return count(s), nil
	case '[':
		var parts []contentPart
		if err := json.Unmarshal(content, &parts); err != nil {
			return 0, err
		}
		var n int64
		for _, p := range parts {
			switch p.Type {
			case "text", "input_text", "output_text":
				n += count(p.Text)
			case "image_url", "input_image":
				n += p.imageTokens(model)
			}
		}
		return n, nil
	}
	return 0, fmt.Errorf("must be a string or an array of parts")
}

// Inputs counts embeddings inputs as the API does, with no overhead: each
// text with model's encoding (built if it is not yet) or, unless exact,
// by its bytes, an upper bound; each token array by its length. The
// counts are in that order: the texts', then the arrays'.
func (Counter) Inputs(model string, texts []string, arrays [][]int64, exact bool) ([]int64, error) {
	counts := make([]int64, 0, len(texts)+len(arrays))
	count := func(s string) int64 { return int64(len(s)) }
	if exact && len(texts) > 0 {
		enc, err := encoders[encodingName(model)]()
		if err != nil {
			return nil, err
		}
		count = func(s string) int64 { return countTokens(enc, s, tokenChunk) }
	}
	for _, t := range texts {
		counts = append(counts, count(t))
	}
	for _, t := range arrays {
		counts = append(counts, int64(len(t)))
	}
	return counts, nil
}

// tokenChunk is the size of the pieces countTokens hands the encoder: it
// holds about 20 bytes per byte of its text (the text as runes, twice,
// and a match per pre-token), so counting a 20 MB message whole would
// hold hundreds of megabytes.
const tokenChunk = 64 << 10

// countTokens is len(enc.EncodeOrdinary(s)) for the o200k_base and
// cl100k_base encodings, counted in chunks of about size bytes so that
// memory stays a small multiple of the chunk however long s is. It cuts
// only where the encodings' pre-tokenizer regex always ends a pre-token
// (see tokenBoundary), and BPE never merges across pre-tokens, so the
// count is exact. Text with no such place (one long run of CJK letters,
// say) is counted whole.
func countTokens(enc *tiktoken.Tiktoken, s string, size int) int64 {
	var n int64
	for len(s) > 0 {
		i := nextBoundary(s, size)
		n += int64(len(enc.EncodeOrdinary(s[:i])))
		s = s[i:]
	}
	return n
}

// nextBoundary is the first token boundary at or after size bytes into s,
// or len(s).
func nextBoundary(s string, size int) int {
	if len(s) <= size {
		return len(s)
	}
	i := size
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	prev, _ := utf8.DecodeLastRuneInString(s[:i])
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if tokenBoundary(prev, r) {
			return i
		}
		prev = r
		i += w
	}
	return len(s)
}

// tokenBoundary reports whether the o200k_base and cl100k_base
// pre-tokenizers always end a pre-token between prev and r, whatever
// comes before or after, so that the text on either side is
// pre-tokenized as it is within the whole. A letter belongs only to a
// word pre-token, which goes on only with letters, combining marks
// (o200k) or an apostrophe ('s, 're, ...); a digit belongs only to a
// number pre-token (\p{N}{1,3}), which goes on only with digits. Neither
// ends in whitespace, so the (?!\S) lookahead, the only place the
// regexes look past a pre-token, never decides one at a boundary.
func tokenBoundary(prev, r rune) bool {
	if unicode.IsLetter(prev) {
		return !unicode.IsLetter(r) && !unicode.IsMark(r) && r != '\''
	}
	return unicode.IsNumber(prev) && !unicode.IsNumber(r)
}
