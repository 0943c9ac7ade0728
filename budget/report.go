package budget

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
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
}

func (r *Row) add(e LedgerEntry) {
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
	skipped, err := readLedger(r, b.add, true)
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

// Period is the range of --today, --month or --since DATE at now, in now's
// location; at most one may be given, none is everything.
func Period(now time.Time, today, month bool, since string) (from, until time.Time, err error) {
	y, m, d := now.Date()
	loc := now.Location()
	switch {
	case today:
		return time.Date(y, m, d, 0, 0, 0, 0, loc), time.Date(y, m, d+1, 0, 0, 0, 0, loc), nil
	case month:
		return time.Date(y, m, 1, 0, 0, 0, 0, loc), time.Date(y, m+1, 1, 0, 0, 0, 0, loc), nil
	case since != "":
		t, err := time.ParseInLocation(time.DateOnly, since, loc)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--since %q: want a date as YYYY-MM-DD", since)
		}
		return t, time.Time{}, nil
	}
	return time.Time{}, time.Time{}, nil
}

// WriteTable writes the report as an aligned table, then the state of the
// limits from usage.md when st is not nil.
func (rep Report) WriteTable(w io.Writer, st *State) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := map[string]string{"model": "MODEL\t", "day": "DAY\t", "via": "VIA\t", "endpoint": "ENDPOINT\t"}[rep.By]
	fmt.Fprintf(tw, "%sREQUESTS\tSUCCEEDED\tTOKENS IN\tCACHED\tOUT\tCOST\t\n", head)
	line := func(key string, r Row) {
		if rep.By != "" {
			fmt.Fprintf(tw, "%s\t", key)
		}
		cost := fmt.Sprintf("$%.6f", r.CostUSD.Float64())
		if r.UnpricedRequests > 0 {
			cost += fmt.Sprintf(" (+%d unpriced)", r.UnpricedRequests)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t\n", r.Requests, r.Succeeded, r.PromptTokens, r.CachedTokens, r.CompletionTokens, cost)
	}
	if rep.By == "" {
		line("", rep.Total)
	} else {
		for _, r := range rep.Rows {
			line(r.Key, r)
		}
		if len(rep.Rows) > 1 {
			line("TOTAL", rep.Total)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st == nil {
		return nil
	}
	yes := map[bool]string{true: "yes", false: "no"}
	_, err := fmt.Fprintf(w, "\nshared state: date %s; minute bucket: %.0f tokens, %.1f requests; day: %d tokens, $%s; minute token limit reached: %s; day token limit reached: %s\n",
		st.Date, st.TokensWithinMin, st.RequestsWithinMin, st.TokensWithinDay, st.CostWithinDay, yes[st.MinuteTokenLimitReached], yes[st.DayTokenLimitReached])
	if err == nil && !st.PausedUntil.IsZero() {
		_, err = fmt.Fprintf(w, "paused after a 429 until %s\n", st.PausedUntil.Format(time.RFC3339))
	}
	return err
}

// WriteJSON writes the report as one JSON object, with the usage.md keys
// under "limits" when st is not nil.
func (rep Report) WriteJSON(w io.Writer, st *State) error {
	type limits struct {
		Date              string  `json:"Date"`
		TokensWithinMin   float64 `json:"tokens_within_min"`
		RequestsWithinMin float64 `json:"requests_within_min"`
		TokensWithinDay   int64   `json:"tokens_within_day"`
		CostWithinDay     Cost    `json:"cost_within_day_usd"`
		MinuteReached     int     `json:"minute_token_limit_reached"`
		DayReached        int     `json:"day_token_limit_reached"`
	}
	out := struct {
		Since  *time.Time `json:"since,omitempty"`
		Until  *time.Time `json:"until,omitempty"`
		By     string     `json:"by,omitempty"`
		Rows   []Row      `json:"rows"`
		Total  Row        `json:"total"`
		Limits *limits    `json:"limits,omitempty"`
	}{By: rep.By, Rows: rep.Rows, Total: rep.Total}
	if out.Rows == nil {
		out.Rows = []Row{}
	}
	if !rep.Since.IsZero() {
		out.Since = &rep.Since
	}
	if !rep.Until.IsZero() {
		out.Until = &rep.Until
	}
	if st != nil {
		b2i := map[bool]int{true: 1}
		out.Limits = &limits{st.Date, st.TokensWithinMin, st.RequestsWithinMin, st.TokensWithinDay, st.CostWithinDay,
			b2i[st.MinuteTokenLimitReached], b2i[st.DayTokenLimitReached]}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
