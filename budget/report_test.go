package budget

import (
	"strings"
	"testing"
	"time"
)

func TestBuildReport(t *testing.T) {
	ledger := `{"time":"2026-11-21T23:30:00Z","model":"gpt-4o-mini","status":200,"prompt_tokens":10,"completion_tokens":5,"cost_usd":0.000004}
{"time":"2026-11-22T10:00:00Z","model":"gpt-4o-mini","status":200,"prompt_tokens":20,"completion_tokens":5,"cost_usd":0.000006}
{"time":"2026-11-22T11:00:00Z","model":"mystery","status":200,"prompt_tokens":7,"completion_tokens":1,"cost_usd":null}
{"time":"2026-11-22T11:30:00Z","model":"gpt-4o-mini","status":429,"error":"rate_limit","cost_usd":0}
{"time":"2026-11-22T12:00:00Z","model":"gpt-4o-m`
	from, until := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	rep, err := BuildReport(strings.NewReader(ledger), ReportOptions{Since: from, Until: until, By: "model"}, time.UTC)
	if err != nil {
		t.Fatalf("BuildReport = %v", err)
	}
	if rep.Skipped != 1 || rep.Total.Requests != 3 || rep.Total.Succeeded != 2 || rep.Total.PromptTokens != 27 ||
		rep.Total.CostUSD.String() != "0.000006" || rep.Total.UnpricedRequests != 1 || len(rep.Rows) != 2 {
		t.Errorf("BuildReport(today, by model) = %+v; want 3 requests, 2 succeeded, 27 prompt tokens, $0.000006, 1 unpriced, 2 rows, 1 torn line skipped", rep)
	}
}
