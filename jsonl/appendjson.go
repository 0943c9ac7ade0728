package jsonl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// AppendJSON appends r as one output line, newline included: the bytes
// an Encoder with SetEscapeHTML(false) writes for it (TestResultCodecs holds
// it to that), without reflection. The content and cost are gptbatch's
// own encoding (String, budget.Cost) and are copied as they are; the JSON
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
	if len(r.CostUSD) > 0 {
		b = append(b, `,"cost_usd":`...)
		b = append(b, r.CostUSD...)
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
