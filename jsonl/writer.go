package jsonl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// Error types, as result lines spell them.
const (
	ErrInvalidInput = "invalid_input" // the line could not be read as a request
	ErrBudget       = "budget"        // refused by a limit
	ErrAPI          = "api"           // a 4xx the API gave
	ErrRateLimit    = "rate_limit"    // 429s past the retries
	ErrServer       = "server"        // 5xx or broken answers past the retries
	ErrNetwork      = "network"       // transport failures and timeouts past the retries
	ErrInterrupted  = "interrupted"   // not sent because the run was interrupted
	// ErrInvalidOutput is a line held to a schema (--schema) whose answers
	// did not fit it in any of its tries; the result keeps the last one.
	ErrInvalidOutput = "invalid_output"
)

// Usage is what the API counted for a call.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
	// ReasoningTokens are the completion tokens a reasoning model spent
	// on hidden reasoning (already counted in CompletionTokens).
	ReasoningTokens int64 `json:"reasoning_tokens,omitempty"`
	// InputOnly marks the usage of an endpoint that counts input only
	// (embeddings): it is written as prompt_tokens and total_tokens, as
	// the API reports it.
	InputOnly bool `json:"-"`
}

// MarshalJSON writes u as the API reports it: embeddings usage has
// prompt_tokens and total_tokens only.
func (u Usage) MarshalJSON() ([]byte, error) {
	if u.InputOnly {
		return json.Marshal(struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		}{u.PromptTokens, u.TotalTokens})
	}
	type plain Usage // without this method
	return json.Marshal(plain(u))
}

// Error is why a line failed.
type Error struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

// Result is one output line, its fields in the contract's order.
//
// A field Result (or Usage, or Error) gains must reach each of its codecs,
// and TestResultCodecs fails until it does:
//   - the struct tags (and the MarshalJSON of Usage and Cost), which
//     encoding/json follows: the reference the others are held to, byte
//     for byte;
//   - AppendJSON, which writes result lines without reflection;
//   - AppendBinary and UnmarshalBinary, which keep --via batch's results
//     on disk until their turn to be written.
type Result struct {
	ID    string `json:"id"`
	Line  int    `json:"line"`
	Model string `json:"model,omitempty"`
	// Content is the answer as a JSON string, JSON null for a refusal,
	// nil (left out) for an error or an answer that is only tool calls.
	Content json.RawMessage `json:"content,omitempty"`
	// Parsed is the answer's JSON value when the line is held to a schema
	// (--schema) and the answer fits it, compact; with "n" > 1 an array
	// of every choice's value, in order (null for a choice that called a
	// tool). Left out otherwise: never set from an answer cut off at the
	// output cap.
	Parsed  json.RawMessage `json:"parsed,omitempty"`
	Refusal *string         `json:"refusal,omitempty"` // the refusal's message, when the model refused
	// Choices are every choice's content, in order, when a chat request
	// asked for more than one ("n" > 1); a refused choice is null.
	Choices      []*string       `json:"choices,omitempty"`
	FinishReason string          `json:"finish_reason,omitempty"`
	ToolCalls    json.RawMessage `json:"tool_calls,omitempty"`
	// Logprobs are the log probabilities asked for: the choice's
	// logprobs object, or with "n" > 1 an array of them, one a choice.
	Logprobs json.RawMessage `json:"logprobs,omitempty"`
	// Embedding is the vector of a single embeddings input (floats unless
	// the line asked for an encoding_format); Embeddings are the vectors
	// of a list of inputs, in input order.
	Embedding  json.RawMessage `json:"embedding,omitempty"`
	Embeddings json.RawMessage `json:"embeddings,omitempty"`
	Usage      *Usage          `json:"usage,omitempty"`
	CostUSD    Cost            `json:"cost_usd,omitzero"` // a number, or null when the price is unknown; omitted on errors
	// Cached says the answer came from the response cache (--cache), or
	// from an identical line's call in the same run, without a call of its
	// own: its cost_usd is 0 and its attempts 0.
	Cached    bool            `json:"cached,omitempty"`
	Attempts  int             `json:"attempts"`
	LatencyMS int64           `json:"latency_ms,omitempty"`
	BatchID   string          `json:"batch_id,omitempty"` // --via batch: the Batch API batch that answered it
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	Error     *Error          `json:"error,omitempty"`
}

