package pipeline

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/tokens"
)

// BenchmarkRun is the whole pipeline against an instant local server,
// through a usage file, 64 requests in flight: its CPU per request is the
// figure to watch (go test -bench Run -cpuprofile cpu.out ./pipeline).
func BenchmarkRun(b *testing.B) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	store, err := budget.OpenFile(filepath.Join(b.TempDir(), "usage.md"), budget.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var in strings.Builder
	for i := range b.N {
		fmt.Fprintf(&in, "%q\n", fmt.Sprintf("tell me about the number %d in one short sentence", i))
	}
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-bench", Parallel: 64, Retries: 5,
		Gate: budget.NewGate(store, budget.Limits{TPD: 1 << 40}),
	}
	if err := (tokens.Counter{}).Build("gpt-4o-mini"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := Run(context.Background(), strings.NewReader(in.String()), io.Discard, cfg); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/req")
}
