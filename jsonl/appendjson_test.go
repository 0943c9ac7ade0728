package jsonl

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// fullResult is a result with every field set, Usage's and Error's
// included: TestResultCodecs makes sure of it, so that a field Result
// gains must be set here, and each codec is then held to carry it.
func fullResult() Result {
	s := func(v string) *string { return &v }
	return Result{
		ID: `q "1" <&>`, Line: 7, Model: "gpt-4o-mini", Content: String("hi\n<there> & ✓"),
		Parsed:  json.RawMessage(`{"name": "Ada", "tags": [ "a <b>" ]}`),
		Refusal: s("no"), Choices: []*string{s("a"), nil, s("c\u2028")}, FinishReason: "stop",
		ToolCalls:  json.RawMessage(`[ {"id": "call_1", "function": {"arguments": "{\"a\": 1}"}} ]`),
		Logprobs:   json.RawMessage("{\"content\":\n [ ]}"),
		Embedding:  json.RawMessage(`[0.1, -2e-3]`),
		Embeddings: json.RawMessage(`[[1],[2]]`),
		Usage:      &Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CachedTokens: 4, ReasoningTokens: 8, InputOnly: true},
		CostUSD:    CostOf(12_300_000), Cached: true, Attempts: 2, LatencyMS: 345, BatchID: "batch_1",
		Metadata: json.RawMessage(`{ "k": "v <b>", "n": [1, 2] }`),
		Error:    &Error{Type: ErrAPI, Message: "bad <thing> & \"more\"", Status: 400},
	}
}

// unset names a field of v, a struct, that is its zero value, looking
// into the structs its fields point to; "" if there is none.
func unset(v reflect.Value) string {
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if f.IsZero() {
			return name
		}
		if f.Kind() == reflect.Pointer && f.Elem().Kind() == reflect.Struct {
			if sub := unset(f.Elem()); sub != "" {
				return name + "." + sub
			}
		}
	}
	return ""
}

// compacted is r with the JSON it holds compacted, as every codec may
// write it.
func compacted(t *testing.T, r Result) Result {
	t.Helper()
	v := reflect.ValueOf(&r).Elem()
	raw := reflect.TypeFor[json.RawMessage]()
	for i := range v.NumField() {
		if f := v.Field(i); f.Type() == raw && f.Len() > 0 {
			var b bytes.Buffer
			if err := json.Compact(&b, f.Bytes()); err != nil {
				t.Fatalf("Result.%s: %v", v.Type().Field(i).Name, err)
			}
			f.SetBytes(b.Bytes())
		}
	}
	return r
}

// Each of Result's codecs carries every field: AppendJSON writes what
// encoding/json writes for the struct tags (results are read by jq and
// diffed against earlier runs), and the binary encoding --via batch
// spools results in reads back the result it was given.
func TestResultCodecs(t *testing.T) {
	full := fullResult()
	if f := unset(reflect.ValueOf(full)); f != "" {
		t.Fatalf("Result.%s is not set in fullResult: set it there, and teach it to every codec Result's doc lists", f)
	}
	s := func(v string) *string { return &v }
	results := []Result{
		full,
		{ID: "", Line: 0},
		{ID: "c", Line: 2, Model: "o3-mini", Content: String(""), ToolCalls: json.RawMessage(`[]`), Usage: &Usage{PromptTokens: 9, CompletionTokens: 300, TotalTokens: 309, ReasoningTokens: 256}, Attempts: 1},
		{ID: "e", Line: 3, Model: "text-embedding-3-small", Embedding: json.RawMessage(`[1,2]`), Usage: &Usage{PromptTokens: 5, TotalTokens: 5, InputOnly: true}, CostUSD: UnknownCost(), Attempts: 1},
		{ID: "r", Line: 4, Content: json.RawMessage("null"), Refusal: s(""), Usage: &Usage{}, Attempts: 1},
		{ID: "x", Line: 5, Error: &Error{Type: ErrNetwork, Message: "bad \xff byte"}, Attempts: 3},
	}
	for _, r := range results {
		t.Run("AppendJSON "+r.ID, func(t *testing.T) {
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
		})
		t.Run("binary "+r.ID, func(t *testing.T) {
			b, err := r.AppendBinary([]byte("before"))
			if err != nil {
				t.Fatal(err)
			}
			var got Result
			if err := got.UnmarshalBinary(b[len("before"):]); err != nil || !reflect.DeepEqual(compacted(t, got), compacted(t, r)) {
				t.Errorf("UnmarshalBinary(AppendBinary(%+v)) = %+v, %v", r, got, err)
			}
		})
	}
	// JSON from outside that is not JSON is an error, as it was.
	bad := Result{ID: "m", Metadata: json.RawMessage(`{"a":`)}
	if _, err := bad.AppendJSON(nil); err == nil {
		t.Error("AppendJSON of invalid metadata: no error")
	}
	// A record cut short is an error, not a result with less in it.
	b, _ := full.AppendBinary(nil)
	for _, cut := range [][]byte{b[:len(b)-1], {resContent, 200}} {
		var r Result
		if err := r.UnmarshalBinary(cut); err == nil {
			t.Errorf("UnmarshalBinary of a cut record %q: no error", cut)
		}
	}
}

func BenchmarkResultJSON(b *testing.B) {
	r := Result{ID: "q-123456", Line: 123456, Model: "gpt-4o-mini-2024-07-18", Content: String("The number 123456 is even, and its digits add up to 21."), FinishReason: "stop",
		Usage: &Usage{PromptTokens: 20, CompletionTokens: 15, TotalTokens: 35}, CostUSD: CostOf(6_600_000), Attempts: 1, BatchID: "batch_0123456789abcdef", Metadata: json.RawMessage(`{"split":"test"}`)}
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

// TestResultCostWritten: cost_usd is written as the exact decimal number
// of dollars, null when the price is unknown, and left out when there is
// none; spelt out here, apart from the formatter the codecs share.
func TestResultCostWritten(t *testing.T) {
	for _, tt := range []struct {
		cost Cost
		want string
	}{
		{CostOf(12_300_000), `,"cost_usd":0.0000123,`},
		{CostOf(0), `,"cost_usd":0,`},
		{CostOf(1_500_000_000_000), `,"cost_usd":1.5,`},
		{CostOf(7), `,"cost_usd":0.000000000007,`},
		{UnknownCost(), `,"cost_usd":null,`},
		{Cost{}, `"line":1,"attempts":1}`},
	} {
		b, err := (&Result{ID: "q", Line: 1, CostUSD: tt.cost, Attempts: 1}).AppendJSON(nil)
		if err != nil || !bytes.Contains(b, []byte(tt.want)) {
			t.Errorf("AppendJSON with cost %+v = %s (%v), want it to hold %s", tt.cost, b, err, tt.want)
		}
	}
}
