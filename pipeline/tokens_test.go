package pipeline

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

func TestEncodingName(t *testing.T) {
	tests := []struct{ model, want string }{
		{"gpt-4o-mini", o200kBase},
		{"gpt-4o-2024-08-06", o200kBase},
		{"gpt-4.1-nano", o200kBase},
		{"o3", o200kBase},
		{"o4-mini-2025-04-16", o200kBase},
		{"gpt-5-mini", o200kBase},
		{"some-local-llama", o200kBase},
		{"gpt-4", cl100kBase},
		{"gpt-4-turbo-2024-04-09", cl100kBase},
		{"gpt-3.5-turbo-0125", cl100kBase},
		{"ft:gpt-3.5-turbo-0125:acme::abc123", cl100kBase},
	}
	for _, tt := range tests {
		if got := encodingName(tt.model); got != tt.want {
			t.Errorf("encodingName(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}

// The expected counts are what the API reports as prompt_tokens for these
// requests (the cookbook's worked examples and hand-checked ones).
func TestPromptTokens(t *testing.T) {
	tests := []struct {
		name, model, messages string
		want                  int64
	}{
		{"hello", "gpt-4o-mini", `[{"role":"user","content":"Hello world"}]`, 9},
		{"hello cl100k", "gpt-3.5-turbo", `[{"role":"user","content":"Hello world"}]`, 9},
		{"system and user", "gpt-4o-mini", `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hi"}]`, 3 + (3 + 1 + 6) + (3 + 1 + 1)},
		{"name", "gpt-4o", `[{"role":"user","name":"bob","content":"Hi"}]`, 3 + 3 + 1 + 1 + 1 + 1},
		{"parts", "gpt-4o", `[{"role":"user","content":[{"type":"text","text":"Hello world"}]}]`, 9},
		{"image", "gpt-4o", `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]`, 3 + 3 + 1 + imageTokens},
		{"null content", "gpt-4o", `[{"role":"assistant","content":null}]`, 3 + 3 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := promptTokens(tt.model, json.RawMessage(tt.messages), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("promptTokens(%s) = %d, want %d", tt.messages, got, tt.want)
			}
		})
	}
}

func TestPromptTokensBadContent(t *testing.T) {
	if _, err := promptTokens("gpt-4o", json.RawMessage(`[{"role":"user","content":42}]`), nil); err == nil {
		t.Error("promptTokens with numeric content: no error")
	}
}

func BenchmarkTokenize(b *testing.B) {
	text := []byte{}
	for len(text) < 1<<20 {
		text = append(text, "The quick brown fox jumps over the lazy dog; naïve café — 12345 tokens, émoji 🙂.\n"...)
	}
	msgs, _ := json.Marshal([]map[string]string{{"role": "user", "content": string(text)}})
	for _, enc := range []struct{ name, model string }{{o200kBase, "gpt-4o-mini"}, {cl100kBase, "gpt-4"}} {
		b.Run(enc.name, func(b *testing.B) {
			if _, err := promptTokens(enc.model, msgs, nil); err != nil { // build the encoder outside the timing
				b.Fatal(err)
			}
			b.SetBytes(int64(len(text)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := promptTokens(enc.model, msgs, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The byte bound, used while the encoder is built, must never be below the
// exact count, or the first requests could overrun a limit.
func TestPromptTokenBound(t *testing.T) {
	for _, m := range []string{
		`[{"role":"user","content":"Hello world"}]`,
		`[{"role":"system","content":"naïve café — 🙂 emoji"},{"role":"user","name":"bob","content":[{"type":"text","text":"x"}]}]`,
		`[{"role":"user","content":"` + strings.Repeat("a", 5000) + `"}]`,
	} {
		exact, err := promptTokens("gpt-4o", json.RawMessage(m), nil)
		if err != nil {
			t.Fatal(err)
		}
		bound, err := promptTokenBound(json.RawMessage(m), nil)
		if err != nil || bound < exact {
			t.Errorf("promptTokenBound(%.40s) = %d, %v; want >= %d", m, bound, err, exact)
		}
	}
}

// BenchmarkTokenizeStage is the tokenize stage over many lines, which it
// spreads over every core: compare -cpu 1,2.
func BenchmarkTokenizeStage(b *testing.B) {
	line := strings.Repeat("The quick brown fox jumps over the lazy dog; naïve café 12345. ", 16)
	cfg := &Config{Model: "gpt-4o-mini"}
	if _, err := encoders[o200kBase](); err != nil {
		b.Fatal(err)
	}
	const lines = 2000
	b.SetBytes(int64(lines * len(line)))
	for b.Loop() {
		in := make(chan *jsonl.Request)
		out := make(chan *item, lines)
		go func() {
			defer close(in)
			for i := range lines {
				in <- &jsonl.Request{Line: i + 1, ID: "x", Body: map[string]json.RawMessage{"messages": mustJSON([]map[string]string{{"role": "user", "content": line}})}}
			}
		}()
		if err := orderedMap(context.Background(), runtime.GOMAXPROCS(0), 2*runtime.GOMAXPROCS(0), fromChan(in), out, func(r *jsonl.Request) *item { return prepare(r, cfg, true) }, nil); err != nil {
			b.Fatal(err)
		}
	}
}
