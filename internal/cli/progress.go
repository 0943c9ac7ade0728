package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/pipeline"
)

// progressBar is a progress line drawn on a terminal, kept apart from what
// else is written to that terminal: see Above.
type progressBar struct {
	mu      sync.Mutex // held while the line is drawn and while Above writes
	w       io.Writer  // the terminal
	midLine bool       // a stream Above wraps has written part of a line: do not draw over it
	done    chan struct{}
	wg      sync.WaitGroup
}

// showProgress draws s on w, a terminal, every interval until Stop, which
// clears the line. It draws no colour.
func showProgress(w io.Writer, s *pipeline.Stats, interval time.Duration) *progressBar {
	p := &progressBar{w: w, done: make(chan struct{})}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(20),
		progressbar.OptionShowCount(),
		// gptbatch's own ETA follows the recent pace, which limits set;
		// the library's follows the average since the start.
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionClearOnFinish(),
		// No spinner ticking on its own: the library's goroutine would
		// draw without the lock, over a result being written.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)
	start := time.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		max := int64(-1)
		type sample struct {
			at   time.Time
			done int64
		}
		var recent []sample // the last 10 s of progress, for the ETA
		draw := func() {
			// Every write to the terminal, the library's included, is
			// made holding the lock, and none while a line is cut.
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.midLine {
				return
			}
			now, done := time.Now(), s.Written()
			recent = append(recent, sample{now, done})
			for len(recent) > 2 && now.Sub(recent[0].at) > 10*time.Second {
				recent = recent[1:]
			}
			eta := time.Duration(-1)
			if total := s.Total.Load(); total > 0 {
				if total != max {
					max = total
					bar.ChangeMax64(total)
				}
				if d, dt := done-recent[0].done, now.Sub(recent[0].at); d > 0 {
					eta = time.Duration(float64(total-done) / float64(d) * float64(dt))
				}
			}
			bar.Describe(progressText(s, now, time.Since(start), eta))
			_ = bar.Set64(done)
		}
		for {
			draw()
			select {
			case <-t.C:
			case <-p.done:
				// The last state stays up until the summary replaces it.
				draw()
				p.mu.Lock()
				if !p.midLine {
					_ = bar.RenderBlank()
					_ = bar.Clear()
				}
				p.mu.Unlock()
				return
			}
		}
	}()
	return p
}

// Stop stops drawing and clears the line.
func (p *progressBar) Stop() {
	close(p.done)
	p.wg.Wait()
}

// clearLine is carriage return and ANSI "erase to the end of the line".
const clearLine = "\r\x1b[K"

// Above wraps out, a stream written to the progress line's terminal (stdout
// and stderr sharing one, or messages on stderr), so that its lines never
// end up on the progress line: each write first clears that line, and the
// line is drawn again only once out has ended its last line.
func (p *progressBar) Above(out io.Writer) io.Writer { return &above{p: p, out: out} }

type above struct {
	p   *progressBar
	out io.Writer
}

func (a *above) Write(b []byte) (int, error) {
	a.p.mu.Lock()
	defer a.p.mu.Unlock()
	if !a.p.midLine {
		_, _ = io.WriteString(a.p.w, clearLine)
	}
	n, err := a.out.Write(b)
	if n > 0 {
		a.p.midLine = b[n-1] != '\n'
	}
	return n, err
}

