package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/pipeline"
)

// limitsCmd shows, sets and clears the limits stored with the shared
// budget.
type limitsCmd struct {
	JSON  bool           `name:"json" help:"Write JSON instead of a table."`
	Show  struct{}       `cmd:"" default:"1" hidden:"" help:"Show the stored limits and today's use of each (the default)."`
	Set   struct{}       `cmd:"" help:"Store the limits given with --rpm, --tpm, --tpd and --daily-cost: ceilings every run sharing the budget obeys; a flag can lower them for one run, never raise them."`
	Clear limitsClearCmd `cmd:"" help:"Remove the stored limits named (rpm, tpm, tpd, daily-cost), or all of them."`
}

// limitsClearCmd removes stored limits.
type limitsClearCmd struct {
	Names []string `arg:"" optional:"" name:"name" help:"Limits to remove: rpm, tpm, tpd, daily-cost (default all)."`
}

// limitFlags are the flags `limits set` takes, by the stored limit's name.
var limitFlags = map[string]string{"rpm": "rpm", "tpm": "tpm", "tpd": "tpd", "daily-cost": "daily-cost"}

// given is the set of flags given on the command line, by name.
func given(kctx *kong.Context) map[string]bool {
	g := map[string]bool{}
	for _, p := range kctx.Path {
		if p.Flag != nil && !p.Resolved {
			g[p.Flag.Name] = true
		}
	}
	return g
}

// set stores the limits given on the command line.
func (l *limitsCmd) set(ctx context.Context, r *runCmd, kctx *kong.Context, stdout io.Writer) error {
	g := given(kctx)
	var set budget.Limits
	var names []string
	for _, n := range budget.LimitNames {
		if g[limitFlags[n]] {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return usageError(errors.New("limits set: give the limits to store: --rpm N, --tpm N, --tpd N, --daily-cost USD"))
	}
	dailyCost, err := parseDollars("--daily-cost", r.DailyCost, zeroIsNoLimit)
	if err != nil {
		return usageError(err)
	}
	// Only the limits given are stored: SetStoredLimits stores every one
	// that is on, and the others hold their defaults.
	vals := map[string]int64{"rpm": r.RPM, "tpm": r.TPM, "tpd": r.TPD, "daily-cost": int64(dailyCost)}
	for _, n := range names {
		if vals[n] <= 0 {
			return usageError(fmt.Errorf("limits set: --%s must be more than 0; to remove a stored limit: gptbatch limits clear %s", n, n))
		}
		switch n {
		case "rpm":
			set.RPM = r.RPM
		case "tpm":
			set.TPM = r.TPM
		case "tpd":
			set.TPD = r.TPD
		case "daily-cost":
			set.DailyCost = dailyCost
		}
	}
	return storeLimits(ctx, r, stdout, l.JSON, func(st budget.Store) error { return budget.SetStoredLimits(ctx, st, set) })
}

// clear removes stored limits.
func (c *limitsClearCmd) run(ctx context.Context, r *runCmd, stdout io.Writer, asJSON bool) error {
	for _, n := range c.Names {
		if _, ok := limitFlags[n]; !ok {
			return usageError(fmt.Errorf("limits clear: no limit named %q (limits are %s)", n, strings.Join(budget.LimitNames, ", ")))
		}
	}
	return storeLimits(ctx, r, stdout, asJSON, func(st budget.Store) error { return budget.ClearStoredLimits(ctx, st, c.Names) })
}

// storeLimits changes the stored limits with change, under the store's
// lock, then shows them, as JSON when asJSON.
func storeLimits(ctx context.Context, r *runCmd, stdout io.Writer, asJSON bool, change func(budget.Store) error) error {
	st, err := r.openStore(ctx, false, nil)
	if err != nil {
		return usageError(err)
	}
	defer st.Close()
	where := r.storeWhere(st)
	if err := change(st); err != nil {
		return &pipeline.Error{Code: exitUsage, Err: fmt.Errorf("%s: %w", where, err)}
	}
	s, err := st.Load(ctx)
	if err != nil {
		return &pipeline.Error{Code: exitUsage, Err: fmt.Errorf("%s: %w", where, err)}
	}
	return writeLimits(stdout, where, r.budgetName(), s, r.seams.now(), asJSON)
}

// show writes the stored limits and today's use of each.
func (l *limitsCmd) show(ctx context.Context, r *runCmd, stdout io.Writer) error {
	st, err := r.openStore(ctx, true, nil)
	if err != nil {
		return usageError(err)
	}
	defer st.Close()
	s, err := st.Load(ctx)
	if err != nil {
		return usageError(err)
	}
	return writeLimits(stdout, r.storeWhere(st), r.budgetName(), s, r.seams.now(), l.JSON)
}

// limitUse is one stored limit and what it has used.
type limitUse struct {
	Stored any    `json:"stored"` // the limit, null when none is stored
	Used   any    `json:"used"`   // what counts against it now
	Per    string `json:"per"`    // "minute" or "day"
}

// writeLimits writes the stored limits in s and today's use of each, as a
// table or JSON; name is the budget's in a Redis store, "" for a file.
func writeLimits(w io.Writer, where, name string, s budget.State, now time.Time, asJSON bool) error {
	dayTokens, dayCost := s.DayUsed(now)
	stored := func(v int64) any {
		if v <= 0 {
			return nil
		}
		return v
	}
	var cost any
	if s.Stored.DailyCost > 0 {
		cost = s.Stored.DailyCost
	}
	uses := map[string]limitUse{
		"rpm":        {stored(s.Stored.RPM), s.RequestsWithinMin, "minute"},
		"tpm":        {stored(s.Stored.TPM), s.TokensWithinMin, "minute"},
		"tpd":        {stored(s.Stored.TPD), dayTokens, "day"},
		"daily-cost": {cost, dayCost, "day"},
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Store  string              `json:"store"`
			Budget string              `json:"budget,omitempty"`
			Date   string              `json:"date"`
			Limits map[string]limitUse `json:"limits"`
		}{where, name, s.Date, uses})
	}
	fmt.Fprintf(w, "limits stored with %s (every run sharing it obeys them; a flag can only lower them):\n", where)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tSTORED\tUSED\t")
	row := func(name string, limit int64, stored, used string) {
		if limit <= 0 {
			stored = "none"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, stored, used)
	}
	row("rpm", s.Stored.RPM, fmt.Sprint(s.Stored.RPM), fmt.Sprintf("%.0f requests in the last minute", s.RequestsWithinMin))
	row("tpm", s.Stored.TPM, fmt.Sprint(s.Stored.TPM), fmt.Sprintf("%.0f tokens in the last minute", s.TokensWithinMin))
	row("tpd", s.Stored.TPD, fmt.Sprint(s.Stored.TPD), fmt.Sprintf("%d tokens today%s", dayTokens, share(dayTokens, s.Stored.TPD)))
	row("daily-cost", int64(s.Stored.DailyCost), "$"+s.Stored.DailyCost.String(), fmt.Sprintf("$%s today%s", dayCost, share(int64(dayCost), int64(s.Stored.DailyCost))))
	return tw.Flush()
}

