package budget

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A report sums the ledger's entries of the period, by the key asked for,
// and counts a line that is not an entry (a torn last one) as skipped.
func TestReport(t *testing.T) {
	ledger := `{"time":"2026-11-21T23:30:00Z","model":"gpt-4o-mini","status":200,"prompt_tokens":10,"completion_tokens":5,"cost_usd":0.000004}
{"time":"2026-11-22T10:00:00Z","model":"gpt-4o-mini","status":200,"prompt_tokens":20,"completion_tokens":5,"cost_usd":0.000006}
{"time":"2026-11-22T11:00:00Z","model":"mystery","status":200,"prompt_tokens":7,"completion_tokens":1,"cost_usd":null}
{"time":"2026-11-22T11:30:00Z","model":"gpt-4o-mini","status":429,"error":"rate_limit","cost_usd":0}
{"time":"2026-11-22T12:00:00Z","model":"gpt-4o-m`
	from, until := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "usage.ledger.jsonl"), []byte(ledger), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(filepath.Join(dir, "usage.md"), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Report(context.Background(), ReportOptions{Since: from, Until: until, By: "model"}, time.UTC)
	if err != nil {
		t.Fatalf("Report = %v", err)
	}
	if rep.Skipped != 1 || rep.Total.Requests != 3 || rep.Total.Succeeded != 2 || rep.Total.PromptTokens != 27 ||
		rep.Total.CostUSD.String() != "0.000006" || rep.Total.UnpricedRequests != 1 || len(rep.Rows) != 2 {
		t.Errorf("Report(today, by model) = %+v; want 3 requests, 2 succeeded, 27 prompt tokens, $0.000006, 1 unpriced, 2 rows, 1 torn line skipped", rep)
	}
}
