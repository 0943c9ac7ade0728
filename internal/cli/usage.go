package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/gptbatch/gptbatch/budget"
)

// run reports spending from the ledger beside the usage file (or the
// stream of the Redis --store names: every host's calls), or with
// --limit stores a daily cost limit. A report needs only the ledger: it
// takes no lock, creates nothing, and goes on without the state when
// usage.md is damaged.
func (u *usageCmd) run(ctx context.Context, r *runCmd, stdout, stderr io.Writer) error {
	if u.Limit != "" {
		c, err := parseDollars("--limit", u.Limit, zeroIsNoLimit)
		if err != nil {
			return usageError(err)
		}
		if c <= 0 {
			return usageError(errors.New("usage --limit must be more than 0; to remove the stored limit: gptbatch limits clear daily-cost"))
		}
		return storeLimits(ctx, r, stdout, u.JSON, func(st budget.Store) error {
			return budget.SetStoredLimits(ctx, st, budget.Limits{DailyCost: c})
		})
	}
	warn := func(format string, args ...any) {
		if !r.Quiet {
			fmt.Fprintf(stderr, "gptbatch: warning: "+format+"\n", args...)
		}
	}
	now := r.seams.now()
	from, until, err := period(now, u.Today, u.Month, u.Since)
	if err != nil {
		return usageError(err)
	}
	rd, err := r.openStore(ctx, true, nil)
	if err != nil {
		return usageError(err)
	}
	defer rd.Close()
	var st *budget.State
	if s, err := rd.Load(ctx); err != nil {
		warn("%v; the report below comes from the ledger alone", err)
	} else {
		st = &s
	}
	rep, err := rd.Report(ctx, budget.ReportOptions{Since: from, Until: until, By: u.By}, now.Location())
	if err != nil {
		return usageError(err)
	}
	if rep.Skipped > 0 {
		warn("%d ledger lines are not ledger entries and are left out of the report", rep.Skipped)
	}
	if u.JSON {
		return writeJSON(stdout, rep, st)
	}
	if err := writeTable(stdout, rep, st); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "costs from the price table of %s\n", budget.PriceTableDate)
	return err
}

// period is the range of --today, --month or --since DATE at now, in now's
// location; at most one may be given, none is everything.
func period(now time.Time, today, month bool, since string) (from, until time.Time, err error) {
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

// writeTable writes the report as an aligned table, then the state of the
// limits from usage.md when st is not nil.
func writeTable(w io.Writer, rep budget.Report, st *budget.State) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := map[string]string{"model": "MODEL\t", "day": "DAY\t", "via": "VIA\t", "endpoint": "ENDPOINT\t"}[rep.By]
	fmt.Fprintf(tw, "%sREQUESTS\tSUCCEEDED\tTOKENS IN\tCACHED\tOUT\tCOST\tCACHE HITS\tSAVED\t\n", head)
	line := func(key string, r budget.Row) {
		if rep.By != "" {
			fmt.Fprintf(tw, "%s\t", key)
		}
		cost := fmt.Sprintf("$%.6f", r.CostUSD.Float64())
		if r.UnpricedRequests > 0 {
			cost += fmt.Sprintf(" (+%d unpriced)", r.UnpricedRequests)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%d\t$%.6f\t\n", r.Requests, r.Succeeded, r.PromptTokens, r.CachedTokens, r.CompletionTokens, cost, r.CacheHits, r.SavedUSD.Float64())
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
	if st.Date == "" {
		_, err := fmt.Fprintln(w, "\nshared state: none yet (no run has counted anything in this store)")
		return err
	}
	yes := map[bool]string{true: "yes", false: "no"}
	_, err := fmt.Fprintf(w, "\nshared state: date %s; minute bucket: %.0f tokens, %.1f requests; day: %d tokens, $%s; minute token limit reached: %s; day token limit reached: %s\n",
		st.Date, st.TokensWithinMin, st.RequestsWithinMin, st.TokensWithinDay, st.CostWithinDay, yes[st.MinuteTokenLimitReached], yes[st.DayTokenLimitReached])
	if err == nil && !st.PausedUntil.IsZero() {
		_, err = fmt.Fprintf(w, "paused after a 429 until %s\n", st.PausedUntil.Format(time.RFC3339))
	}
	return err
}

// writeJSON writes the report as one JSON object, with usage.md's counters
// under "limits" when st is not nil, its keys in snake_case as all others.
func writeJSON(w io.Writer, rep budget.Report, st *budget.State) error {
	type limits struct {
		Date              string      `json:"date"`
		TokensWithinMin   float64     `json:"tokens_within_min"`
		RequestsWithinMin float64     `json:"requests_within_min"`
		TokensWithinDay   int64       `json:"tokens_within_day"`
		CostWithinDay     budget.Cost `json:"cost_within_day_usd"`
		MinuteReached     int         `json:"minute_token_limit_reached"`
		DayReached        int         `json:"day_token_limit_reached"`
	}
	out := struct {
		Since  *time.Time   `json:"since,omitempty"`
		Until  *time.Time   `json:"until,omitempty"`
		By     string       `json:"by,omitempty"`
		Rows   []budget.Row `json:"rows"`
		Total  budget.Row   `json:"total"`
		Limits *limits      `json:"limits,omitempty"`
	}{By: rep.By, Rows: rep.Rows, Total: rep.Total}
	if out.Rows == nil {
		out.Rows = []budget.Row{}
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
