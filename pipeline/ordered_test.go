package pipeline

import (
	"context"
	"io"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

// count is a source of the values 0..n-1, one to each caller at a time;
// taken counts the values handed out.
func count(n int, taken *atomic.Int64) source[int] {
	return func(ctx context.Context, max int) ([]int, error) {
		i := int(taken.Load())
		if i >= n {
			return nil, nil
		}
		k := min(max, n-i)
		taken.Add(int64(k))
		vs := make([]int, k)
		for j := range vs {
			vs[j] = i + j
		}
		return vs, nil
	}
}

// orderedMap keeps input order whatever order the work finishes in.
func TestOrderedMap(t *testing.T) {
	for _, tt := range []struct{ workers, window int }{{1, 1}, {8, 16}, {8, 3}, {3, 100}} {
		out := make(chan int, 1000)
		var taken atomic.Int64
		err := orderedMap(context.Background(), tt.workers, tt.window, count(1000, &taken), out, func(i int) int {
			if i%7 == 0 {
				for range 10000 { // make some items slower than their neighbours
					_ = i * i
				}
			}
			return i * 2
		}, nil)
		close(out)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for got := range out {
			if got != want {
				t.Fatalf("orderedMap(workers %d, window %d): got %d, want %d", tt.workers, tt.window, got, want)
			}
			want += 2
		}
		if want != 2000 {
			t.Errorf("orderedMap(workers %d, window %d) gave %d values, want 1000", tt.workers, tt.window, want/2)
		}
	}
}

// A head that never finishes holds back exactly the window: orderedMap
// takes no more values once it is full, and says so.
func TestOrderedMapWindow(t *testing.T) {
	const workers, window = 4, 10
	release := make(chan struct{})
	stalled := make(chan int, 1)
	var taken atomic.Int64
	out := make(chan int, 1000)
	done := make(chan error, 1)
	go func() {
		done <- orderedMap(context.Background(), workers, window, count(1000, &taken), out, func(i int) int {
			if i == 0 {
				<-release
			}
			return i
		}, func(head int) {
			select {
			case stalled <- head:
			default:
			}
		})
	}()
	if head := <-stalled; head != 0 {
		t.Errorf("stalled on %d, want 0", head)
	}
	if n := taken.Load(); n != window {
		t.Errorf("orderedMap took %d values while the head was held, want the window, %d", n, window)
	}
	if len(out) != 0 {
		t.Errorf("orderedMap passed %d results before the head", len(out))
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(out)
	got := slices.Collect(func(yield func(int) bool) {
		for v := range out {
			if !yield(v) {
				return
			}
		}
	})
	if len(got) != 1000 || !slices.IsSorted(got) {
		t.Errorf("orderedMap gave %d values, sorted %v; want 1000 in order", len(got), slices.IsSorted(got))
	}
}

// unorderedMap passes a result on as soon as it is ready: a held value does
// not hold back the others.
func TestUnorderedMap(t *testing.T) {
	release := make(chan struct{})
	var taken atomic.Int64
	out := make(chan int, 1000)
	done := make(chan error, 1)
	go func() {
		done <- unorderedMap(context.Background(), 4, count(100, &taken), out, func(i int) int {
			if i == 0 {
				<-release
			}
			return i
		})
	}()
	seen := make(map[int]bool)
	for range 99 {
		seen[<-out] = true
	}
	if seen[0] {
		t.Error("unorderedMap passed the held value on before it was released")
	}
	close(release)
	if v := <-out; v != 0 {
		t.Errorf("last value = %d, want 0, the held one", v)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkEmit is the writer: results a second to the output.
func BenchmarkEmit(b *testing.B) {
	content := "answer: tell me about the number 12345 in one short sentence"
	res := &jsonl.Result{ID: "q12345", Line: 12345, Model: "gpt-4o-mini-2024-07-18", Content: jsonl.String(content), FinishReason: "stop",
		Usage: &jsonl.Usage{PromptTokens: 20, CompletionTokens: 14, TotalTokens: 34}, CostUSD: jsonl.CostOf(11_400_000), Attempts: 1, LatencyMS: 200}
	r := &runner{stats: new(Stats)}
	in := make(chan []*jsonl.Result, 256)
	n := b.N
	b.ResetTimer()
	go func() {
		defer close(in)
		rs := []*jsonl.Result{res}
		for range n {
			in <- rs
		}
	}()
	if err := r.emit(context.Background(), in, io.Discard); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "results/s")
}
