package jsonl

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// Results are read by jq and by diff against earlier runs: AppendJSON
// must write what the Encoder wrote before it.
func TestResultJSON(t *testing.T) {
	s := func(v string) *string { return &v }
	full := Result{
		ID: `q "1" <&>`, Line: 7, Model: "gpt-4o-mini", Content: String("hi\n<there> & ✓"),
		Refusal: s("no"), Choices: []*string{s("a"), nil, s("c\u2028")}, FinishReason: "stop",
		ToolCalls:  json.RawMessage(`[ {"id": "call_1", "function": {"arguments": "{\"a\": 1}"}} ]`),
		Logprobs:   json.RawMessage("{\"content\":\n [ ]}"),
		Embedding:  json.RawMessage(`[0.1, -2e-3]`),
		Embeddings: json.RawMessage(`[[1],[2]]`),
		Usage:      &Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CachedTokens: 4, ReasoningTokens: 8},
		CostUSD:    json.RawMessage(`0.0000123`), Attempts: 2, LatencyMS: 345, BatchID: "batch_1",
		Metadata: json.RawMessage(`{ "k": "v <b>", "n": [1, 2] }`),
		Error:    &Error{Type: ErrAPI, Message: "bad <thing> & \"more\"", Status: 400},
	}
	// A field Result gains must be set here, so that the comparison below
	// sees whether AppendJSON writes it.
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("Result.%s is not set in this test's full result: set it, and teach AppendJSON", v.Type().Field(i).Name)
		}
	}
	for _, r := range []Result{
		full,
		{ID: "", Line: 0},
		{ID: "e", Line: 3, Model: "text-embedding-3-small", Embedding: json.RawMessage(`[1,2]`), Usage: &Usage{PromptTokens: 5, TotalTokens: 5, InputOnly: true}, CostUSD: json.RawMessage("null"), Attempts: 1},
		{ID: "r", Line: 4, Content: json.RawMessage("null"), Refusal: s(""), Usage: &Usage{}, Attempts: 1},
		{ID: "x", Line: 5, Error: &Error{Type: ErrNetwork, Message: "bad \xff byte"}, Attempts: 3},
	} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&r); err != nil {
			t.Fatal(err)
		}
		got, err := r.AppendJSON([]byte("before\n"))
		if err != nil {
			t.Fatalf("AppendJSON(%+v): %v", r, err)
		}
		if !bytes.Equal(got, append([]byte("before\n"), want.Bytes()...)) {
			t.Errorf("AppendJSON wrote\n%s\nencoding/json writes\n%s", got, want.Bytes())
		}
	}
	// JSON from outside that is not JSON is an error, as it was.
	bad := Result{ID: "m", Metadata: json.RawMessage(`{"a":`)}
	if _, err := bad.AppendJSON(nil); err == nil {
		t.Error("AppendJSON of invalid metadata: no error")
	}
}

func BenchmarkResultJSON(b *testing.B) {
	r := Result{ID: "q-123456", Line: 123456, Model: "gpt-4o-mini-2024-07-18", Content: String("The number 123456 is even, and its digits add up to 21."), FinishReason: "stop",
		Usage: &Usage{PromptTokens: 20, CompletionTokens: 15, TotalTokens: 35}, CostUSD: json.RawMessage("0.0000066"), Attempts: 1, BatchID: "batch_0123456789abcdef", Metadata: json.RawMessage(`{"split":"test"}`)}
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = r.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		for b.Loop() {
			buf.Reset()
			_ = enc.Encode(&r)
		}
	})
}
