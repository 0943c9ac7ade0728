package pipeline

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// BenchmarkTokenizeStage is the tokenize stage over many lines, which it
// spreads over every core: compare -cpu 1,2.
func BenchmarkTokenizeStage(b *testing.B) {
	line := strings.Repeat("The quick brown fox jumps over the lazy dog; naïve café 12345. ", 16)
	cfg := &Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini"}
	if err := (tokens.Counter{}).Build(cfg.Model); err != nil {
		b.Fatal(err)
	}
	r := newRunner(context.Background(), *cfg)
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
		if err := orderedMap(context.Background(), runtime.GOMAXPROCS(0), 2*runtime.GOMAXPROCS(0), fromChan(in), out, func(req *jsonl.Request) *item { return r.prepare(req, true) }, nil); err != nil {
			b.Fatal(err)
		}
	}
}
