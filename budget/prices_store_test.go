package budget

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// pricesStore is a store a price table can be stored with.
type pricesStore interface {
	StoredPrices(ctx context.Context) (*Prices, error)
	StorePrices(ctx context.Context, p *Prices) error
}

// A table stored with the budget is what every store that shares it
// reads back, until it is cleared.
func TestStoredPrices(t *testing.T) {
	ctx := context.Background()
	table, err := ParsePrices([]byte(`{"my-model": {"litellm_provider": "openai", "input_cost_per_token": 1.5e-6,
	  "output_cost_per_token": 6e-6, "input_cost_per_token_batches": 5e-7}}`), SourceFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	for _, tt := range []struct {
		name string
		open func(t *testing.T) (a, b pricesStore) // two handles on one budget: two hosts
	}{
		{"usage file", func(t *testing.T) (a, b pricesStore) {
			path := filepath.Join(t.TempDir(), "usage.md")
			fa, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fb, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return fa, fb
		}},
		{"redis", func(t *testing.T) (a, b pricesStore) {
			return openReal(t, srv.URL("")), openReal(t, srv.URL(""))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tt.open(t)
			if p, err := b.StoredPrices(ctx); p != nil || err != nil {
				t.Fatalf("StoredPrices before any = %v, %v; want none", p, err)
			}
			if err := a.StorePrices(ctx, table); err != nil {
				t.Fatalf("StorePrices = %v", err)
			}
			got, err := b.StoredPrices(ctx)
			if err != nil {
				t.Fatalf("StoredPrices = %v", err)
			}
			m := mustLookup(t, got, "my-model")
			if c, _ := m.Cost(TierBatch, 1000, 0, 1000); c != 1000*500_000+1000*3_000_000 || m.Source != SourceStored {
				t.Errorf("stored my-model batch cost of 1000+1000 tokens = %d (%s), want %d, stored", c, m.Source, 1000*500_000+1000*3_000_000)
			}
			if err := a.StorePrices(ctx, nil); err != nil {
				t.Fatalf("StorePrices(nil) = %v", err)
			}
			if p, err := b.StoredPrices(ctx); p != nil || err != nil {
				t.Errorf("StoredPrices after clearing = %v, %v; want none", p, err)
			}
		})
	}
}

// The table beside usage.md is read without the lock by PeekPrices, has
// usage.md's mode, and a damaged one is an error naming it.
func TestPeekPrices(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.md")
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := PeekPrices(path); p != nil || err != nil {
		t.Fatalf("PeekPrices before any = %v, %v", p, err)
	}
	if err := f.StorePrices(ctx, BuiltinPrices()); err != nil {
		t.Fatal(err)
	}
	side := filepath.Join(dir, "usage.prices.json")
	fi, err := os.Stat(side)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("stored table %s: %v, %v; want mode 0640 as usage.md", side, fi, err)
	}
	p, err := PeekPrices(path)
	if err != nil || p.Len() != BuiltinPrices().Len() {
		t.Fatalf("PeekPrices = %v, %v; want the built-in table", p, err)
	}
	if err := os.WriteFile(side, []byte(`{"gpt-x": {"input_cost_per_token": -1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func() (*Prices, error){func() (*Prices, error) { return PeekPrices(path) }, func() (*Prices, error) { return f.StoredPrices(ctx) }} {
		if _, err := read(); err == nil || !strings.Contains(err.Error(), side) || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("reading a damaged stored table = %v, want an error naming %s", err, side)
		}
	}
	null, err := OpenFile(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if err := null.StorePrices(ctx, BuiltinPrices()); err == nil {
		t.Error("StorePrices over /dev/null = nil, want an error: nothing is stored there")
	}
}
