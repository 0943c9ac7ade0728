package budget

import (
	"cmp"
	"io"
	"sort"
	"time"
)

// ReportOptions select and group ledger entries. Zero Since or Until is
// unbounded; By is "" (one row), "model", "day", "via" (sync or batch) or
// "endpoint".
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
	// CacheHits are the lines answered from the response cache without a
	// call, and SavedUSD what their answers cost when they were paid for:
	// in neither Requests, the tokens nor CostUSD.
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

// BuildReport sums the ledger entries with Since <= time < Until into rows
// sorted by key; a day is the entry's date in loc. Lines that are not
// ledger entries are left out and counted in Skipped, so that one damaged
// line does not hide the rest of the report.
func BuildReport(r io.Reader, opt ReportOptions, loc *time.Location) (Report, error) {
	b := newReportBuilder(opt, loc)
	skipped, err := readLedger(r, b.add, true, nil)
	if err != nil {
		return Report{}, err
	}
	rep := b.report()
	rep.Skipped = skipped
	return rep, nil
}

// reportBuilder sums ledger entries as BuildReport does, one at a time.
type reportBuilder struct {
	opt  ReportOptions
	loc  *time.Location
	rows map[string]*Row
	tot  Row
}

func newReportBuilder(opt ReportOptions, loc *time.Location) *reportBuilder {
	return &reportBuilder{opt: opt, loc: loc, rows: map[string]*Row{}}
}

// add counts e when it falls in the period; it never fails.
func (b *reportBuilder) add(e LedgerEntry) error {
	if (!b.opt.Since.IsZero() && e.Time.Before(b.opt.Since)) || (!b.opt.Until.IsZero() && !e.Time.Before(b.opt.Until)) {
		return nil
	}
	var key string
	switch b.opt.By {
	case "model":
		key = e.Model
	case "day":
		key = e.Time.In(b.loc).Format(time.DateOnly)
	case "via":
		key = cmp.Or(e.Via, "sync")
	case "endpoint":
		key = cmp.Or(e.Endpoint, "chat")
	}
	row := b.rows[key]
	if row == nil {
		row = &Row{Key: key}
		b.rows[key] = row
	}
	row.add(e)
	b.tot.add(e)
	return nil
}

func (b *reportBuilder) report() Report {
	rep := Report{Since: b.opt.Since, Until: b.opt.Until, By: b.opt.By, Total: b.tot}
	for _, row := range b.rows {
		rep.Rows = append(rep.Rows, *row)
	}
	sort.Slice(rep.Rows, func(i, j int) bool { return rep.Rows[i].Key < rep.Rows[j].Key })
	return rep
}
