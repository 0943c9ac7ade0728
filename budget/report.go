package budget

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"
)

// ReportOptions select and group ledger entries: zero Since or Until is
// unbounded; By is "", "model", "day", "via" or "endpoint".
type ReportOptions struct {
	Since, Until time.Time
	By           string
}

// Row is one group of API calls.
type Row struct {
	Key              string `json:"key,omitempty"`
	Requests         int64  `json:"requests"`
	Succeeded        int64  `json:"succeeded"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CostUSD          Cost   `json:"cost_usd"`
	UnpricedRequests int64  `json:"unpriced_requests,omitempty"`
	// CacheHits and SavedUSD are LedgerEntry's, counted apart.
	CacheHits int64 `json:"cache_hits"`
	SavedUSD  Cost  `json:"saved_usd"`
}

func (r *Row) add(e LedgerEntry) {
	if e.CacheHits != 0 {
		r.CacheHits += e.CacheHits
		if e.SavedUSD != nil {
			r.SavedUSD += *e.SavedUSD
		}
		return
	}
	r.Requests++
	if e.Error == "" && e.Status/100 == 2 {
		r.Succeeded++
	}
	r.PromptTokens += e.PromptTokens
	r.CachedTokens += e.CachedTokens
	r.CompletionTokens += e.CompletionTokens
	if e.CostUSD == nil {
		r.UnpricedRequests++
	} else {
		r.CostUSD += *e.CostUSD
	}
}

// Report is what the ledger says was spent.
type Report struct {
	Since, Until time.Time
	By           string
	Rows         []Row
	Total        Row
	Skipped      int // ledger lines that are not entries: a torn last one (a crash mid-append), or damaged ones
}

// A ledgerRead calls fn for each entry of a ledger and counts bad lines.
type ledgerRead func(fn func(LedgerEntry) error) (skipped int, err error)

// buildReport sums the entries read gives with Since <= time < Until into
// rows sorted by key (a day in loc); a damaged line is counted in Skipped,
// so that it does not hide the rest.
func buildReport(opt ReportOptions, loc *time.Location, read ledgerRead) (Report, error) {
	rep := Report{Since: opt.Since, Until: opt.Until, By: opt.By}
	rows := map[string]Row{}
	skipped, err := read(func(e LedgerEntry) error {
		if (!opt.Since.IsZero() && e.Time.Before(opt.Since)) || (!opt.Until.IsZero() && !e.Time.Before(opt.Until)) {
			return nil
		}
		var key string
		switch opt.By {
		case "model":
			key = e.Model
		case "day":
			key = e.Time.In(loc).Format(time.DateOnly)
		case "via":
			key = cmp.Or(e.Via, "sync")
		case "endpoint":
			key = cmp.Or(e.Endpoint, "chat")
		}
		row := rows[key]
		row.Key = key
		row.add(e)
		rows[key] = row
		rep.Total.add(e)
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	rep.Rows = slices.Collect(maps.Values(rows))
	slices.SortFunc(rep.Rows, func(a, b Row) int { return strings.Compare(a.Key, b.Key) })
	rep.Skipped = skipped
	return rep, nil
}

// countBatches is Store.BatchEntries of the entries read gives.
func countBatches(ids map[string]bool, read ledgerRead) (map[string]int, error) {
	n := map[string]int{}
	_, err := read(func(e LedgerEntry) error {
		if e.BatchID != "" && ids[e.BatchID] {
			n[e.BatchID]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}