// share is " (N %)" of used of limit, or "" when there is no limit.
func share(used, limit int64) string {
	if limit <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f %%)", float64(used)/float64(limit)*100)
}

// limitSources says the limits a run obeys and where each comes from: a
// flag (or its default), or stored with the budget.
func limitSources(g *budget.Gate) string {
	l, src := g.Limits(), limitSource(g.Own(), g.Seen().Stored)
	vals := map[string]string{
		"rpm": fmt.Sprint(l.RPM), "tpm": fmt.Sprint(l.TPM), "tpd": fmt.Sprint(l.TPD), "daily-cost": "$" + l.DailyCost.String(),
	}
	var parts []string
	for _, n := range budget.LimitNames {
		if src[n] == "off" {
			parts = append(parts, n+" off")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", n, vals[n], src[n]))
	}
	return "limits: " + strings.Join(parts, ", ")
}

// dayWarner warns once per process when the day's tokens or dollars pass
// a share of their limit, and once when they reach it. Safe for
// concurrent use.
type dayWarner struct {
	gate *budget.Gate
	pct  int64 // the share, in percent; 0 = only when reached
	log  *slog.Logger

	mu   sync.Mutex
	said [2]int // for tokens and dollars: 0 nothing yet, 1 the share, 2 the limit
}

// check warns about what the gate has last seen of the day.
func (w *dayWarner) check() {
	seen, lim := w.gate.Seen(), w.gate.Limits()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.say(0, seen.TokensWithinDay, lim.TPD, func(v int64) string { return fmt.Sprintf("%d tokens", v) }, "used")
	w.say(1, int64(seen.CostWithinDay), int64(lim.DailyCost), func(v int64) string { return dollars(budget.Cost(v)) }, "spent")
}

// say warns about kind k: used of limit, written by unit.
func (w *dayWarner) say(k int, used, limit int64, unit func(int64) string, verb string) {
	if limit <= 0 {
		return
	}
	switch {
	case used >= limit && w.said[k] < 2:
		w.said[k] = 2
		w.log.Warn(fmt.Sprintf("100 %% of today's %s %s (%s): the day's limit is reached", unit(limit), verb, unit(used)))
	case w.pct > 0 && w.pct < 100 && used >= limit/100*w.pct+limit%100*w.pct/100 && w.said[k] < 1:
		w.said[k] = 1
		// The share spent, which may be far past --warn-at by the time
		// the first settlement is seen.
		pct := used / limit * 100
		if used < math.MaxInt64/100 {
			pct = used * 100 / limit
		}
		w.log.Warn(fmt.Sprintf("%d %% of today's %s %s (%s)", pct, unit(limit), verb, unit(used)))
	}
}

// dollars writes c for people: "$5.00", "$4.02", and sub-cent amounts
// exactly ("$0.0005").
func dollars(c budget.Cost) string {
	if c >= budget.Dollar/100 {
		return fmt.Sprintf("$%.2f", c.Float64())
	}
	return "$" + c.String()
}

// limitSource says where each effective limit of own.Ceil(stored) comes from:
// "stored" where the stored one is lower, "flag" where own's is, "off"
// where both are off.
func limitSource(own, stored budget.Limits) map[string]string {
	src := func(a, b int64) string {
		switch {
		case a <= 0 && b <= 0:
			return "off"
		case b > 0 && (a <= 0 || b < a):
			return "stored"
		}
		return "flag"
	}
	return map[string]string{
		"rpm":        src(own.RPM, stored.RPM),
		"tpm":        src(own.TPM, stored.TPM),
		"tpd":        src(own.TPD, stored.TPD),
		"daily-cost": src(int64(own.DailyCost), int64(stored.DailyCost)),
	}
}
