package budget

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestBatchEntries: every store counts the ledger entries of the batches
// asked about, whatever their time, and nothing else: not other batches,
// not synchronous calls, not a torn last line of the file.
func TestBatchEntries(t *testing.T) {
	ctx := context.Background()
	now := t0 // the clock of miniStore's server
	settle := func(t *testing.T, s Store) {
		t.Helper()
		g := NewGate(s, Limits{})
		var sts []Settlement
		for i, b := range []string{"batch_a", "batch_b", "batch_a", "", "batch_c", "batch_a"} {
			e := &LedgerEntry{Time: now.Add(time.Duration(i-3) * time.Hour), ID: "q", Status: 200, BatchID: b}
			sts = append(sts, Settlement{Sent: true, DayOnly: b != "", Entry: e})
		}
		if err := g.Settle(ctx, now, sts); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{"batch_a": true, "batch_b": true, "batch_x": true}
	want := map[string]int{"batch_a": 3, "batch_b": 1}

	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		fs, err := OpenFile(filepath.Join(dir, "usage.md"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := fs.BatchEntries(ctx, now, ids); err != nil || len(got) != 0 {
			t.Errorf("BatchEntries before any ledger = %v, %v; want nothing", got, err)
		}
		settle(t, fs)
		// A process killed mid-append leaves a torn line naming a batch.
		lf, err := os.OpenFile(fs.ledger, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		lf.WriteString(`{"time":"2026-11-25T12:00:00Z","id":"q","batch_id":"batch_a","sta`)
		lf.Close()
		got, err := fs.BatchEntries(ctx, now, ids)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("BatchEntries = %v, %v; want %v", got, err, want)
		}
	})
	t.Run("memory", func(t *testing.T) {
		m := &MemStore{}
		settle(t, m)
		got, err := NewGate(m, Limits{}).BatchEntries(ctx, now, ids)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("BatchEntries = %v, %v; want %v", got, err, want)
		}
	})
	t.Run("redis", func(t *testing.T) {
		_, r := miniStore(t)
		settle(t, r)
		got, err := r.BatchEntries(ctx, now, ids)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("BatchEntries = %v, %v; want %v", got, err, want)
		}
	})
}