// Cost is a result's cost_usd: an exact amount of dollars in picodollars
// (1e-12 USD, as budget.Cost counts them), or null when the line's price
// is unknown. The zero Cost is none: the result of a line that got no
// answer has no cost_usd. It is a number until the result is written
// (AppendJSON), by the formatter budget writes its costs with
// (jsonenc.AppendDollars).
type Cost struct {
	pico  int64
	state costState
}

type costState uint8

const (
	noCost      costState = iota // left out
	unknownCost                  // null
	knownCost                    // pico
)

// CostOf is a cost of pico picodollars.
func CostOf(pico int64) Cost { return Cost{pico: pico, state: knownCost} }

// UnknownCost is the cost of an answer whose price is unknown: null.
func UnknownCost() Cost { return Cost{state: unknownCost} }

// Picodollars is c in picodollars; ok is false when c is unknown or none.
func (c Cost) Picodollars() (pico int64, ok bool) { return c.pico, c.state == knownCost }

// AppendJSON appends c as a JSON number of dollars, or null; nothing for
// no cost.
func (c Cost) AppendJSON(b []byte) []byte {
	switch c.state {
	case knownCost:
		return jsonenc.AppendDollars(b, c.pico)
	case unknownCost:
		return append(b, "null"...)
	}
	return b
}

// MarshalJSON writes c as AppendJSON does; no cost is null (a Result
// leaves it out).
func (c Cost) MarshalJSON() ([]byte, error) {
	if c.state == noCost {
		return []byte("null"), nil
	}
	return c.AppendJSON(nil), nil
}

// UnmarshalJSON reads a JSON number of dollars, or null for an unknown
// cost.
func (c *Cost) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*c = UnknownCost()
		return nil
	}
	pico, err := jsonenc.ParseDollars(string(b), true)
	if err != nil {
		return err
	}
	*c = CostOf(pico)
	return nil
}

// String is s as a JSON string, for Result.Content: like the Writer, it
// leaves <, > and & as they are.
func String(s string) json.RawMessage {
	return jsonenc.AppendString(make([]byte, 0, len(s)+2), s, false)
}

