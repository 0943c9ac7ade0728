package pipeline

import (
	"context"
	"io"
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

// orderedMap keeps input order whatever order the work finishes in.
func TestOrderedMap(t *testing.T) {
	in := make(chan int)
	out := make(chan int, 1000)
	go func() {
		defer close(in)
		for i := range 1000 {
			in <- i
		}
	}()
	err := orderedMap(context.Background(), 8, in, out, func(i int) int {
		if i%7 == 0 {
			for range 10000 { // make some items slower than their neighbours
				_ = i * i
			}
		}
		return i * 2
	})
	close(out)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for got := range out {
		if got != want {
			t.Fatalf("orderedMap: got %d, want %d", got, want)
		}
		want += 2
	}
	if want != 2000 {
		t.Errorf("orderedMap gave %d values, want 1000", want/2)
	}
}

// BenchmarkEmit is the ordered writer: results a second through the window.
func BenchmarkEmit(b *testing.B) {
	content := "answer: tell me about the number 12345 in one short sentence"
	res := &jsonl.Result{ID: "q12345", Line: 12345, Model: "gpt-4o-mini-2024-07-18", Content: &content, FinishReason: "stop",
		Usage: &jsonl.Usage{PromptTokens: 20, CompletionTokens: 14, TotalTokens: 34}, CostUSD: []byte("0.0000114"), Attempts: 1, LatencyMS: 200}
	r := &runner{stats: new(Stats)}
	order := make(chan chan *jsonl.Result, 256)
	n := b.N
	b.ResetTimer()
	go func() {
		defer close(order)
		for range n {
			slot := make(chan *jsonl.Result, 1)
			slot <- res
			order <- slot
		}
	}()
	if err := r.emitOrdered(context.Background(), order, io.Discard); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "results/s")
}
