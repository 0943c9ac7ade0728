package budget

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// A table stored with the budget is what every store that shares it
// reads back, until it is cleared.
func TestStoredPrices(t *testing.T) {
	ctx := context.Background()
	table, err := ParsePrices([]byte(`{"my-model": {"litellm_provider": "openai", "input_cost_per_token": 1.5e-6,
	  "output_cost_per_token": 6e-6, "input_cost_per_token_batches": 5e-7}}`), SourceFile)
	if err != nil {
		t.Fatal(err)
	}
	// Two handles on one budget in the shared servers: two hosts.
	twoRedis := func(t *testing.T, url string) (a, b Store) {
		name := fmt.Sprint("prices-test-", budgets.Add(1))
		for _, s := range []*Store{&a, &b} {
			r, err := OpenRedis(ctx, url, name)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			*s = r
		}
		return a, b
	}
	for _, tt := range []struct {
		name string
		open func(t *testing.T) (a, b Store)
	}{
		{"usage file", func(t *testing.T) (a, b Store) {
			path := filepath.Join(t.TempDir(), "usage.md")
			fa, err := OpenFile(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			fb, err := OpenFile(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			return fa, fb
		}},
		{"redis", func(t *testing.T) (a, b Store) { return twoRedis(t, redistest.Shared(t).URL("")) }},
		{"cluster", func(t *testing.T) (a, b Store) { return twoRedis(t, redistest.SharedCluster(t).URL()) }},
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

// The table beside usage.md is read by a usage file opened read-only,
// has usage.md's mode, and a damaged one is an error naming it; a budget
// in memory keeps none.
func TestStoredPricesFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.md")
	f, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Update(ctx, time.Now(), func(s *State, _ time.Time) ([]LedgerEntry, error) { s.TokensWithinDay = 1; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenFile(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.StorePrices(ctx, BuiltinPrices()); err != nil {
		t.Fatal(err)
	}
	side := filepath.Join(dir, "usage.prices.json")
	fi, err := os.Stat(side)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("stored table %s: %v, %v; want mode 0640 as usage.md", side, fi, err)
	}
	p, err := ro.StoredPrices(ctx)
	if err != nil || p.Len() != BuiltinPrices().Len() {
		t.Fatalf("StoredPrices read-only = %v, %v; want the built-in table", p, err)
	}
	if err := ro.StorePrices(ctx, nil); err == nil {
		t.Error("StorePrices on a read-only usage file = nil, want an error")
	}
	if err := os.WriteFile(side, []byte(`{"gpt-x": {"input_cost_per_token": -1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, st := range []Store{f, ro} {
		if _, err := st.StoredPrices(ctx); err == nil || !strings.Contains(err.Error(), side) || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("reading a damaged stored table = %v, want an error naming %s", err, side)
		}
	}
	null, err := Open(ctx, os.DevNull, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := null.StoredPrices(ctx); p != nil || err != nil {
		t.Errorf("StoredPrices over /dev/null = %v, %v; want none", p, err)
	}
	if err := null.StorePrices(ctx, BuiltinPrices()); err == nil {
		t.Error("StorePrices over /dev/null = nil, want an error: nothing is kept for other runs")
	}
}