// progressText is the text beside the bar: outcomes, tokens, dollars, pace
// and what the run waits for.
func progressText(s *pipeline.Stats, now time.Time, elapsed, eta time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ok, %d failed | %s tok | $%.4f", s.Succeeded.Load(), s.Failed.Load(),
		shortCount(s.PromptTokens.Load()+s.CompletionTokens.Load()), budget.Cost(s.Cost.Load()).Float64())
	if secs := elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&b, " | %.1f req/s", float64(s.Requests.Load())/secs)
	}
	if eta >= 0 {
		fmt.Fprintf(&b, " | ETA %s", eta.Round(time.Second))
	}
	if n := s.BatchLines.Load(); n > 0 {
		fmt.Fprintf(&b, " | batches: %d/%d answered", s.BatchAnswered.Load(), n)
	}
	if w := s.Waiting(); w != nil {
		d := max(0, w.Until.Sub(now))
		if d < 10*time.Second {
			d = d.Round(100 * time.Millisecond)
		} else {
			d = d.Round(time.Second)
		}
		fmt.Fprintf(&b, " | %s: %s", w.Reason, d)
	}
	return b.String()
}

// shortCount writes n as 950, 12.3k or 4.5M.
func shortCount(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// summary is the end-of-run line for stderr.
func summary(s *pipeline.Stats, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d succeeded, %d failed", pipeline.Count(s.Written(), "line", "lines"), s.Succeeded.Load(), s.Failed.Load())
	if n := s.Skipped.Load(); n > 0 {
		fmt.Fprintf(&b, ", %d already done", n)
	}
	if n := s.CacheHits.Load(); n > 0 {
		fmt.Fprintf(&b, ", %d answered from the cache ($%s saved)", n, budget.Cost(s.CacheSaved.Load()))
	}
	fmt.Fprintf(&b, "; tokens %d in (%d cached), %d out; $%s", s.PromptTokens.Load(), s.CachedTokens.Load(), s.CompletionTokens.Load(), budget.Cost(s.Cost.Load()))
	if n := s.Unpriced.Load(); n > 0 {
		fmt.Fprintf(&b, " (+%s of unknown price)", pipeline.Count(n, "call", "calls"))
	}
	fmt.Fprintf(&b, "; %s; %d retries, %d rate-limited", elapsed.Round(10*time.Millisecond), s.Retries.Load(), s.RateLimited.Load())
	if n := s.Checked.Load(); n > 0 {
		fmt.Fprintf(&b, "; %s checked against the schema, %d asked again (%s, $%s)", pipeline.Count(n, "answer", "answers"), s.Reasked.Load(), pipeline.Count(s.Reasks.Load(), "re-ask", "re-asks"), budget.Cost(s.ReaskCost.Load()))
	}
	return b.String()
}

// addPrices says how to price a model the table lacks.
const addPrices = "give prices in LiteLLM's format with --prices FILE, or store them with gptbatch prices load FILE"

// drySummary is a dry run's report for stderr: the batch's size and cost,
// and which limits it would run into, given what the budget has already
// spent today.
func drySummary(s *pipeline.Stats, cfg pipeline.Config) string {
	return "dry run: " + batchEstimate(s, cfg, s.Written(), s.Failed.Load())
}

// batchEstimate says what a counted batch of lines will use, skipped of
// them not to be sent (invalid, or over a limit on their own) and those
// the response cache answers (Stats.CacheFound) aside: tokens,
// the cost from prompts alone to every output cap used, and which limits
// it would run into, given what the budget's day counters held when the
// gate last read them (cfg.Gate.Seen: its own day, by day_ends_at).
func batchEstimate(s *pipeline.Stats, cfg pipeline.Config, lines, skipped int64) string {
	var b strings.Builder
	prompt, out := s.EstPromptTokens.Load(), s.EstOutputTokens.Load()
	cached := s.CacheFound.Load()
	b.WriteString(pipeline.Count(lines, "line", "lines"))
	var aside []string
	if cached > 0 {
		what := fmt.Sprintf("%d answered from the cache", cached)
		if saved := budget.Cost(s.CacheSaved.Load()); saved > 0 {
			what += fmt.Sprintf(", $%s saved", saved)
		}
		aside = append(aside, what)
	}
	if skipped > 0 {
		aside = append(aside, fmt.Sprintf("%d would not be sent", skipped))
	}
	if len(aside) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(aside, "; "))
	}
	fmt.Fprintf(&b, "; %d prompt tokens", prompt)
	if n := s.EstSchemaTokens.Load(); n > 0 {
		fmt.Fprintf(&b, " (%d of them the schema's)", n)
	}
	fmt.Fprintf(&b, ", up to %d output tokens; ", out)
	costs := fmt.Sprintf("$%s (prompts only) to $%s (every output cap used)", budget.Cost(s.EstCostMin.Load()), budget.Cost(s.EstCostMax.Load()))
	switch unpriced := s.EstUnpriced.Load(); {
	case unpriced == 0:
		b.WriteString("estimated cost " + costs)
	case unpriced == s.Estimated.Load():
		fmt.Fprintf(&b, "estimated cost unknown: no price is known for %s (%s)", strings.Join(s.UnpricedModels(), ", "), addPrices)
	default:
		fmt.Fprintf(&b, "estimated cost unknown for %s: no price is known for %s (%s); %s for the rest", pipeline.Count(unpriced, "line", "lines"), strings.Join(s.UnpricedModels(), ", "), addPrices, costs)
	}
	var hits []string
	l := cfg.Gate.Limits()
	src := limitSource(cfg.Gate.Own(), cfg.Gate.Seen().Stored)
	// name is a limit as the user set it: a flag, or stored with the budget.
	name := func(key string, v any) string {
		if src[key] == "stored" {
			return fmt.Sprintf("%s %v (stored)", key, v)
		}
		return fmt.Sprintf("--%s %v", key, v)
	}
	sent := lines - skipped - cached
	if cfg.BatchTokens > 0 && prompt > cfg.BatchTokens {
		hits = append(hits, fmt.Sprintf("--batch-tokens %d: refused, nothing would be sent", cfg.BatchTokens))
	}
	if maxCost := budget.Cost(s.EstCostMax.Load()); cfg.MaxCost > 0 && maxCost > cfg.MaxCost {
		hits = append(hits, fmt.Sprintf("--max-cost %s: refused, nothing would be sent", cfg.MaxCost))
	}
	if skipped > 0 {
		hits = append(hits, fmt.Sprintf("%s invalid, exceed a limit on their own or have no known price under a dollar limit", pipeline.Count(skipped, "line is", "lines are")))
	}
	seen := cfg.Gate.Seen()
	dayTokens, dayCost := seen.TokensWithinDay, seen.CostWithinDay
	if l.TPD > 0 && dayTokens+prompt+out > l.TPD {
		hits = append(hits, fmt.Sprintf("%s: %d already used today, the batch may need %d", name("tpd", l.TPD), dayTokens, prompt+out))
	}
	if c := budget.Cost(s.EstCostMax.Load()); l.DailyCost > 0 && dayCost+c > l.DailyCost {
		hits = append(hits, fmt.Sprintf("%s: $%s already spent today, the batch may cost $%s", name("daily-cost", l.DailyCost), dayCost, c))
	}
	var pace time.Duration
	if cfg.Via == pipeline.ViaBatch {
		l.RPM, l.TPM = 0, 0 // the Batch API has its own pool
	}
	if l.RPM > 0 && sent > l.RPM {
		pace = max(pace, time.Duration(float64(sent-l.RPM)/float64(l.RPM)*float64(time.Minute)))
	}
	if l.TPM > 0 && prompt+out > l.TPM {
		pace = max(pace, time.Duration(float64(prompt+out-l.TPM)/float64(l.TPM)*float64(time.Minute)))
	}
	if pace > 0 {
		hits = append(hits, fmt.Sprintf("%s / %s: at least %s of waiting", name("rpm", l.RPM), name("tpm", l.TPM), pace.Round(time.Second)))
	}
	if len(hits) == 0 {
		b.WriteString("; within every limit")
	} else {
		b.WriteString("; limits: " + strings.Join(hits, "; "))
	}
	if plan := s.BatchPlan(); plan != "" {
		b.WriteString("; " + plan)
	}
	return b.String()
}