// Estimate is a --dry-run output line.
type Estimate struct {
	ID              string `json:"id"`
	Line            int    `json:"line"`
	PromptTokens    int64  `json:"prompt_tokens"`
	MaxOutputTokens int64  `json:"max_output_tokens"`
	// SchemaTokens is the share of PromptTokens the line's json_schema
	// format (--schema's or its own) adds, as the API bills it; left out
	// when none.
	SchemaTokens int64           `json:"schema_tokens,omitempty"`
	EstCostUSD   json.RawMessage `json:"est_cost_usd,omitempty"`
	// Cached says the response cache holds the line's answer: the real
	// run would send nothing for it, and est_cost_usd is 0.
	Cached bool   `json:"cached,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// Writer writes one JSON value a line, buffered. Not safe for concurrent use.
type Writer struct {
	bw  *bufio.Writer
	enc *json.Encoder
	buf []byte // a result's line, by Result.AppendJSON
}

// NewWriter writes to w. Prompts often hold <, > and &, so they are not
// escaped.
func NewWriter(w io.Writer) *Writer {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &Writer{bw: bw, enc: enc}
}

// Write writes v and a newline.
func (w *Writer) Write(v any) error {
	if r, ok := v.(*Result); ok {
		b, err := r.AppendJSON(w.buf[:0])
		if err != nil {
			return err
		}
		w.buf = b
		_, err = w.bw.Write(b)
		return err
	}
	return w.enc.Encode(v)
}

// Flush writes what is buffered.
func (w *Writer) Flush() error { return w.bw.Flush() }

// Done is what an earlier output says was answered, for --resume: the
// ids with a successful result, and the input lines they answered. A nil
// *Done has nothing done.
//
// --resume finds lines by id, so that a line moved in the input is still
// found. Ids that an output gives to more than one input line (twins: a
// duplicated id, or an explicit "1" beside line 1's implicit one) are
// found by id and line number, so that the twin that failed is sent again.
type Done struct {
	byID  map[string]doneID
	twins map[string]map[int32]bool // ids with results for several lines: the lines answered
}

// doneID is what an output says of an id: the line of its first result,
// and of its first success, if any (0: the result named no line).
type doneID struct {
	first, ok int32
	answered  bool
}

// ReadDone reads a previous output (for --resume): the results that
// succeeded, with no error and an answer the API gave (usage, content,
// choices, a refusal, tool calls or an embedding), and the lines of every
// result. Lines that are not results, such as a last line torn by a
// crash, are skipped and counted. A --dry-run estimate (prompt_tokens and
// est_cost_usd, no answer) is an error naming its line: estimates are not
// results, and taking them for results would send nothing.
func ReadDone(r io.Reader) (d *Done, skipped int, err error) {
	d = &Done{byID: map[string]doneID{}, twins: map[string]map[int32]bool{}}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, rerr := br.ReadBytes('\n')
		if l := bytes.TrimSpace(line); len(l) > 0 {
			var res map[string]json.RawMessage
			var id string
			var at int32
			if json.Unmarshal(l, &res) != nil || json.Unmarshal(res["id"], &id) != nil {
				skipped++
			} else if isEstimate(res) {
				return nil, skipped, fmt.Errorf("line %d is a --dry-run estimate, not a result: resume from the output of a real run", n)
			} else {
				_ = json.Unmarshal(res["line"], &at) // 0 if none
				d.add(id, at, isSuccess(res))
			}
		}
		if rerr == io.EOF {
			return d, skipped, nil
		}
		if rerr != nil {
			return nil, skipped, rerr
		}
	}
}

// add notes a result of id for input line at.
func (d *Done) add(id string, at int32, ok bool) {
	e, seen := d.byID[id]
	if !seen {
		e.first = at
	} else if at != e.first && d.twins[id] == nil {
		d.twins[id] = map[int32]bool{}
		if e.answered {
			d.twins[id][e.ok] = true
		}
	}
	if ok {
		if !e.answered {
			e.answered, e.ok = true, at
		}
		if tw := d.twins[id]; tw != nil {
			tw[at] = true
		}
	}
	d.byID[id] = e
}

// Answered reports whether id has a successful result.
func (d *Done) Answered(id string) bool {
	return d != nil && d.byID[id].answered
}

// Skip reports whether input line n, of id, was answered, and so is not
// sent again; first says it is the first line of the input with id. A
// line is found by its id, wherever it moved, except a twin: it is found
// by its id and line number. A line the output gives no result for,
// after a line of the same id the output answered, is a twin too.
func (d *Done) Skip(id string, n int, first bool) bool {
	if d == nil {
		return false
	}
	e := d.byID[id]
	if !e.answered {
		return false
	}
	if tw := d.twins[id]; tw != nil {
		return tw[int32(n)]
	}
	return e.ok == int32(n) || e.ok == 0 || first
}

// hasAnswer reports whether a line has a field only an answer from the
// API has.
func hasAnswer(res map[string]json.RawMessage) bool {
	for _, k := range []string{"usage", "content", "choices", "refusal", "tool_calls", "embedding", "embeddings"} {
		if _, ok := res[k]; ok {
			return true
		}
	}
	return false
}

// isSuccess reports whether a result line is an answer without an error.
func isSuccess(res map[string]json.RawMessage) bool {
	if e, ok := res["error"]; ok && string(e) != "null" {
		return false
	}
	return hasAnswer(res)
}

// isEstimate reports whether a line is a --dry-run estimate.
func isEstimate(res map[string]json.RawMessage) bool {
	_, est := res["est_cost_usd"]
	_, prompt := res["prompt_tokens"]
	_, maxOut := res["max_output_tokens"]
	return (est || prompt && maxOut) && !hasAnswer(res)
}

// AppendJSON appends r as one output line, newline included: the bytes
// an Encoder with SetEscapeHTML(false) writes for it (TestResultCodecs holds
// it to that), without reflection. The content and cost are gptbatch's
// own encoding (String, Cost) and are written as they are; the JSON
// the API or the input gave (tool calls, logprobs, embeddings, metadata)
// is checked and compacted as encoding/json does, and an invalid one is
// an error.
func (r *Result) AppendJSON(b []byte) ([]byte, error) {
	var err error
	str := func(key, v string) {
		b = append(b, key...)
		b = jsonenc.AppendString(b, v, false)
	}
	num := func(key string, v int64) {
		b = append(b, key...)
		b = strconv.AppendInt(b, v, 10)
	}
	raw := func(key string, v json.RawMessage) {
		if len(v) == 0 || err != nil {
			return
		}
		b = append(b, key...)
		b, err = appendCompact(b, v)
	}
	str(`{"id":`, r.ID)
	num(`,"line":`, int64(r.Line))
	if r.Model != "" {
		str(`,"model":`, r.Model)
	}
	if len(r.Content) > 0 {
		b = append(b, `,"content":`...)
		b = append(b, r.Content...)
	}
	raw(`,"parsed":`, r.Parsed)
	if r.Refusal != nil {
		str(`,"refusal":`, *r.Refusal)
	}
	if len(r.Choices) > 0 {
		b = append(b, `,"choices":[`...)
		for i, c := range r.Choices {
			if i > 0 {
				b = append(b, ',')
			}
			if c == nil {
				b = append(b, "null"...)
			} else {
				b = jsonenc.AppendString(b, *c, false)
			}
		}
		b = append(b, ']')
	}
	if r.FinishReason != "" {
		str(`,"finish_reason":`, r.FinishReason)
	}
	raw(`,"tool_calls":`, r.ToolCalls)
	raw(`,"logprobs":`, r.Logprobs)
	raw(`,"embedding":`, r.Embedding)
	raw(`,"embeddings":`, r.Embeddings)
	if u := r.Usage; u != nil {
		num(`,"usage":{"prompt_tokens":`, u.PromptTokens)
		if !u.InputOnly {
			num(`,"completion_tokens":`, u.CompletionTokens)
		}
		num(`,"total_tokens":`, u.TotalTokens)
		if !u.InputOnly {
			num(`,"cached_tokens":`, u.CachedTokens)
			if u.ReasoningTokens != 0 {
				num(`,"reasoning_tokens":`, u.ReasoningTokens)
			}
		}
		b = append(b, '}')
	}
	if r.CostUSD.state != noCost {
		b = append(b, `,"cost_usd":`...)
		b = r.CostUSD.AppendJSON(b)
	}
	if r.Cached {
		b = append(b, `,"cached":true`...)
	}
	num(`,"attempts":`, int64(r.Attempts))
	if r.LatencyMS != 0 {
		num(`,"latency_ms":`, r.LatencyMS)
	}
	if r.BatchID != "" {
		str(`,"batch_id":`, r.BatchID)
	}
	raw(`,"metadata":`, r.Metadata)
	if e := r.Error; e != nil {
		str(`,"error":{"type":`, e.Type)
		str(`,"message":`, e.Message)
		num(`,"status":`, int64(e.Status))
		b = append(b, '}')
	}
	if err != nil {
		return nil, fmt.Errorf("json: error calling MarshalJSON for type json.RawMessage: %w", err)
	}
	return append(b, '}', '\n'), nil
}

// appendCompact appends JSON from outside gptbatch, checked and without
// its insignificant space, as encoding/json writes a RawMessage.
func appendCompact(b []byte, v json.RawMessage) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, v); err != nil {
		return b, err
	}
	return buf.Bytes(), nil
}
